// Boundary checks shared by both backends. Cheap (a few comparisons per call) so they stay on in the
// hot path: a bad shape must fail with a precise error, not read someone else's memory.

import type { Matrix, RopeStyle } from '../model/types.ts';
import type { KvPoolLayout } from './types.ts';

export const Q8_0_BLOCK = 32;
export const Q8_0_BLOCK_BYTES = 34;

function isCount(n: unknown): n is number {
  return typeof n === 'number' && Number.isInteger(n) && n >= 0;
}

export function checkCount(what: string, n: number): void {
  if (!isCount(n)) throw new RangeError(`${what} must be a non-negative integer, got ${n}`);
}

export function checkPositive(what: string, n: number): void {
  if (!isCount(n) || n === 0) throw new RangeError(`${what} must be a positive integer, got ${n}`);
}

export function checkMatrix(m: Matrix): void {
  if (m === null || typeof m !== 'object') throw new TypeError('packMatrix: expected a Matrix');
  checkPositive('matrix rows', m.rows);
  checkPositive('matrix cols', m.cols);
  if (m.type === 'f32') {
    if (!(m.data instanceof Float32Array)) throw new TypeError('packMatrix: f32 matrix data must be a Float32Array');
    if (m.data.length !== m.rows * m.cols) {
      throw new RangeError(`packMatrix: f32 matrix ${m.rows}x${m.cols} needs ${m.rows * m.cols} values, got ${m.data.length}`);
    }
  } else if (m.type === 'q8_0') {
    if (!(m.data instanceof Uint8Array)) throw new TypeError('packMatrix: q8_0 matrix data must be a Uint8Array');
    if (m.cols % Q8_0_BLOCK !== 0) throw new RangeError(`packMatrix: q8_0 matrix cols (${m.cols}) must be a multiple of ${Q8_0_BLOCK}`);
    const bytes = (m.rows * m.cols * Q8_0_BLOCK_BYTES) / Q8_0_BLOCK;
    if (m.data.length !== bytes) {
      throw new RangeError(`packMatrix: q8_0 matrix ${m.rows}x${m.cols} needs ${bytes} bytes, got ${m.data.length}`);
    }
  } else {
    throw new TypeError(`packMatrix: unsupported matrix type ${String((m as { type: unknown }).type)}`);
  }
}

export function checkPool(pool: KvPoolLayout, layer: number): void {
  checkCount('pool.base', pool.base);
  if (pool.base % 4 !== 0) throw new RangeError(`pool.base must be 4-byte aligned, got ${pool.base}`);
  checkPositive('pool.numBlocks', pool.numBlocks);
  checkPositive('pool.blockSize', pool.blockSize);
  checkPositive('pool.nLayers', pool.nLayers);
  checkPositive('pool.nKvHeads', pool.nKvHeads);
  checkPositive('pool.headDim', pool.headDim);
  if (pool.dtype !== 'f32' && pool.dtype !== 'f16') throw new RangeError(`pool.dtype must be 'f32' or 'f16', got ${String(pool.dtype)}`);
  if (!isCount(layer) || layer >= pool.nLayers) throw new RangeError(`layer ${layer} out of range [0, ${pool.nLayers})`);
}

export function checkHeads(nHeads: number, nKvHeads: number): void {
  checkPositive('nHeads', nHeads);
  if (nHeads % nKvHeads !== 0) throw new RangeError(`nHeads (${nHeads}) must be a multiple of nKvHeads (${nKvHeads})`);
}

export function checkHeadDim(headDim: number): void {
  if (!isCount(headDim) || headDim === 0 || headDim % 2 !== 0) throw new RangeError(`headDim must be a positive even integer, got ${headDim}`);
}

/** Positions index f32 angles and score buffers: integers in [0, 2^24). */
export function checkPosition(pos: number): void {
  if (!isCount(pos) || pos >= 1 << 24) throw new RangeError(`position must be an integer in [0, 2^24), got ${pos}`);
}

export function checkRopeStyle(style: RopeStyle): void {
  if (style !== 'interleaved' && style !== 'neox') throw new RangeError(`rope style must be 'interleaved' or 'neox', got ${String(style)}`);
}
