// IEEE 754 binary16 conversions, exact: round to nearest, ties to even; subnormals, ±0, ±inf kept;
// NaN stays a quiet NaN. The wasm kernels implement the same bit manipulation (assembly/kernels.ts).

const f32buf = new Float32Array(1);
const u32buf = new Uint32Array(f32buf.buffer);

/** The binary16 bit pattern nearest to `x` (taken as an f32 first, as the kernels store f32 values). */
export function f32ToF16(x: number): number {
  f32buf[0] = x;
  const bits = u32buf[0]!;
  const sign = (bits >>> 16) & 0x8000;
  const ax = bits & 0x7fffffff;
  if (ax >= 0x7f800000) return sign | 0x7c00 | (ax > 0x7f800000 ? 0x200 | ((ax >>> 13) & 0x3ff) : 0);
  if (ax >= 0x477ff000) return sign | 0x7c00; // ≥ 65520 rounds past the largest half, 65504
  if (ax >= 0x38800000) return sign | ((ax - 0x38000000 + 0xfff + ((ax >>> 13) & 1)) >>> 13);
  const e = ax >>> 23;
  if (e < 102) return sign; // below 2^-25, or exactly it (a tie, to even = 0)
  // subnormal half, in units of 2^-24
  const m = (ax & 0x7fffff) | 0x800000;
  const s = 126 - e;
  let q = m >>> s;
  const rem = m & ((1 << s) - 1);
  const halfway = 1 << (s - 1);
  if (rem > halfway || (rem === halfway && (q & 1) !== 0)) q++;
  return sign | q;
}

/** The value of a binary16 bit pattern. */
export function f16ToF32(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const e = (h >>> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return sign * m * 2 ** -24;
  if (e === 31) return m === 0 ? sign * Infinity : NaN;
  return sign * (1024 + m) * 2 ** (e - 25);
}

let table: Float32Array | undefined;
/** All 65536 halves decoded, for table-driven reads in the reference backend. */
export function f16Table(): Float32Array {
  if (!table) {
    table = new Float32Array(65536);
    for (let h = 0; h < 65536; h++) table[h] = f16ToF32(h);
  }
  return table;
}
