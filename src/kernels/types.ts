// The compute interface the forward pass is written against. Two implementations:
// `reference` (plain TypeScript loops, the readable ground truth) and `wasm` (AssemblyScript,
// WebAssembly SIMD). Both work on one shared WebAssembly.Memory; every pointer is a byte offset
// into it, so the KV connector and KV store can read and write KV blocks from another thread.
//
// Batch invariance contract: every kernel computes each output row from that row's inputs only,
// with a reduction order that does not depend on how many rows are in the call, on which rows
// they are, or on how a prompt was chunked. A sequence's logits are therefore bit-identical
// whether it runs alone or in any batch.

import type { Matrix, RopeStyle } from '../model/types.ts';

export type KvDtype = 'f32' | 'f16';

/** A weight matrix copied into kernel memory in the kernel's preferred layout. */
export interface PackedMatrix {
  readonly type: 'f32' | 'q8_0';
  readonly rows: number; // outputs
  readonly cols: number; // inputs
  readonly ptr: number;
}

/** The paged KV pool. Block-major layout, so one block of one sequence is one contiguous byte range
 * (what the KV connector sends and the KV store saves):
 *   block b, layer l, kv ∈ {0: K, 1: V}, token t (0 ≤ t < blockSize), element e (0 ≤ e < nKvHeads*headDim)
 *   at  base + ((((b*nLayers + l)*2 + kv)*blockSize + t)*kvDim + e) * eltBytes
 * where kvDim = nKvHeads*headDim and eltBytes = 4 (f32) or 2 (f16, IEEE half, little-endian). */
export interface KvPoolLayout {
  readonly base: number;
  readonly numBlocks: number;
  readonly blockSize: number;
  readonly nLayers: number;
  readonly nKvHeads: number;
  readonly headDim: number;
  readonly dtype: KvDtype;
}

export function kvBlockBytes(l: Omit<KvPoolLayout, 'base' | 'numBlocks'>): number {
  return l.nLayers * 2 * l.blockSize * l.nKvHeads * l.headDim * (l.dtype === 'f16' ? 2 : 4);
}

export interface Kernels {
  readonly name: 'reference' | 'wasm';
  readonly memory: WebAssembly.Memory;
  /** Bump-allocate `bytes` (64-byte aligned, zero-filled), growing memory as needed. */
  alloc(bytes: number): number;
  /** Current allocation mark, and release everything allocated after a mark (for scratch space). */
  mark(): number;
  release(mark: number): void;
  f32(ptr: number, length: number): Float32Array;
  i32(ptr: number, length: number): Int32Array;
  u8(ptr: number, length: number): Uint8Array;

  packMatrix(m: Matrix): PackedMatrix;
  /** out[r][n] = Σ_k x[r][k]·W[n][k] for r < rows; x is [rows][w.cols] f32, out is [rows][w.rows] f32.
   * The sum for each (r, n) runs over k in one fixed order (bit-identical for any `rows`). */
  matmul(out: number, x: number, w: PackedMatrix, rows: number): void;
  /** out[r] = row ids[r] of the table, widened to f32; ids is an i32 array of `rows` entries. */
  embed(out: number, table: PackedMatrix, ids: number, rows: number): void;
  /** out[r] = x[r] / sqrt(mean(x[r]²) + eps) * weight; out may equal x. */
  rmsnorm(out: number, x: number, weight: number, rows: number, dim: number, eps: number): void;
  /** In place on x = [rows][nHeads*headDim], rotating each row by its position (i32 array `positions`). */
  rope(x: number, positions: number, rows: number, nHeads: number, headDim: number, theta: number, style: RopeStyle): void;
  /** Store rows of K and V ([rows][kvDim] f32) for `layer` into the pool at slots (i32 array:
   * slot = block*blockSize + offset), converting to the pool's dtype (f16: round to nearest even). */
  kvWrite(pool: KvPoolLayout, layer: number, k: number, v: number, slots: number, rows: number): void;
  /** Causal attention against the paged pool for `layer`. Row r is a query [nHeads*headDim] at
   * position positions[r]; it attends to that sequence's tokens 0..positions[r] inclusive, found
   * through its block table (blockTables[r] = byte pointer to an i32 array of block ids).
   * Grouped-query: query head h reads KV head floor(h / (nHeads/nKvHeads)). Scale 1/sqrt(headDim).
   * `scratch` has room for at least (maxPosition+1) f32. out is [rows][nHeads*headDim]. */
  attention(
    out: number,
    q: number,
    pool: KvPoolLayout,
    layer: number,
    nHeads: number,
    rows: number,
    positions: number,
    blockTables: number,
    scratch: number,
  ): void;
  /** gate[i] = silu(gate[i]) * up[i] for i < n (in place on gate). */
  swiglu(gate: number, up: number, n: number): void;
  /** acc[i] += x[i] for i < n. */
  addInPlace(acc: number, x: number, n: number): void;
}
