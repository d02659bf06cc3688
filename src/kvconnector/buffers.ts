// Reusable, pre-faulted frame buffers for the sender. A DATA frame is gathered straight from the
// pool into one of these and handed to the socket; the buffer comes back when the kernel has it.

import { prefaulted } from './wire.ts';

const GRANULE = 64 * 1024;

export class FrameBufferPool {
  private readonly free: Buffer[] = [];

  constructor(private readonly maxFree = 16) {}

  acquire(bytes: number): Buffer {
    let best = -1;
    for (let i = 0; i < this.free.length; i++) {
      const len = this.free[i]!.length;
      if (len >= bytes && (best < 0 || len < this.free[best]!.length)) best = i;
    }
    if (best >= 0) return this.free.splice(best, 1)[0]!;
    return prefaulted(Math.ceil(bytes / GRANULE) * GRANULE);
  }

  release(buf: Buffer): void {
    if (this.free.length < this.maxFree) {
      this.free.push(buf);
      return;
    }
    // Full: keep the larger buffers, they serve any request.
    let smallest = 0;
    for (let i = 1; i < this.free.length; i++) if (this.free[i]!.length < this.free[smallest]!.length) smallest = i;
    if (this.free[smallest]!.length < buf.length) this.free[smallest] = buf;
  }

  clear(): void {
    this.free.length = 0;
  }
}
