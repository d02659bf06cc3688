// Shared fixtures for the kernel tests: seeded random data, GGUF Q8_0 quantization, and paged-KV
// scenarios with scattered block tables.

import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { createKernels, f32ToF16, kvBlockBytes, type Kernels, type KvDtype, type KvPoolLayout } from '../../src/kernels/index.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));
let built = false;
/** Both backends; builds build/kernels.wasm first if it is missing or stale (idempotent, fast when fresh). */
export async function backends(): Promise<Kernels[]> {
  if (!built) {
    execFileSync(process.execPath, ['scripts/build-wasm.js'], { cwd: root, stdio: 'inherit' });
    built = true;
  }
  return [await createKernels('reference', { initialBytes: 1 << 24 }), await createKernels('wasm', { initialBytes: 1 << 24 })];
}

/** mulberry32: small, seedable, good enough for test data. Returns values in [-1, 1). */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (((t ^ (t >>> 14)) >>> 0) / 4294967296) * 2 - 1;
  };
}

export function randomF32(n: number, rand: () => number, scale = 1): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = rand() * scale;
  return a;
}

/** GGUF Q8_0: per 32 values, f16 scale d = max|x|/127, then 32 int8 q = round(x/d). Row-major. */
export function quantizeQ8(data: Float32Array, rows: number, cols: number): Uint8Array {
  const nb = cols / 32;
  const out = new Uint8Array(rows * nb * 34);
  const q = new Int8Array(out.buffer);
  for (let r = 0; r < rows; r++) {
    for (let b = 0; b < nb; b++) {
      const src = r * cols + b * 32;
      let amax = 0;
      for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(data[src + j]!));
      const d = amax / 127;
      const h = f32ToF16(d);
      const at = (r * nb + b) * 34;
      out[at] = h & 0xff;
      out[at + 1] = h >> 8;
      for (let j = 0; j < 32; j++) q[at + 2 + j] = d === 0 ? 0 : Math.max(-127, Math.min(127, Math.round(data[src + j]! / d)));
    }
  }
  return out;
}

export function putF32(k: Kernels, a: ArrayLike<number>): number {
  const p = k.alloc(a.length * 4);
  k.f32(p, a.length).set(a);
  return p;
}

export function putI32(k: Kernels, a: ArrayLike<number>): number {
  const p = k.alloc(a.length * 4);
  k.i32(p, a.length).set(a);
  return p;
}

export function bits(a: Float32Array): Uint32Array {
  return new Uint32Array(Float32Array.from(a).buffer);
}

/** Largest |a-b| / max(1, |b|), NaN-aware (NaN in only one of them counts as infinite). */
export function maxRelErr(a: Float32Array, b: Float32Array): number {
  let worst = 0;
  for (let i = 0; i < a.length; i++) {
    const x = a[i]!, y = b[i]!;
    if (Number.isNaN(x) || Number.isNaN(y)) {
      if (!(Number.isNaN(x) && Number.isNaN(y))) return Infinity;
      continue;
    }
    if (x === y) continue;
    worst = Math.max(worst, Math.abs(x - y) / Math.max(1, Math.abs(y)));
  }
  return worst;
}

export interface KvShape {
  nLayers: number;
  nKvHeads: number;
  headDim: number;
  blockSize: number;
  dtype: KvDtype;
}

/** Sequences of given lengths stored in a pool whose blocks are handed out shuffled, so every block
 * table is scattered and out of order. Same data for every backend given the same seed. */
export class KvScenario {
  readonly pool: KvPoolLayout;
  readonly tables: number[][];
  readonly k: Float32Array[]; // per sequence [len][kvDim]
  readonly v: Float32Array[];

  constructor(
    readonly kern: Kernels,
    readonly shape: KvShape,
    readonly lengths: number[],
    readonly layer: number,
    seed: number,
  ) {
    const rand = rng(seed);
    const kvDim = shape.nKvHeads * shape.headDim;
    const need = lengths.map((n) => Math.ceil(n / shape.blockSize));
    const numBlocks = need.reduce((a, b) => a + b, 0) + 3;
    const ids = Array.from({ length: numBlocks }, (_, i) => i);
    for (let i = ids.length - 1; i > 0; i--) {
      const j = Math.floor(((rand() + 1) / 2) * (i + 1));
      [ids[i], ids[j]] = [ids[j]!, ids[i]!];
    }
    const base = kern.alloc(numBlocks * kvBlockBytes(shape));
    this.pool = { base, numBlocks, ...shape };
    let next = 0;
    this.tables = need.map((n) => ids.slice(next, (next += n)));
    this.k = lengths.map((n) => randomF32(n * kvDim, rand));
    this.v = lengths.map((n) => randomF32(n * kvDim, rand));
    // write each sequence's tokens in one kvWrite call per sequence
    for (let s = 0; s < lengths.length; s++) {
      const slots = Array.from({ length: lengths[s]! }, (_, t) => this.tables[s]![Math.floor(t / shape.blockSize)]! * shape.blockSize + (t % shape.blockSize));
      const m = kern.mark();
      kern.kvWrite(this.pool, layer, putF32(kern, this.k[s]!), putF32(kern, this.v[s]!), putI32(kern, slots), lengths[s]!);
      kern.release(m);
    }
  }

  /** Attention for query rows (sequence index, position) with queries q ([rows][nHeads*headDim]). */
  attend(rows: { seq: number; pos: number }[], q: Float32Array, nHeads: number): Float32Array {
    const k = this.kern;
    const m = k.mark();
    const width = nHeads * this.shape.headDim;
    const tablePtrs = this.tables.map((t) => putI32(k, t));
    const out = k.alloc(rows.length * width * 4);
    const maxPos = Math.max(...rows.map((r) => r.pos));
    k.attention(
      out,
      putF32(k, q),
      this.pool,
      this.layer,
      nHeads,
      rows.length,
      putI32(k, rows.map((r) => r.pos)),
      putI32(k, rows.map((r) => tablePtrs[r.seq]!)),
      k.alloc((maxPos + 1) * 4),
    );
    const result = k.f32(out, rows.length * width).slice();
    k.release(m);
    return result;
  }
}
