// One shared WebAssembly.Memory per Kernels instance with a bump allocator on the JS side. Both
// backends use it, so pointers mean the same thing everywhere and other threads (KV connector, KV
// store) can read and write KV blocks in place.
import type { Kernels } from './types.ts';

const PAGE = 65536;
const ALIGN = 64;
/** Bytes below this are left to the wasm module's static data (none today; asc places data from 1 KiB). */
export const RESERVED_BYTES = 65536;
const MAX_PAGES = 65536; // 4 GiB: wasm32 addresses

export interface MemoryOptions {
  /** initial memory size in bytes (rounded up to 64 KiB pages); default 16 MiB */
  initialBytes?: number;
  /** maximum memory size in bytes; default 4 GiB */
  maximumBytes?: number;
}

function pagesFor(bytes: number): number {
  return Math.ceil(bytes / PAGE);
}

export class KernelMemory {
  readonly memory: WebAssembly.Memory;
  private top = RESERVED_BYTES;

  constructor(opts: MemoryOptions = {}) {
    const maximumBytes = opts.maximumBytes ?? MAX_PAGES * PAGE;
    const initialBytes = opts.initialBytes ?? Math.min(16 * 1024 * 1024, maximumBytes);
    if (!Number.isFinite(maximumBytes) || maximumBytes <= 0) throw new RangeError(`maximumBytes must be a positive number, got ${maximumBytes}`);
    if (!Number.isFinite(initialBytes) || initialBytes < 0) throw new RangeError(`initialBytes must be a non-negative number, got ${initialBytes}`);
    const maximum = Math.min(MAX_PAGES, pagesFor(maximumBytes));
    if (maximum < pagesFor(RESERVED_BYTES) + 1) throw new RangeError(`maximumBytes must be at least ${RESERVED_BYTES + PAGE} (64 KiB are reserved), got ${maximumBytes}`);
    const initial = Math.max(pagesFor(RESERVED_BYTES) + 1, pagesFor(initialBytes));
    if (initial > maximum) throw new RangeError(`initialBytes (${initialBytes}) exceeds maximumBytes (${maximumBytes})`);
    this.memory = new WebAssembly.Memory({ initial, maximum, shared: true });
  }

  /** Bump-allocate `bytes`, 64-byte aligned. Zero-filled unless `zero` is false (internal scratch). */
  alloc(bytes: number, zero = true): number {
    if (!Number.isInteger(bytes) || bytes < 0) throw new RangeError(`alloc: bytes must be a non-negative integer, got ${bytes}`);
    const ptr = this.top;
    const end = ptr + Math.ceil(bytes / ALIGN) * ALIGN;
    const have = this.memory.buffer.byteLength;
    if (end > have) {
      try {
        this.memory.grow(pagesFor(end - have));
      } catch {
        throw new RangeError(`alloc: cannot grow kernel memory to ${end} bytes (have ${have})`);
      }
    }
    this.top = end;
    // Pages fresh from grow() are zero; memory handed back by release() is not.
    if (zero && bytes > 0 && ptr < have) new Uint8Array(this.memory.buffer, ptr, Math.min(end, have) - ptr).fill(0);
    return ptr;
  }

  mark(): number {
    return this.top;
  }

  release(mark: number): void {
    if (!Number.isInteger(mark) || mark < RESERVED_BYTES || mark > this.top || mark % ALIGN !== 0) {
      throw new RangeError(`release: ${mark} is not a mark of this allocator (top ${this.top})`);
    }
    this.top = mark;
  }

  f32(ptr: number, length: number): Float32Array {
    return new Float32Array(this.memory.buffer, ptr, length);
  }
  i32(ptr: number, length: number): Int32Array {
    return new Int32Array(this.memory.buffer, ptr, length);
  }
  u8(ptr: number, length: number): Uint8Array {
    return new Uint8Array(this.memory.buffer, ptr, length);
  }
}

/** The memory half of the Kernels interface, the same for every backend. */
export function memoryAccess(mem: KernelMemory): Pick<Kernels, 'memory' | 'alloc' | 'mark' | 'release' | 'f32' | 'i32' | 'u8'> {
  return {
    memory: mem.memory,
    alloc: (bytes) => mem.alloc(bytes),
    mark: () => mem.mark(),
    release: (m) => mem.release(m),
    f32: (ptr, n) => mem.f32(ptr, n),
    i32: (ptr, n) => mem.i32(ptr, n),
    u8: (ptr, n) => mem.u8(ptr, n),
  };
}
