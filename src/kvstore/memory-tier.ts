// CPU-memory tier: payloads in a Map whose insertion order is the LRU order (a hit re-inserts).
// Capacity is in bytes, counting each chunk's payload plus its header.
import { HEADER_BYTES } from './chunk.ts';

export class MemoryTier {
  private readonly chunks = new Map<string, Uint8Array>();
  usedBytes = 0;

  constructor(
    readonly capacityBytes: number,
    private readonly onEvict: (keys: string[], bytes: number) => void,
  ) {}

  get size(): number {
    return this.chunks.size;
  }

  has(key: string): boolean {
    return this.chunks.has(key);
  }

  /** The payload, marked most recently used. */
  get(key: string): Uint8Array | undefined {
    const p = this.chunks.get(key);
    if (p) {
      this.chunks.delete(key);
      this.chunks.set(key, p);
    }
    return p;
  }

  /** Insert (taking ownership of `payload`); false if it can never fit. */
  put(key: string, payload: Uint8Array): boolean {
    const bytes = payload.byteLength + HEADER_BYTES;
    if (bytes > this.capacityBytes) return false;
    if (this.chunks.has(key)) {
      this.get(key);
      return true;
    }
    const evicted: string[] = [];
    let freed = 0;
    for (const [k, p] of this.chunks) {
      if (this.usedBytes + bytes <= this.capacityBytes) break;
      this.chunks.delete(k);
      this.usedBytes -= p.byteLength + HEADER_BYTES;
      freed += p.byteLength + HEADER_BYTES;
      evicted.push(k);
    }
    this.chunks.set(key, payload);
    this.usedBytes += bytes;
    if (evicted.length) this.onEvict(evicted, freed);
    return true;
  }

  delete(key: string): number {
    const p = this.chunks.get(key);
    if (!p) return 0;
    this.chunks.delete(key);
    this.usedBytes -= p.byteLength + HEADER_BYTES;
    return p.byteLength + HEADER_BYTES;
  }
}
