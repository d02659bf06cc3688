// The frame checksum of the KV transfer wire (protocol version 2): Fletcher-4 as ZFS computes it
// (A += w, B += A, C += B, D += C over little-endian u32 words, 64-bit sums), run as four
// interleaved streams (stream k takes words k, k+4, k+8, …) so that WebAssembly SIMD advances all
// four in two i64x2 registers. The input is zero-padded to 16 bytes; the 16 sums and the byte
// length are folded to 32 bits by an invertible multiply-xorshift chain and splitmix64's finalizer,
// so any change to any sum changes the result with probability 1 − 2⁻³².
//
// Why not CRC-32: zlib's crc32 runs at ≈4 GB/s on this machine and every byte is checksummed twice
// (sender and receiver), which cost a third of the gap to raw TCP. This runs at ≈13–16 GB/s.
// Fletcher-4 is ZFS's default block checksum: every single-word error changes A; swapped or shifted
// words change B–D (their weights differ by position); being linear, it guards against accidental
// corruption (the threat here: TCP's own checksum is weak), not against an adversary — that is
// what transfer tokens and the HMAC are for.
//
// The module is hand-assembled below (a few dozen instructions, no build step). It reads the bytes
// in place from the WebAssembly.Memory it is instantiated with: the engine's shared kernel memory
// (the KV pool itself, so the sender checksums blocks without copying them) or a private memory
// (the receiver's frame buffers, and a scratch for anything else, which is copied in 64 KiB at a time).

const SIMD = 0xfd;
const V128 = 0x7b;
const I32 = 0x7f;
const I64 = 0x7e;
const op = {
  end: 0x0b, block: 0x02, loop: 0x03, br: 0x0c, brIf: 0x0d,
  localGet: 0x20, localSet: 0x21, globalGet: 0x23, globalSet: 0x24,
  i32Const: 0x41, i64Const: 0x42, i32GeU: 0x4f, i32Add: 0x6a, i32And: 0x71,
  i64Mul: 0x7e, i64Xor: 0x85, i64ShrU: 0x88, i32WrapI64: 0xa7, i64ExtendI32U: 0xad,
} as const;
const simd = {
  load: 0x00, const: 0x0c, i32x4ReplaceLane: 0x1c, i64x2ExtractLane: 0x1d,
  i64x2ExtendLowI32x4U: 0xc9, i64x2ExtendHighI32x4U: 0xca, i64x2Add: 0xce,
} as const;

function uleb(n: number): number[] {
  const out: number[] = [];
  do {
    let b = n & 0x7f;
    n >>>= 7;
    if (n) b |= 0x80;
    out.push(b);
  } while (n);
  return out;
}

function sleb(n: bigint): number[] {
  const out: number[] = [];
  n = BigInt.asIntN(64, n);
  for (;;) {
    const b = Number(n & 0x7fn);
    n >>= 7n;
    if ((n === 0n && !(b & 0x40)) || (n === -1n && b & 0x40)) return [...out, b];
    out.push(b | 0x80);
  }
}

const name = (s: string) => [...uleb(s.length), ...Buffer.from(s, 'latin1')];
const section = (id: number, body: number[]) => [id, ...uleb(body.length), ...body];
const vector = (items: number[][]) => [...uleb(items.length), ...items.flat()];
const simdOp = (o: number, ...imm: number[]) => [SIMD, ...uleb(o), ...imm];
const zero = () => simdOp(simd.const, ...new Array<number>(16).fill(0));

/** Globals 0..7 hold the sums: A(streams 0,1), A(2,3), B(0,1), B(2,3), C…, D…. */
function accumulate(src: number, acc: number): number[] {
  // acc = locals acc..acc+7 in global order; src = the v128 local holding 4 words
  const code = [
    op.localGet, acc, op.localGet, src, ...simdOp(simd.i64x2ExtendLowI32x4U), ...simdOp(simd.i64x2Add), op.localSet, acc,
    op.localGet, acc + 1, op.localGet, src, ...simdOp(simd.i64x2ExtendHighI32x4U), ...simdOp(simd.i64x2Add), op.localSet, acc + 1,
  ];
  for (let k = 1; k < 4; k++) {
    for (let h = 0; h < 2; h++) {
      const dst = acc + 2 * k + h;
      code.push(op.localGet, dst, op.localGet, dst - 2, ...simdOp(simd.i64x2Add), op.localSet, dst);
    }
  }
  return code;
}

const loadSums = (acc: number) => Array.from({ length: 8 }, (_, g) => [op.globalGet, g, op.localSet, acc + g]).flat();
const storeSums = (acc: number) => Array.from({ length: 8 }, (_, g) => [op.localGet, acc + g, op.globalSet, g]).flat();

/** update(ptr, len): the sums over len bytes at ptr; len a multiple of 32 (the loop does two blocks per turn). */
function updateFn(): number[] {
  const [ptr, len, end, v, w, acc] = [0, 1, 2, 3, 4, 5];
  const body = [
    ...loadSums(acc),
    op.localGet, ptr, op.localGet, len, op.i32Add, op.localSet, end,
    op.block, 0x40, op.loop, 0x40,
    op.localGet, ptr, op.localGet, end, op.i32GeU, op.brIf, 1,
    op.localGet, ptr, ...simdOp(simd.load, 0, 0), op.localSet, v,
    op.localGet, ptr, ...simdOp(simd.load, 0, 16), op.localSet, w,
    ...accumulate(v, acc),
    ...accumulate(w, acc),
    op.localGet, ptr, op.i32Const, ...sleb(32n), op.i32Add, op.localSet, ptr,
    op.br, 0, op.end, op.end,
    ...storeSums(acc),
    op.end,
  ];
  return [...vector([[1, I32], [10, V128]]), ...body];
}

/** block(w0, w1, w2, w3): one 16-byte block given as words (partial blocks, bytes outside the memory). */
function blockFn(): number[] {
  const [v, acc] = [4, 5];
  const body = [
    ...loadSums(acc),
    ...zero(),
    op.localGet, 0, ...simdOp(simd.i32x4ReplaceLane, 0),
    op.localGet, 1, ...simdOp(simd.i32x4ReplaceLane, 1),
    op.localGet, 2, ...simdOp(simd.i32x4ReplaceLane, 2),
    op.localGet, 3, ...simdOp(simd.i32x4ReplaceLane, 3),
    op.localSet, v,
    ...accumulate(v, acc),
    ...storeSums(acc),
    op.end,
  ];
  return [...vector([[9, V128]]), ...body];
}

/** reset(): all sums to zero. */
function resetFn(): number[] {
  const body: number[] = [];
  for (let g = 0; g < 8; g++) body.push(...zero(), op.globalSet, g);
  return [0, ...body, op.end];
}

const MIX = 0x9e3779b97f4a7c15n;
const SPLITMIX_1 = 0xbf58476d1ce4e5b9n;
const SPLITMIX_2 = 0x94d049bb133111ebn;

/** final(len) → i32: fold the 16 sums and the byte length. */
function finalFn(): number[] {
  const h = 1;
  const xorShift = (s: number) => [op.localGet, h, op.localGet, h, op.i64Const, ...sleb(BigInt(s)), op.i64ShrU, op.i64Xor, op.localSet, h];
  const mul = (k: bigint) => [op.localGet, h, op.i64Const, ...sleb(k), op.i64Mul, op.localSet, h];
  const body = [op.localGet, 0, op.i64ExtendI32U, op.localSet, h];
  for (let g = 0; g < 8; g++) {
    for (let lane = 0; lane < 2; lane++) {
      body.push(op.localGet, h, op.globalGet, g, ...simdOp(simd.i64x2ExtractLane, lane), op.i64Xor, op.localSet, h, ...mul(MIX), ...xorShift(32));
    }
  }
  body.push(...xorShift(30), ...mul(SPLITMIX_1), ...xorShift(27), ...mul(SPLITMIX_2), ...xorShift(31));
  body.push(op.localGet, h, op.i32WrapI64, op.end);
  return [...vector([[1, I64]]), ...body];
}

function assemble(sharedMemory: boolean): Uint8Array {
  const fn = (body: number[]) => [...uleb(body.length), ...body];
  const bytes = [
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
    ...section(1, vector([
      [0x60, ...vector([[I32], [I32]]), 0], // (i32, i32) → ()
      [0x60, 0, 0], // () → ()
      [0x60, ...vector([[I32], [I32], [I32], [I32]]), 0], // (i32 ×4) → ()
      [0x60, ...vector([[I32]]), ...vector([[I32]])], // (i32) → i32
    ])),
    // env.memory of any size; shared or not must match the memory it is given (shared needs a maximum)
    ...section(2, vector([[...name('env'), ...name('memory'), 0x02, ...(sharedMemory ? [0x03, 0, ...uleb(65536)] : [0x00, 0])]])),
    ...section(3, vector([[0], [1], [2], [3]])),
    ...section(6, vector(Array.from({ length: 8 }, () => [V128, 1, ...zero(), op.end]))),
    ...section(7, vector([[...name('update'), 0, 0], [...name('reset'), 0, 1], [...name('block'), 0, 2], [...name('final'), 0, 3]])),
    ...section(10, vector([fn(updateFn()), fn(resetFn()), fn(blockFn()), fn(finalFn())])),
  ];
  return new Uint8Array(bytes);
}

interface Exports {
  update(ptr: number, len: number): void;
  reset(): void;
  block(w0: number, w1: number, w2: number, w3: number): void;
  final(len: number): number;
}

const modules: { shared?: WebAssembly.Module; private?: WebAssembly.Module } = {};
function moduleFor(shared: boolean): WebAssembly.Module {
  const key = shared ? 'shared' : 'private';
  return (modules[key] ??= new WebAssembly.Module(assemble(shared)));
}

const SCRATCH_BYTES = 64 * 1024;

/**
 * A running checksum over bytes fed in order (begin, update…, end). Bound to one WebAssembly.Memory:
 * bytes inside it are read in place, anything else is copied through the scratch region (if the
 * memory has one). A partial 16-byte block is carried in JS between updates.
 */
export class FrameChecksum {
  private readonly x: Exports;
  private readonly carry = new Uint8Array(16);
  private readonly carryWords = new DataView(this.carry.buffer);
  private carried = 0;
  private total = 0;

  /** @param scratchAt offset of a 64 KiB region of `memory` this checksum may overwrite (-1: none) */
  constructor(
    readonly memory: WebAssembly.Memory,
    private readonly scratchAt = -1,
  ) {
    const shared = typeof SharedArrayBuffer !== 'undefined' && memory.buffer instanceof SharedArrayBuffer;
    this.x = new WebAssembly.Instance(moduleFor(shared), { env: { memory } }).exports as unknown as Exports;
  }

  begin(): this {
    this.x.reset();
    this.carried = 0;
    this.total = 0;
    return this;
  }

  /** Feed `bytes`: in place when they lie in this checksum's memory. */
  update(bytes: Uint8Array): this {
    if (bytes.buffer === this.memory.buffer) return this.updateAt(bytes.byteOffset, bytes.byteLength);
    let off = 0;
    // Small pieces go through the carry; large ones through the scratch (one memcpy, in cache).
    if (this.scratchAt < 0 || bytes.byteLength < 256) {
      while (off < bytes.byteLength) off += this.feedCarry(bytes, off);
      return this;
    }
    const scratch = new Uint8Array(this.memory.buffer, this.scratchAt, SCRATCH_BYTES);
    while (off < bytes.byteLength) {
      const n = Math.min(SCRATCH_BYTES, bytes.byteLength - off);
      scratch.set(bytes.subarray(off, off + n));
      this.updateAt(this.scratchAt, n);
      off += n;
    }
    return this;
  }

  /** Feed `len` bytes at byte offset `ptr` of this checksum's memory. */
  updateAt(ptr: number, len: number): this {
    const mem = new Uint8Array(this.memory.buffer, ptr, len);
    let off = 0;
    if (this.carried) {
      while (off < len && this.carried) off += this.feedCarry(mem, off);
      if (off === len) return this;
    }
    const bulk = (len - off) & ~31;
    if (bulk) {
      this.x.update(ptr + off, bulk);
      this.total += bulk;
      off += bulk;
    }
    while (off < len) off += this.feedCarry(mem, off);
    return this;
  }

  /** The 32-bit checksum of everything fed since begin(). */
  end(): number {
    if (this.carried) {
      this.carry.fill(0, this.carried);
      this.flushCarry();
    }
    return this.x.final(this.total) >>> 0;
  }

  private feedCarry(src: Uint8Array, off: number): number {
    const n = Math.min(16 - this.carried, src.byteLength - off);
    // Byte by byte: these are at most 15 bytes, and a subarray + set costs more than the loop.
    for (let i = 0; i < n; i++) this.carry[this.carried + i] = src[off + i]!;
    this.carried += n;
    this.total += n;
    if (this.carried === 16) this.flushCarry();
    return n;
  }

  private flushCarry(): void {
    const w = this.carryWords;
    this.x.block(w.getInt32(0, true), w.getInt32(4, true), w.getInt32(8, true), w.getInt32(12, true));
    this.carried = 0;
  }
}

let scratchChecksum: FrameChecksum | null = null;
const poolChecksums = new WeakMap<WebAssembly.Memory, FrameChecksum>();

/** A checksum with its own memory and scratch, for bytes that live anywhere. Synchronous use only (it is shared). */
export function anyChecksum(): FrameChecksum {
  return (scratchChecksum ??= new FrameChecksum(new WebAssembly.Memory({ initial: SCRATCH_BYTES / 65536, maximum: SCRATCH_BYTES / 65536 }), 0));
}

/** A checksum reading `memory` in place (the engine's KV pool memory); cached per memory. */
export function checksumIn(memory: WebAssembly.Memory): FrameChecksum {
  let c = poolChecksums.get(memory);
  if (!c) poolChecksums.set(memory, (c = new FrameChecksum(memory)));
  return c;
}

/** The wire checksum of one buffer. */
export function frameChecksum(bytes: Uint8Array): number {
  return anyChecksum().begin().update(bytes).end();
}
