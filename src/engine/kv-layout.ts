// Moving KV between the paged pool and a block-size-independent "token-major" buffer.
//
// The pool is block-major (see KvPoolLayout in src/kernels/types.ts). Engines that differ in block
// size or KV dtype can still exchange KV if both sides speak in tokens: a token range
// [start, start+count) of one sequence is serialized as
//     for layer l: for kv in (K, V): for token t: kvDim elements
// in a chosen dtype. The KV connector and the KV store both use this format on the wire and on disk.
//
// Exactness: f32→f32 and f16→f16 copies are bit-exact; f16→f32 is exact (every half is a float);
// f32→f16 rounds to nearest even, exactly as the f16 pool's own kvWrite does, so a decode engine with
// an f16 pool that receives f32 KV holds the same bits it would have computed itself.

import { f16ToF32, f32ToF16 } from '../kernels/f16.ts';
import type { KvDtype, KvPoolLayout } from '../kernels/types.ts';

export function eltBytes(dtype: KvDtype): number {
  return dtype === 'f16' ? 2 : 4;
}

export function kvDimOf(l: Pick<KvPoolLayout, 'nKvHeads' | 'headDim'>): number {
  return l.nKvHeads * l.headDim;
}

/** Bytes of `count` tokens in token-major format. */
export function tokenMajorBytes(l: Pick<KvPoolLayout, 'nLayers' | 'nKvHeads' | 'headDim'>, count: number, dtype: KvDtype): number {
  return l.nLayers * 2 * count * kvDimOf(l) * eltBytes(dtype);
}

/** Byte offset in the pool of the row (block, layer, kv, tokenInBlock). */
export function poolRowOffset(l: KvPoolLayout, block: number, layer: number, kv: number, t: number): number {
  return l.base + (((block * l.nLayers + layer) * 2 + kv) * l.blockSize + t) * kvDimOf(l) * eltBytes(l.dtype);
}

export { f16ToF32, f32ToF16 };

/** Copy `n` elements from src (dtype sd) to dst (dtype dd), converting. Offsets are element indices into typed views. */
function convertRow(
  src: Float32Array | Uint16Array,
  srcOff: number,
  dst: Float32Array | Uint16Array,
  dstOff: number,
  n: number,
): void {
  const srcIsF16 = src instanceof Uint16Array;
  const dstIsF16 = dst instanceof Uint16Array;
  if (srcIsF16 === dstIsF16) {
    dst.set(src.subarray(srcOff, srcOff + n), dstOff);
  } else if (dstIsF16) {
    for (let i = 0; i < n; i++) dst[dstOff + i] = f32ToF16(src[srcOff + i]!);
  } else {
    for (let i = 0; i < n; i++) dst[dstOff + i] = f16ToF32(src[srcOff + i]!);
  }
}

function view(buf: ArrayBufferLike, byteOffset: number, dtype: KvDtype, length: number): Float32Array | Uint16Array {
  return dtype === 'f16' ? new Uint16Array(buf, byteOffset, length) : new Float32Array(buf, byteOffset, length);
}

/** A sequence's tokens live in blocks blockTable[i] of `pool`: token p is at (blockTable[p / blockSize], p % blockSize). */
export interface PoolRef {
  buffer: ArrayBufferLike;
  layout: KvPoolLayout;
  /** the WebAssembly.Memory whose buffer `buffer` is, if any: lets the KV connector checksum blocks in place */
  memory?: WebAssembly.Memory;
}

/** Visit every contiguous run of token rows of [start, start+count): one per (layer, K/V, block),
 * except that runs contiguous on both sides are merged (a range that is exactly one block is one
 * run: its layers follow each other in the pool as in token-major order).
 * `plane` is the token-major offset (in elements) of the run; `poolOffset` its byte offset in the pool. */
function forEachRun(
  l: KvPoolLayout,
  blockTable: ArrayLike<number>,
  start: number,
  count: number,
  visit: (plane: number, poolOffset: number, elements: number) => void,
): void {
  const kvDim = kvDimOf(l);
  const elt = eltBytes(l.dtype);
  let runPlane = 0;
  let runOffset = -1;
  let runElements = 0;
  for (let layer = 0; layer < l.nLayers; layer++) {
    for (let kv = 0; kv < 2; kv++) {
      const planeBase = (layer * 2 + kv) * count * kvDim;
      let p = start;
      while (p < start + count) {
        const t = p % l.blockSize;
        const run = Math.min(l.blockSize - t, start + count - p);
        const block = blockTable[Math.floor(p / l.blockSize)];
        if (block === undefined) throw new RangeError(`token ${p} has no block in the block table`);
        const plane = planeBase + (p - start) * kvDim;
        const offset = poolRowOffset(l, block, layer, kv, t);
        if (plane === runPlane + runElements && offset === runOffset + runElements * elt) runElements += run * kvDim;
        else {
          if (runElements) visit(runPlane, runOffset, runElements);
          runPlane = plane;
          runOffset = offset;
          runElements = run * kvDim;
        }
        p += run;
      }
    }
  }
  if (runElements) visit(runPlane, runOffset, runElements);
}

/**
 * Where the token-major bytes of tokens [start, start+count) live in the pool, in wire order: one
 * `[byteOffset, bytes]` pair per contiguous run. A reader can land KV of the pool's own dtype
 * straight there, with no intermediate buffer.
 */
export function poolRuns(pool: Pick<PoolRef, 'layout'>, blockTable: ArrayLike<number>, start: number, count: number): [number, number][] {
  const elt = eltBytes(pool.layout.dtype);
  const runs: [number, number][] = [];
  forEachRun(pool.layout, blockTable, start, count, (_plane, offset, n) => runs.push([offset, n * elt]));
  return runs;
}

/** Serialize tokens [start, start+count) of a sequence into token-major format in `dtype`. */
export function gatherTokens(
  pool: PoolRef,
  blockTable: ArrayLike<number>,
  start: number,
  count: number,
  dtype: KvDtype,
  out?: Uint8Array,
): Uint8Array {
  const l = pool.layout;
  const bytes = tokenMajorBytes(l, count, dtype);
  const dst = out ?? new Uint8Array(bytes);
  if (dst.byteLength < bytes) throw new RangeError(`gatherTokens: output has ${dst.byteLength} bytes, needs ${bytes}`);
  if (count === 0) return dst.subarray(0, 0);
  const dstView = view(dst.buffer, dst.byteOffset, dtype, bytes / eltBytes(dtype));
  forEachRun(l, blockTable, start, count, (plane, off, n) => convertRow(view(pool.buffer, off, l.dtype, n), 0, dstView, plane, n));
  return dst.subarray(0, bytes);
}

/** Write token-major data (dtype `srcDtype`) for tokens [start, start+count) into the sequence's blocks, converting to the pool's dtype. */
export function scatterTokens(
  pool: PoolRef,
  blockTable: ArrayLike<number>,
  start: number,
  count: number,
  src: Uint8Array,
  srcDtype: KvDtype,
): void {
  const l = pool.layout;
  const bytes = tokenMajorBytes(l, count, srcDtype);
  if (src.byteLength < bytes) throw new RangeError(`scatterTokens: input has ${src.byteLength} bytes, needs ${bytes}`);
  if (count === 0) return;
  // Typed views need aligned offsets; copy unaligned input once.
  const aligned = src.byteOffset % 4 === 0 ? src : new Uint8Array(src.subarray(0, bytes)); // Buffer#slice would be a view
  const srcView = view(aligned.buffer, aligned.byteOffset, srcDtype, bytes / eltBytes(srcDtype));
  forEachRun(l, blockTable, start, count, (plane, off, n) => convertRow(srcView, plane, view(pool.buffer, off, l.dtype, n), 0, n));
}

/** Copy tokens [from, from+count) out of a token-major buffer that holds `total` tokens (planes are per layer and K/V). */
export function sliceTokenMajor(
  l: Pick<KvPoolLayout, 'nLayers' | 'nKvHeads' | 'headDim'>,
  src: Uint8Array,
  total: number,
  from: number,
  count: number,
  dtype: KvDtype,
): Uint8Array {
  if (from === 0 && count === total) return src;
  const row = kvDimOf(l) * eltBytes(dtype);
  const out = new Uint8Array(tokenMajorBytes(l, count, dtype));
  for (let plane = 0; plane < l.nLayers * 2; plane++) {
    const s = plane * total * row + from * row;
    out.set(src.subarray(s, s + count * row), plane * count * row);
  }
  return out;
}
