// Number formats found in model files: IEEE half, bfloat16, ggml's Q8_0 blocks, and f32 metadata.

/** Q8_0: 32 values per block, stored as an f16 scale followed by 32 int8 quants. */
export const Q8_0_BLOCK = 32;
export const Q8_0_BYTES = 34;

// One implementation of IEEE half conversions for the whole project (exhaustively tested in test/kernels).
import { f16Table, f16ToF32, f32ToF16 } from '../kernels/f16.ts';
export { f16ToF32, f32ToF16 };
const F16_TO_F32 = f16Table();

/** Widen `count` little-endian halves starting at bytes[offset]. */
export function widenF16(bytes: Uint8Array, offset: number, count: number): Float32Array {
  const out = new Float32Array(count);
  for (let i = 0, p = offset; i < count; i++, p += 2) out[i] = F16_TO_F32[bytes[p]! | (bytes[p + 1]! << 8)]!;
  return out;
}

/** Widen `count` little-endian bfloat16 values: the top half of an f32. */
export function widenBf16(bytes: Uint8Array, offset: number, count: number): Float32Array {
  const out = new Float32Array(count);
  const bits = new Uint32Array(out.buffer);
  for (let i = 0, p = offset; i < count; i++, p += 2) bits[i] = ((bytes[p]! | (bytes[p + 1]! << 8)) << 16) >>> 0;
  return out;
}

/** Little-endian f32 values at bytes[offset..]: a zero-copy view when aligned, else a copy. */
export function f32At(bytes: Uint8Array, offset: number, count: number): Float32Array {
  const abs = bytes.byteOffset + offset;
  if (abs % 4 === 0) return new Float32Array(bytes.buffer, abs, count);
  return new Float32Array(bytes.buffer.slice(abs, abs + count * 4));
}

/** The raw bytes of an f32 array (for hashing and writing). */
export function f32Bytes(a: Float32Array): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

function roundHalfAway(x: number): number {
  return x < 0 ? -Math.round(-x) : Math.round(x);
}

/** Quantize a row-major [rows][cols] f32 matrix to Q8_0 exactly as ggml's quantize_row_q8_0_ref
 * (and gguf-py) do: d = max|x|/127 in f32, stored as f16; q = roundf(x · (1/d)), with the
 * f32 inverse of the unrounded d. cols must be a multiple of 32. */
export function quantizeQ8_0(src: Float32Array, rows: number, cols: number): Uint8Array {
  const blocks = (rows * cols) / Q8_0_BLOCK;
  const out = new Uint8Array(blocks * Q8_0_BYTES);
  const q = new Int8Array(out.buffer);
  const fr = Math.fround;
  for (let b = 0; b < blocks; b++) {
    const x0 = b * Q8_0_BLOCK;
    let amax = 0;
    for (let j = 0; j < Q8_0_BLOCK; j++) amax = Math.max(amax, Math.abs(src[x0 + j]!));
    const d = fr(amax / 127);
    const id = d ? fr(1 / d) : 0;
    const h = f32ToF16(d);
    const o = b * Q8_0_BYTES;
    out[o] = h & 0xff;
    out[o + 1] = h >>> 8;
    for (let j = 0; j < Q8_0_BLOCK; j++) q[o + 2 + j] = roundHalfAway(fr(src[x0 + j]! * id));
  }
  return out;
}

/** Dequantize Q8_0 data of a [rows][cols] matrix (or a slice of whole rows) to f32. */
export function dequantizeQ8_0(data: Uint8Array, rows: number, cols: number): Float32Array {
  const n = rows * cols;
  const out = new Float32Array(n);
  const q = new Int8Array(data.buffer, data.byteOffset, data.byteLength);
  for (let b = 0; b < n / Q8_0_BLOCK; b++) {
    const o = b * Q8_0_BYTES;
    const d = F16_TO_F32[data[o]! | (data[o + 1]! << 8)]!;
    for (let j = 0; j < Q8_0_BLOCK; j++) out[b * Q8_0_BLOCK + j] = d * q[o + 2 + j]!;
  }
  return out;
}

/** The shortest decimal that rounds to the same f32, so an epsilon stored as f32 1e-5 reads back
 * as 1e-5 rather than 9.999999747378752e-6 and configs from different formats compare equal. */
export function shortestF32(x: number): number {
  if (!Number.isFinite(x)) return x;
  const f = Math.fround(x);
  for (let p = 1; p <= 9; p++) {
    const y = Number(f.toPrecision(p));
    if (Math.fround(y) === f) return y;
  }
  return f;
}
