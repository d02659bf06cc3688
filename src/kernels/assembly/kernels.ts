// WebAssembly SIMD kernels (AssemblyScript). Compiled by scripts/build-wasm.js to build/kernels.wasm
// with an imported shared memory; src/kernels/wasm.ts is the thin JS wrapper that owns the memory and
// the allocator. Every pointer is a byte offset into that memory.
//
// Batch invariance: each output element is produced by one fixed sequence of f32 operations that
// depends only on the shapes (K, headDim, …), never on how many rows are in the call or where a row
// sits. SIMD lanes always hold *different output elements*, never partial sums of the same one, except
// in attention where the q·k dot product uses a fixed 4-lane grouping over headDim (still independent
// of the batch). No FMA: mul then add, so the rounding is the same in every tile shape.
//
// No static data and no allocation: the stub runtime is never used, and the first 64 KiB that the JS
// side reserves stay free for any future static data. (Mathf.exp would add a table; exp4 below does not.)

// ---------------------------------------------------------------------------------------------------
// matmul, f32 weights.
// Packed layout (see wasm.ts packF32): panels of 8 output rows, [ceil(N/8)][K][8] f32, zero-padded.
// out[r][n] = Σ_k x[r][k]·W[n][k], summed for k = 0, 1, …, K-1 in a single f32 accumulator.

// Stores 8 output values, clipping at the matrix edge (last panel when N is not a multiple of 8).
@inline
function store8(p: usize, a: v128, b: v128, count: i32): void {
  if (count >= 8) {
    v128.store(p, a);
    v128.store(p, b, 16);
    return;
  }
  if (count > 0) store<f32>(p, f32x4.extract_lane(a, 0));
  if (count > 1) store<f32>(p, f32x4.extract_lane(a, 1), 4);
  if (count > 2) store<f32>(p, f32x4.extract_lane(a, 2), 8);
  if (count > 3) store<f32>(p, f32x4.extract_lane(a, 3), 12);
  if (count > 4) store<f32>(p, f32x4.extract_lane(b, 0), 16);
  if (count > 5) store<f32>(p, f32x4.extract_lane(b, 1), 20);
  if (count > 6) store<f32>(p, f32x4.extract_lane(b, 2), 24);
}

// 4 rows × 8 columns: 8 accumulators, one broadcast of x per row and k.
function f32Tile4x8(out: usize, x: usize, panel: usize, N: i32, K: i32, n0: i32, rows: i32): void {
  // rows < 4: the missing rows repeat the last one (same inputs, same bits, stored to the same place),
  // so 2 or 3 leftover rows still stream the weights once
  const rs = <usize>K << 2;
  const r1 = <usize>min(1, rows - 1) * rs, r2 = <usize>min(2, rows - 1) * rs, r3 = <usize>min(3, rows - 1) * rs;
  let a00 = f32x4.splat(0), a01 = f32x4.splat(0), a10 = f32x4.splat(0), a11 = f32x4.splat(0);
  let a20 = f32x4.splat(0), a21 = f32x4.splat(0), a30 = f32x4.splat(0), a31 = f32x4.splat(0);
  let xp = x;
  let wp = panel;
  for (let k = 0; k < K; k++) {
    const w0 = v128.load(wp);
    const w1 = v128.load(wp, 16);
    const x0 = v128.load32_splat(xp);
    const x1 = v128.load32_splat(xp + r1);
    const x2 = v128.load32_splat(xp + r2);
    const x3 = v128.load32_splat(xp + r3);
    a00 = f32x4.add(a00, f32x4.mul(x0, w0));
    a01 = f32x4.add(a01, f32x4.mul(x0, w1));
    a10 = f32x4.add(a10, f32x4.mul(x1, w0));
    a11 = f32x4.add(a11, f32x4.mul(x1, w1));
    a20 = f32x4.add(a20, f32x4.mul(x2, w0));
    a21 = f32x4.add(a21, f32x4.mul(x2, w1));
    a30 = f32x4.add(a30, f32x4.mul(x3, w0));
    a31 = f32x4.add(a31, f32x4.mul(x3, w1));
    xp += 4;
    wp += 32;
  }
  const count = N - n0;
  const os = <usize>N << 2;
  const op = out + (<usize>n0 << 2);
  store8(op, a00, a01, count);
  store8(op + <usize>min(1, rows - 1) * os, a10, a11, count);
  store8(op + <usize>min(2, rows - 1) * os, a20, a21, count);
  store8(op + <usize>min(3, rows - 1) * os, a30, a31, count);
}

// 1 row × 8 columns, for the rows left over after the 4-row tiles (all of decode). Two accumulator
// chains make it latency bound (~21 GFLOP/s here), but it reads the weights as one sequential stream;
// tiles over several panels at once (1×16, 1×32) measured slower on weights beyond L2 (the
// 288×32000 classifier: 7–8 vs 14 GFLOP/s), where decode spends most of its time.
function f32Tile1x8(out: usize, x: usize, panel: usize, N: i32, K: i32, n0: i32): void {
  let a0 = f32x4.splat(0), a1 = f32x4.splat(0);
  let xp = x;
  let wp = panel;
  for (let k = 0; k < K; k++) {
    const xs = v128.load32_splat(xp);
    a0 = f32x4.add(a0, f32x4.mul(xs, v128.load(wp)));
    a1 = f32x4.add(a1, f32x4.mul(xs, v128.load(wp, 16)));
    xp += 4;
    wp += 32;
  }
  store8(out + (<usize>n0 << 2), a0, a1, N - n0);
}

// How many panels to keep hot while rows stream over them. With many rows, a panel group that fits in
// L2 is reused by every row block (panel-outer order); with few rows the weights stream once anyway.
const PANEL_GROUP_BYTES: i32 = 192 * 1024;

function panelGroup(M: i32, P: i32, panelBytes: i32): i32 {
  if (M < 16) return P;
  const g = PANEL_GROUP_BYTES / max(panelBytes, 1);
  return g < 4 ? 4 : g & ~3;
}

export function matmul_f32(out: usize, x: usize, w: usize, M: i32, N: i32, K: i32): void {
  const P = (N + 7) >> 3;
  const panelBytes = K << 5;
  const xs = <usize>K << 2;
  const os = <usize>N << 2;
  const group = panelGroup(M, P, panelBytes);
  for (let p0 = 0; p0 < P; p0 += group) {
    const p1 = min(P, p0 + group);
    let r = 0;
    // 4-row tiles; 2 or 3 leftover rows also take the 4-row tile (with repeated rows)
    for (; r + 1 < M; r += 4) {
      const xr = x + <usize>r * xs;
      const or = out + <usize>r * os;
      const rows = min(4, M - r);
      for (let p = p0; p < p1; p++) f32Tile4x8(or, xr, w + <usize>p * panelBytes, N, K, p << 3, rows);
    }
    for (; r < M; r++) {
      const xr = x + <usize>r * xs;
      const or = out + <usize>r * os;
      for (let p = p0; p < p1; p++) f32Tile1x8(or, xr, w + <usize>p * panelBytes, N, K, p << 3);
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// matmul, q8_0 weights, kept as int8.
// Packed layout (see wasm.ts packQ8): per panel of 8 output rows, per 32-column block: 8 f32 scales
// (32 bytes), then [32 k][8 rows] int8 (256 bytes) = 288 bytes. For each output, the block sum runs
// over the 32 k in order in f32 (q widened exactly to f32), then total += blockSum·scale, blocks in order.

const Q8_BLOCK_BYTES: usize = 288;

// Widened weights of one k for the 8 rows of a panel.
@inline
function q8Lo(p: usize): v128 {
  return f32x4.convert_i32x4_s(i32x4.extend_low_i16x8_s(v128.load8x8_s(p)));
}
@inline
function q8Hi(p: usize): v128 {
  return f32x4.convert_i32x4_s(i32x4.extend_high_i16x8_s(v128.load8x8_s(p)));
}

function q8Tile4x8(out: usize, x: usize, panel: usize, N: i32, K: i32, n0: i32, rows: i32): void {
  // rows < 4: the missing rows repeat the last one (same inputs, same bits, stored to the same place),
  // so 2 or 3 leftover rows still stream the weights once
  const rs = <usize>K << 2;
  const r1 = <usize>min(1, rows - 1) * rs, r2 = <usize>min(2, rows - 1) * rs, r3 = <usize>min(3, rows - 1) * rs;
  let a00 = f32x4.splat(0), a01 = f32x4.splat(0), a10 = f32x4.splat(0), a11 = f32x4.splat(0);
  let a20 = f32x4.splat(0), a21 = f32x4.splat(0), a30 = f32x4.splat(0), a31 = f32x4.splat(0);
  const nb = K >> 5;
  let bp = panel;
  let xp = x;
  for (let b = 0; b < nb; b++) {
    let s00 = f32x4.splat(0), s01 = f32x4.splat(0), s10 = f32x4.splat(0), s11 = f32x4.splat(0);
    let s20 = f32x4.splat(0), s21 = f32x4.splat(0), s30 = f32x4.splat(0), s31 = f32x4.splat(0);
    let qp = bp + 32;
    for (let j = 0; j < 32; j++) {
      const w0 = q8Lo(qp);
      const w1 = q8Hi(qp);
      const x0 = v128.load32_splat(xp);
      const x1 = v128.load32_splat(xp + r1);
      const x2 = v128.load32_splat(xp + r2);
      const x3 = v128.load32_splat(xp + r3);
      s00 = f32x4.add(s00, f32x4.mul(x0, w0));
      s01 = f32x4.add(s01, f32x4.mul(x0, w1));
      s10 = f32x4.add(s10, f32x4.mul(x1, w0));
      s11 = f32x4.add(s11, f32x4.mul(x1, w1));
      s20 = f32x4.add(s20, f32x4.mul(x2, w0));
      s21 = f32x4.add(s21, f32x4.mul(x2, w1));
      s30 = f32x4.add(s30, f32x4.mul(x3, w0));
      s31 = f32x4.add(s31, f32x4.mul(x3, w1));
      qp += 8;
      xp += 4;
    }
    const d0 = v128.load(bp);
    const d1 = v128.load(bp, 16);
    a00 = f32x4.add(a00, f32x4.mul(s00, d0));
    a01 = f32x4.add(a01, f32x4.mul(s01, d1));
    a10 = f32x4.add(a10, f32x4.mul(s10, d0));
    a11 = f32x4.add(a11, f32x4.mul(s11, d1));
    a20 = f32x4.add(a20, f32x4.mul(s20, d0));
    a21 = f32x4.add(a21, f32x4.mul(s21, d1));
    a30 = f32x4.add(a30, f32x4.mul(s30, d0));
    a31 = f32x4.add(a31, f32x4.mul(s31, d1));
    bp += Q8_BLOCK_BYTES;
  }
  const count = N - n0;
  const os = <usize>N << 2;
  const op = out + (<usize>n0 << 2);
  store8(op, a00, a01, count);
  store8(op + <usize>min(1, rows - 1) * os, a10, a11, count);
  store8(op + <usize>min(2, rows - 1) * os, a20, a21, count);
  store8(op + <usize>min(3, rows - 1) * os, a30, a31, count);
}

// 1 row × 16 columns (2 panels): 4 block-sum chains + 4 totals; the int8 widening dominates here.
function q8Tile1x16(out: usize, x: usize, panel: usize, N: i32, K: i32, n0: i32): void {
  const nb = K >> 5;
  const ps = <usize>nb * Q8_BLOCK_BYTES;
  let a0 = f32x4.splat(0), a1 = f32x4.splat(0), a2 = f32x4.splat(0), a3 = f32x4.splat(0);
  let bp = panel;
  let xp = x;
  for (let b = 0; b < nb; b++) {
    let s0 = f32x4.splat(0), s1 = f32x4.splat(0), s2 = f32x4.splat(0), s3 = f32x4.splat(0);
    let qp = bp + 32;
    for (let j = 0; j < 32; j++) {
      const xs = v128.load32_splat(xp);
      s0 = f32x4.add(s0, f32x4.mul(xs, q8Lo(qp)));
      s1 = f32x4.add(s1, f32x4.mul(xs, q8Hi(qp)));
      s2 = f32x4.add(s2, f32x4.mul(xs, q8Lo(qp + ps)));
      s3 = f32x4.add(s3, f32x4.mul(xs, q8Hi(qp + ps)));
      qp += 8;
      xp += 4;
    }
    a0 = f32x4.add(a0, f32x4.mul(s0, v128.load(bp)));
    a1 = f32x4.add(a1, f32x4.mul(s1, v128.load(bp, 16)));
    a2 = f32x4.add(a2, f32x4.mul(s2, v128.load(bp + ps)));
    a3 = f32x4.add(a3, f32x4.mul(s3, v128.load(bp + ps, 16)));
    bp += Q8_BLOCK_BYTES;
  }
  const op = out + (<usize>n0 << 2);
  store8(op, a0, a1, N - n0);
  store8(op + 32, a2, a3, N - n0 - 8);
}

function q8Tile1x8(out: usize, x: usize, panel: usize, N: i32, K: i32, n0: i32): void {
  const nb = K >> 5;
  let a0 = f32x4.splat(0), a1 = f32x4.splat(0);
  let bp = panel;
  let xp = x;
  for (let b = 0; b < nb; b++) {
    let s0 = f32x4.splat(0), s1 = f32x4.splat(0);
    let qp = bp + 32;
    for (let j = 0; j < 32; j++) {
      const xs = v128.load32_splat(xp);
      s0 = f32x4.add(s0, f32x4.mul(xs, q8Lo(qp)));
      s1 = f32x4.add(s1, f32x4.mul(xs, q8Hi(qp)));
      qp += 8;
      xp += 4;
    }
    a0 = f32x4.add(a0, f32x4.mul(s0, v128.load(bp)));
    a1 = f32x4.add(a1, f32x4.mul(s1, v128.load(bp, 16)));
    bp += Q8_BLOCK_BYTES;
  }
  store8(out + (<usize>n0 << 2), a0, a1, N - n0);
}

// The same arithmetic as q8Tile4x8 on a panel whose int8 weights were widened to f32 once
// (dequantizePanel): int8 → f32 is exact, so every product, block sum and total has the same bits,
// and the tile no longer widens each weight once per 4 rows.
function q8Tile4x8F(out: usize, x: usize, panel: usize, wf: usize, N: i32, K: i32, n0: i32, rows: i32): void {
  const rs = <usize>K << 2;
  const r1 = <usize>min(1, rows - 1) * rs, r2 = <usize>min(2, rows - 1) * rs, r3 = <usize>min(3, rows - 1) * rs;
  let a00 = f32x4.splat(0), a01 = f32x4.splat(0), a10 = f32x4.splat(0), a11 = f32x4.splat(0);
  let a20 = f32x4.splat(0), a21 = f32x4.splat(0), a30 = f32x4.splat(0), a31 = f32x4.splat(0);
  const nb = K >> 5;
  let bp = panel;
  let wp = wf;
  let xp = x;
  for (let b = 0; b < nb; b++) {
    let s00 = f32x4.splat(0), s01 = f32x4.splat(0), s10 = f32x4.splat(0), s11 = f32x4.splat(0);
    let s20 = f32x4.splat(0), s21 = f32x4.splat(0), s30 = f32x4.splat(0), s31 = f32x4.splat(0);
    for (let j = 0; j < 32; j++) {
      const w0 = v128.load(wp);
      const w1 = v128.load(wp, 16);
      const x0 = v128.load32_splat(xp);
      const x1 = v128.load32_splat(xp + r1);
      const x2 = v128.load32_splat(xp + r2);
      const x3 = v128.load32_splat(xp + r3);
      s00 = f32x4.add(s00, f32x4.mul(x0, w0));
      s01 = f32x4.add(s01, f32x4.mul(x0, w1));
      s10 = f32x4.add(s10, f32x4.mul(x1, w0));
      s11 = f32x4.add(s11, f32x4.mul(x1, w1));
      s20 = f32x4.add(s20, f32x4.mul(x2, w0));
      s21 = f32x4.add(s21, f32x4.mul(x2, w1));
      s30 = f32x4.add(s30, f32x4.mul(x3, w0));
      s31 = f32x4.add(s31, f32x4.mul(x3, w1));
      wp += 32;
      xp += 4;
    }
    const d0 = v128.load(bp);
    const d1 = v128.load(bp, 16);
    a00 = f32x4.add(a00, f32x4.mul(s00, d0));
    a01 = f32x4.add(a01, f32x4.mul(s01, d1));
    a10 = f32x4.add(a10, f32x4.mul(s10, d0));
    a11 = f32x4.add(a11, f32x4.mul(s11, d1));
    a20 = f32x4.add(a20, f32x4.mul(s20, d0));
    a21 = f32x4.add(a21, f32x4.mul(s21, d1));
    a30 = f32x4.add(a30, f32x4.mul(s30, d0));
    a31 = f32x4.add(a31, f32x4.mul(s31, d1));
    bp += Q8_BLOCK_BYTES;
  }
  const count = N - n0;
  const os = <usize>N << 2;
  const op = out + (<usize>n0 << 2);
  store8(op, a00, a01, count);
  store8(op + <usize>min(1, rows - 1) * os, a10, a11, count);
  store8(op + <usize>min(2, rows - 1) * os, a20, a21, count);
  store8(op + <usize>min(3, rows - 1) * os, a30, a31, count);
}

// The int8 weights of one packed panel as f32, [K][8].
function dequantizePanel(dst: usize, panel: usize, K: i32): void {
  const nb = K >> 5;
  let bp = panel;
  let wp = dst;
  for (let b = 0; b < nb; b++) {
    let qp = bp + 32;
    for (let j = 0; j < 32; j++) {
      v128.store(wp, q8Lo(qp));
      v128.store(wp, q8Hi(qp), 16);
      qp += 8;
      wp += 32;
    }
    bp += Q8_BLOCK_BYTES;
  }
}

// scratch: room for the f32 weights of the panels of one group (panelGroup(M, P, K·32)·K·32 bytes),
// used when M ≥ 16.
export function matmul_q8(out: usize, x: usize, w: usize, M: i32, N: i32, K: i32, scratch: usize): void {
  const P = (N + 7) >> 3;
  const panelBytes = (K >> 5) * <i32>Q8_BLOCK_BYTES;
  const xs = <usize>K << 2;
  const os = <usize>N << 2;
  if (M >= 16) {
    // widen a group of panels to f32 once, then stream all rows over it
    const fBytes = <usize>K << 5;
    const group = panelGroup(M, P, K << 5);
    for (let p0 = 0; p0 < P; p0 += group) {
      const p1 = min(P, p0 + group);
      for (let p = p0; p < p1; p++) dequantizePanel(scratch + <usize>(p - p0) * fBytes, w + <usize>p * panelBytes, K);
      let r = 0;
      for (; r + 1 < M; r += 4) {
        const xr = x + <usize>r * xs;
        const or = out + <usize>r * os;
        const rows = min(4, M - r);
        for (let p = p0; p < p1; p++) q8Tile4x8F(or, xr, w + <usize>p * panelBytes, scratch + <usize>(p - p0) * fBytes, N, K, p << 3, rows);
      }
      for (; r < M; r++) {
        const xr = x + <usize>r * xs;
        const or = out + <usize>r * os;
        for (let p = p0; p < p1; p++) q8Tile1x8(or, xr, w + <usize>p * panelBytes, N, K, p << 3);
      }
    }
    return;
  }
  const group = panelGroup(M, P, panelBytes);
  for (let p0 = 0; p0 < P; p0 += group) {
    const p1 = min(P, p0 + group);
    let r = 0;
    // 4-row tiles; 2 or 3 leftover rows also take the 4-row tile (with repeated rows)
    for (; r + 1 < M; r += 4) {
      const xr = x + <usize>r * xs;
      const or = out + <usize>r * os;
      const rows = min(4, M - r);
      for (let p = p0; p < p1; p++) q8Tile4x8(or, xr, w + <usize>p * panelBytes, N, K, p << 3, rows);
    }
    for (; r < M; r++) {
      const xr = x + <usize>r * xs;
      const or = out + <usize>r * os;
      let p = p0;
      for (; p + 2 <= p1; p += 2) q8Tile1x16(or, xr, w + <usize>p * panelBytes, N, K, p << 3);
      for (; p < p1; p++) q8Tile1x8(or, xr, w + <usize>p * panelBytes, N, K, p << 3);
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// embedding lookups straight from the packed layouts (a tied classifier shares its table).

export function embed_f32(out: usize, table: usize, ids: usize, M: i32, K: i32): void {
  const panelBytes = <usize>K << 5;
  for (let r = 0; r < M; r++) {
    const id = load<i32>(ids + (<usize>r << 2));
    let src = table + <usize>(id >> 3) * panelBytes + (<usize>(id & 7) << 2);
    let dst = out + <usize>r * (<usize>K << 2);
    for (let k = 0; k < K; k++) {
      store<f32>(dst, load<f32>(src));
      dst += 4;
      src += 32;
    }
  }
}

export function embed_q8(out: usize, table: usize, ids: usize, M: i32, K: i32): void {
  const nb = K >> 5;
  const panelBytes = <usize>nb * Q8_BLOCK_BYTES;
  for (let r = 0; r < M; r++) {
    const id = load<i32>(ids + (<usize>r << 2));
    const lane = <usize>(id & 7);
    let bp = table + <usize>(id >> 3) * panelBytes;
    let dst = out + <usize>r * (<usize>K << 2);
    for (let b = 0; b < nb; b++) {
      const d = load<f32>(bp + (lane << 2));
      let qp = bp + 32 + lane;
      for (let j = 0; j < 32; j++) {
        store<f32>(dst, <f32>load<i8>(qp) * d);
        dst += 4;
        qp += 8;
      }
      bp += Q8_BLOCK_BYTES;
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// elementwise

// The sum of squares runs sequentially (like llama2.c) so the result matches the reference bit for bit;
// it is a negligible share of a forward pass.
export function rmsnorm(out: usize, x: usize, weight: usize, M: i32, dim: i32, eps: f32): void {
  const rs = <usize>dim << 2;
  for (let r = 0; r < M; r++) {
    const xr = x + <usize>r * rs;
    const or = out + <usize>r * rs;
    let ss: f32 = 0;
    for (let i = 0; i < dim; i++) {
      const v = load<f32>(xr + (<usize>i << 2));
      ss += v * v;
    }
    ss = ss / <f32>dim + eps;
    const inv: f32 = <f32>1 / Mathf.sqrt(ss);
    const vi = f32x4.splat(inv);
    let i = 0;
    for (; i + 4 <= dim; i += 4) {
      const o = <usize>i << 2;
      v128.store(or + o, f32x4.mul(v128.load(weight + o), f32x4.mul(vi, v128.load(xr + o))));
    }
    for (; i < dim; i++) {
      const o = <usize>i << 2;
      store<f32>(or + o, load<f32>(weight + o) * (inv * load<f32>(xr + o)));
    }
  }
}

// cs = [M][headDim/2][cos, sin] computed on the JS side (see rope.ts), so both backends rotate by
// exactly the same f32 values.
export function rope(x: usize, cs: usize, M: i32, nHeads: i32, headDim: i32, neox: bool): void {
  const half = headDim >> 1;
  const rowBytes = <usize>(nHeads * headDim) << 2;
  for (let r = 0; r < M; r++) {
    const csr = cs + <usize>r * (<usize>half << 3);
    for (let h = 0; h < nHeads; h++) {
      const hp = x + <usize>r * rowBytes + (<usize>(h * headDim) << 2);
      for (let i = 0; i < half; i++) {
        const c = load<f32>(csr + (<usize>i << 3));
        const s = load<f32>(csr + (<usize>i << 3), 4);
        const p0 = neox ? hp + (<usize>i << 2) : hp + (<usize>i << 3);
        const p1 = neox ? p0 + (<usize>half << 2) : p0 + 4;
        const v0 = load<f32>(p0);
        const v1 = load<f32>(p1);
        store<f32>(p0, v0 * c - v1 * s);
        store<f32>(p1, v0 * s + v1 * c);
      }
    }
  }
}

// e^x for four lanes (Cephes expf: x = n·ln2 + r, degree-6 polynomial in r, scale by 2^n), within
// ~2 ulp of the correctly rounded value on [-87.3, 88]. Below that it returns 0 (the true value is
// subnormal or 0); on (88, 88.72] it returns e^88 (2^n would overflow; only silu of a gate below -88
// lands there, where the result is ~1e-36 either way); above 88.72 +inf; NaN stays NaN. Every element of every kernel goes through
// this same lane-wise function (tails included, via a splat), so results never depend on lane position.
@inline
function exp4(x: v128): v128 {
  // pmax/pmin are one instruction each on x64 (min/max are ~7); they agree with max/min on numbers,
  // and keep a NaN x as NaN (x is the first operand), which the result then stays
  const xc = f32x4.pmin(f32x4.pmax(x, f32x4.splat(-87.33654)), f32x4.splat(88.0));
  const fx = f32x4.nearest(f32x4.mul(xc, f32x4.splat(1.44269504088896341)));
  let r = f32x4.sub(xc, f32x4.mul(fx, f32x4.splat(0.693359375)));
  r = f32x4.sub(r, f32x4.mul(fx, f32x4.splat(-2.12194440e-4)));
  let y = f32x4.splat(1.9875691500e-4);
  y = f32x4.add(f32x4.mul(y, r), f32x4.splat(1.3981999507e-3));
  y = f32x4.add(f32x4.mul(y, r), f32x4.splat(8.3334519073e-3));
  y = f32x4.add(f32x4.mul(y, r), f32x4.splat(4.1665795894e-2));
  y = f32x4.add(f32x4.mul(y, r), f32x4.splat(1.6666665459e-1));
  y = f32x4.add(f32x4.mul(y, r), f32x4.splat(5.0000001201e-1));
  y = f32x4.add(f32x4.add(f32x4.mul(y, f32x4.mul(r, r)), r), f32x4.splat(1));
  // 2^n from the integral fx ∈ [-126, 127]: fx + (2^23 + 127) is exact and holds n + 127 in its low
  // mantissa bits, which the shift moves into the exponent field (cheaper than trunc_sat on x64)
  const pow2n = i32x4.shl(f32x4.add(fx, f32x4.splat(8388735.0)), 23);
  let e = f32x4.mul(y, pow2n);
  e = v128.andnot(e, f32x4.lt(x, f32x4.splat(-87.33654)));
  return v128.bitselect(f32x4.splat(Infinity), e, f32x4.gt(x, f32x4.splat(88.72283)));
}

@inline
function exp1(x: f32): f32 {
  return f32x4.extract_lane(exp4(f32x4.splat(x)), 0);
}

@inline
function silu4(g: v128): v128 {
  const one = f32x4.splat(1);
  return f32x4.mul(g, f32x4.div(one, f32x4.add(one, exp4(f32x4.neg(g)))));
}

export function swiglu(gate: usize, up: usize, n: i32): void {
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    const o = <usize>i << 2;
    v128.store(gate + o, f32x4.mul(silu4(v128.load(gate + o)), v128.load(up + o)));
  }
  for (; i < n; i++) {
    const o = <usize>i << 2;
    store<f32>(gate + o, f32x4.extract_lane(silu4(f32x4.splat(load<f32>(gate + o))), 0) * load<f32>(up + o));
  }
}

export function add_in_place(acc: usize, x: usize, n: i32): void {
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    const o = <usize>i << 2;
    v128.store(acc + o, f32x4.add(v128.load(acc + o), v128.load(x + o)));
  }
  for (; i < n; i++) {
    const o = <usize>i << 2;
    store<f32>(acc + o, load<f32>(acc + o) + load<f32>(x + o));
  }
}

// ---------------------------------------------------------------------------------------------------
// f16 (IEEE binary16) conversions

// Round to nearest, ties to even; overflow to ±inf; NaN stays a (quiet) NaN with its top payload bits.
@inline
function f32ToF16(f: f32): u32 {
  const x = reinterpret<u32>(f);
  const sign = (x >> 16) & 0x8000;
  const ax = x & 0x7fffffff;
  if (ax >= 0x7f800000) return sign | 0x7c00 | (ax > 0x7f800000 ? 0x200 | ((ax >> 13) & 0x3ff) : 0);
  if (ax >= 0x477ff000) return sign | 0x7c00; // ≥ 65520 rounds past the largest half (65504)
  if (ax >= 0x38800000) {
    // normal half: rebias the exponent, round the 13 dropped mantissa bits to nearest even
    return sign | ((ax - 0x38000000 + 0xfff + ((ax >> 13) & 1)) >> 13);
  }
  const e = ax >> 23;
  if (e < 102) return sign; // below 2^-25 (or exactly it: a tie, to even = 0)
  // subnormal half: units of 2^-24
  const m = (ax & 0x7fffff) | 0x800000;
  const s = 126 - e;
  let q = m >> s;
  const rem = m & ((1 << s) - 1);
  const halfway = <u32>1 << (s - 1);
  if (rem > halfway || (rem == halfway && (q & 1) != 0)) q++;
  return sign | q;
}

// Four halves, sign-extended into i32 lanes, to f32: exact, including subnormals, inf and NaN.
// Shifting left by 13 puts the sign at bit 31 and exponent/mantissa at f32 bits 13..27 (the mask
// clears the copies of the sign in between); a float multiply by 2^112 rebiases the exponent and
// also normalises subnormals; results at or above 2^16 in magnitude were inf/NaN.
@inline
function f16x4ToF32(h: v128): v128 {
  const f = f32x4.mul(v128.and(i32x4.shl(h, 13), i32x4.splat(0x8fffe000)), f32x4.splat(reinterpret<f32>(0x77800000)));
  const infnan = f32x4.ge(f32x4.abs(f), f32x4.splat(65536.0));
  return v128.or(f, v128.and(infnan, i32x4.splat(0x7f800000)));
}

@inline
function f16ToF32(h: u32): f32 {
  return f32x4.extract_lane(f16x4ToF32(i32x4.splat(<i32><i16>h)), 0);
}

// ---------------------------------------------------------------------------------------------------
// paged KV pool

export function kv_write(
  base: usize, blockSize: i32, nLayers: i32, kvDim: i32, f16: bool,
  layer: i32, k: usize, v: usize, slots: usize, M: i32,
): void {
  const elt: usize = f16 ? 2 : 4;
  const tokenBytes = <usize>kvDim * elt;
  const kvBytes = <usize>blockSize * tokenBytes; // one K (or V) plane of one layer in one block
  for (let r = 0; r < M; r++) {
    const slot = load<i32>(slots + (<usize>r << 2));
    const block = slot / blockSize;
    const off = slot % blockSize;
    const kp = base + (<usize>(block * nLayers + layer) * 2) * kvBytes + <usize>off * tokenBytes;
    const vp = kp + kvBytes;
    const ks = k + <usize>r * (<usize>kvDim << 2);
    const vs = v + <usize>r * (<usize>kvDim << 2);
    if (f16) {
      for (let e = 0; e < kvDim; e++) {
        store<u16>(kp + (<usize>e << 1), <u16>f32ToF16(load<f32>(ks + (<usize>e << 2))));
        store<u16>(vp + (<usize>e << 1), <u16>f32ToF16(load<f32>(vs + (<usize>e << 2))));
      }
    } else {
      memory.copy(kp, ks, tokenBytes);
      memory.copy(vp, vs, tokenBytes);
    }
  }
}

// Attention is generic over the pool element type T: f32, or u16 for f16 (both resolved at compile time).

// 4 consecutive elements of a K or V row, as f32.
@inline
function load4<T>(p: usize): v128 {
  if (sizeof<T>() == 2) return f16x4ToF32(v128.load16x4_s(p));
  return v128.load(p);
}

@inline
function load1<T>(p: usize): f32 {
  if (sizeof<T>() == 2) return f16ToF32(load<u16>(p));
  return load<f32>(p);
}

@inline
function hsum(a: v128): f32 {
  return (f32x4.extract_lane(a, 0) + f32x4.extract_lane(a, 1)) + (f32x4.extract_lane(a, 2) + f32x4.extract_lane(a, 3));
}

// Score of one token: q·k over headDim with 4 lanes accumulating d ≡ 0,1,2,3 (mod 4), reduced as
// (l0+l1)+(l2+l3), then the tail (headDim % 4) sequentially, then divided by sqrt(headDim).
function score1<T>(q: usize, k: usize, hd: i32, sqrtHd: f32): f32 {
  let acc = f32x4.splat(0);
  let i = 0;
  for (; i + 4 <= hd; i += 4) acc = f32x4.add(acc, f32x4.mul(v128.load(q + (<usize>i << 2)), load4<T>(k + <usize>i * sizeof<T>())));
  let s = hsum(acc);
  for (; i < hd; i++) s += load<f32>(q + (<usize>i << 2)) * load1<T>(k + <usize>i * sizeof<T>());
  return s / sqrtHd;
}

// hsum of four vectors at once: lane j = (a_j.0 + a_j.1) + (a_j.2 + a_j.3), the same additions as hsum.
// A 4×4 transpose with unpack/movlhps-style shuffles (one instruction each on x64), then the adds.
@inline
function hsum4(a0: v128, a1: v128, a2: v128, a3: v128): v128 {
  const t0 = v128.shuffle<f32>(a0, a1, 0, 4, 1, 5); // a0.0 a1.0 a0.1 a1.1
  const t1 = v128.shuffle<f32>(a0, a1, 2, 6, 3, 7); // a0.2 a1.2 a0.3 a1.3
  const t2 = v128.shuffle<f32>(a2, a3, 0, 4, 1, 5);
  const t3 = v128.shuffle<f32>(a2, a3, 2, 6, 3, 7);
  const l0 = v128.shuffle<f32>(t0, t2, 0, 1, 4, 5); // lane 0 of a0..a3
  const l1 = v128.shuffle<f32>(t0, t2, 2, 3, 6, 7);
  const l2 = v128.shuffle<f32>(t1, t3, 0, 1, 4, 5);
  const l3 = v128.shuffle<f32>(t1, t3, 2, 3, 6, 7);
  return f32x4.add(f32x4.add(l0, l1), f32x4.add(l2, l3));
}

// Scores of 4 consecutive tokens at once (independent chains), each computed exactly as score1 does.
@inline
function score4<T>(q: usize, k: usize, stride: usize, hd: i32, sqrtHd: f32, dst: usize): void {
  let a0 = f32x4.splat(0), a1 = f32x4.splat(0), a2 = f32x4.splat(0), a3 = f32x4.splat(0);
  let i = 0;
  for (; i + 4 <= hd; i += 4) {
    const qv = v128.load(q + (<usize>i << 2));
    const kp = k + <usize>i * sizeof<T>();
    a0 = f32x4.add(a0, f32x4.mul(qv, load4<T>(kp)));
    a1 = f32x4.add(a1, f32x4.mul(qv, load4<T>(kp + stride)));
    a2 = f32x4.add(a2, f32x4.mul(qv, load4<T>(kp + 2 * stride)));
    a3 = f32x4.add(a3, f32x4.mul(qv, load4<T>(kp + 3 * stride)));
  }
  if (i == hd) {
    v128.store(dst, f32x4.div(hsum4(a0, a1, a2, a3), f32x4.splat(sqrtHd)));
    return;
  }
  let s0 = hsum(a0), s1 = hsum(a1), s2 = hsum(a2), s3 = hsum(a3);
  for (; i < hd; i++) {
    const qs = load<f32>(q + (<usize>i << 2));
    const kp = k + <usize>i * sizeof<T>();
    s0 += qs * load1<T>(kp);
    s1 += qs * load1<T>(kp + stride);
    s2 += qs * load1<T>(kp + 2 * stride);
    s3 += qs * load1<T>(kp + 3 * stride);
  }
  store<f32>(dst, s0 / sqrtHd);
  store<f32>(dst, s1 / sqrtHd, 4);
  store<f32>(dst, s2 / sqrtHd, 8);
  store<f32>(dst, s3 / sqrtHd, 12);
}

// Scores of the first `tn` tokens of one KV block into dst[0 .. tn).
function scoreBlock<T>(q: usize, k: usize, stride: usize, hd: i32, sqrtHd: f32, dst: usize, tn: i32): void {
  let j = 0;
  for (; j + 4 <= tn; j += 4) {
    score4<T>(q, k, stride, hd, sqrtHd, dst);
    k += stride << 2;
    dst += 16;
  }
  for (; j < tn; j++) {
    store<f32>(dst, score1<T>(q, k, hd, sqrtHd));
    k += stride;
    dst += 4;
  }
}

// A tile: 1 to 4 queries that read the same KV head of the same sequence (query rows of one prompt
// chunk, and the query heads of a GQA group). Query s is described at desc + 32·s by four i32 (its q
// pointer, out pointer, token count n = position + 1, score row) and two f32 (softmax max and sum).
// Every query goes through the same operations as when it is alone; the tile only shares loads of K
// and V and runs independent chains side by side.
const DESC_BYTES: usize = 32;

@inline function descQ(desc: usize, s: i32): usize { return <usize>load<i32>(desc + <usize>s * DESC_BYTES); }
@inline function descO(desc: usize, s: i32): usize { return <usize>load<i32>(desc + <usize>s * DESC_BYTES, 4); }
@inline function descN(desc: usize, s: i32): i32 { return load<i32>(desc + <usize>s * DESC_BYTES, 8); }
@inline function descAtt(desc: usize, s: i32): usize { return <usize>load<i32>(desc + <usize>s * DESC_BYTES, 12); }
@inline function descMax(desc: usize, s: i32): f32 { return load<f32>(desc + <usize>s * DESC_BYTES, 16); }

// Softmax of each query's scores, in place on att[0 .. n): subtract the max, exponentiate (4 tokens
// at a time from t = 0, the tail through the same lane-wise exp4), sum sequentially in token order,
// divide by the sum. The sums are serial chains, so the tile's queries run them side by side.

// max is exact and order-free (f32.max and f32x4.max agree, NaN included), so it runs 4-wide
function rowMax(att: usize, n: i32): f32 {
  let mv = f32x4.splat(-Infinity);
  let t = 0;
  for (; t + 4 <= n; t += 4) mv = f32x4.max(mv, v128.load(att + (<usize>t << 2)));
  let m = max(max(f32x4.extract_lane(mv, 0), f32x4.extract_lane(mv, 1)), max(f32x4.extract_lane(mv, 2), f32x4.extract_lane(mv, 3)));
  for (; t < n; t++) m = max(m, load<f32>(att + (<usize>t << 2)));
  return m;
}

@inline
function expAdd4(p: usize, mx: v128, sum: f32): f32 {
  const e = exp4(f32x4.sub(v128.load(p), mx));
  v128.store(p, e);
  sum += f32x4.extract_lane(e, 0);
  sum += f32x4.extract_lane(e, 1);
  sum += f32x4.extract_lane(e, 2);
  return sum + f32x4.extract_lane(e, 3);
}

// Tokens [0, tB) (tB a multiple of 4) of queries s0 .. s0+Q-1 (Q = 1, 2 or 4), sums carried in desc.
@inline
function expSum(desc: usize, s0: i32, Q: i32, tB: i32): void {
  const p0 = descAtt(desc, s0), p1 = descAtt(desc, s0 + min(1, Q - 1)), p2 = descAtt(desc, s0 + min(2, Q - 1)), p3 = descAtt(desc, s0 + min(3, Q - 1));
  const m0 = f32x4.splat(descMax(desc, s0)), m1 = f32x4.splat(descMax(desc, s0 + min(1, Q - 1)));
  const m2 = f32x4.splat(descMax(desc, s0 + min(2, Q - 1))), m3 = f32x4.splat(descMax(desc, s0 + min(3, Q - 1)));
  let u0: f32 = 0, u1: f32 = 0, u2: f32 = 0, u3: f32 = 0;
  for (let t = 0; t < tB; t += 4) {
    const o = <usize>t << 2;
    u0 = expAdd4(p0 + o, m0, u0);
    if (Q >= 2) u1 = expAdd4(p1 + o, m1, u1);
    if (Q == 4) {
      u2 = expAdd4(p2 + o, m2, u2);
      u3 = expAdd4(p3 + o, m3, u3);
    }
  }
  store<f32>(desc + <usize>s0 * DESC_BYTES, u0, 20);
  if (Q >= 2) store<f32>(desc + <usize>(s0 + 1) * DESC_BYTES, u1, 20);
  if (Q == 4) {
    store<f32>(desc + <usize>(s0 + 2) * DESC_BYTES, u2, 20);
    store<f32>(desc + <usize>(s0 + 3) * DESC_BYTES, u3, 20);
  }
}

function softmaxTile(desc: usize, cnt: i32, nmin: i32): void {
  for (let s = 0; s < cnt; s++) store<f32>(desc + <usize>s * DESC_BYTES, rowMax(descAtt(desc, s), descN(desc, s)), 16);
  // the common prefix, whole groups of 4 tokens, chains side by side
  const tB = nmin & ~3;
  let s = 0;
  for (; s + 4 <= cnt; s += 4) expSum(desc, s, 4, tB);
  for (; s + 2 <= cnt; s += 2) expSum(desc, s, 2, tB);
  for (; s < cnt; s++) expSum(desc, s, 1, tB);
  for (s = 0; s < cnt; s++) {
    const att = descAtt(desc, s);
    const n = descN(desc, s);
    const maxScore = descMax(desc, s);
    const mx = f32x4.splat(maxScore);
    let sum = load<f32>(desc + <usize>s * DESC_BYTES, 20);
    let t = tB;
    for (; t + 4 <= n; t += 4) sum = expAdd4(att + (<usize>t << 2), mx, sum);
    for (; t < n; t++) {
      const p = att + (<usize>t << 2);
      const e = exp1(load<f32>(p) - maxScore);
      store<f32>(p, e);
      sum += e;
    }
    // IEEE division is correctly rounded, so dividing 4 lanes at once gives the scalar bits
    const sv = f32x4.splat(sum);
    t = 0;
    for (; t + 4 <= n; t += 4) {
      const p = att + (<usize>t << 2);
      v128.store(p, f32x4.div(v128.load(p), sv));
    }
    for (; t < n; t++) {
      const p = att + (<usize>t << 2);
      store<f32>(p, load<f32>(p) / sum);
    }
  }
}

// The weighted sum of V for one output dimension d runs c = 0; c += att[t]·V[t][d] for t = 0 .. n-1 in
// order. The functions below hold these chains in registers for several dimensions and queries at once,
// over a token range [tA, tB); `init` continues chains stored in o (a query's tokens past a tile's
// common prefix), which leaves every chain the same sequence of additions.

// One query, 4·W dimensions (W = 4 or 1).
@inline
function accumulateV<T>(
  o: usize, att: usize, table: usize, tA: i32, tB: i32, blockSize: i32, vBase: usize, blockBytes: usize,
  tokenBytes: usize, W: i32, init: bool,
): void {
  let c0 = f32x4.splat(0), c1 = f32x4.splat(0), c2 = f32x4.splat(0), c3 = f32x4.splat(0);
  if (init) {
    c0 = v128.load(o);
    if (W == 4) {
      c1 = v128.load(o, 16);
      c2 = v128.load(o, 32);
      c3 = v128.load(o, 48);
    }
  }
  let t = tA;
  while (t < tB) {
    const b = t / blockSize;
    const off = t - b * blockSize;
    const tn = min(blockSize - off, tB - t);
    let vp = vBase + <usize>load<i32>(table + (<usize>b << 2)) * blockBytes + <usize>off * tokenBytes;
    let ap = att + (<usize>t << 2);
    for (let j = 0; j < tn; j++) {
      const a = v128.load32_splat(ap);
      c0 = f32x4.add(c0, f32x4.mul(a, load4<T>(vp)));
      if (W == 4) {
        c1 = f32x4.add(c1, f32x4.mul(a, load4<T>(vp + 4 * sizeof<T>())));
        c2 = f32x4.add(c2, f32x4.mul(a, load4<T>(vp + 8 * sizeof<T>())));
        c3 = f32x4.add(c3, f32x4.mul(a, load4<T>(vp + 12 * sizeof<T>())));
      }
      ap += 4;
      vp += tokenBytes;
    }
    t += tn;
  }
  v128.store(o, c0);
  if (W == 4) {
    v128.store(o, c1, 16);
    v128.store(o, c2, 32);
    v128.store(o, c3, 48);
  }
}

// One query, one dimension (headDim % 4 tails).
function accumulateV1<T>(
  o: usize, att: usize, table: usize, tA: i32, tB: i32, blockSize: i32, vBase: usize, blockBytes: usize,
  tokenBytes: usize, init: bool,
): void {
  let c: f32 = init ? load<f32>(o) : 0;
  let t = tA;
  while (t < tB) {
    const b = t / blockSize;
    const off = t - b * blockSize;
    const tn = min(blockSize - off, tB - t);
    let vp = vBase + <usize>load<i32>(table + (<usize>b << 2)) * blockBytes + <usize>off * tokenBytes;
    let ap = att + (<usize>t << 2);
    for (let j = 0; j < tn; j++) {
      c += load<f32>(ap) * load1<T>(vp);
      ap += 4;
      vp += tokenBytes;
    }
    t += tn;
  }
  store<f32>(o, c);
}

// All dimensions of one query over [tA, tB).
function accumulateVQuery<T>(
  o: usize, att: usize, table: usize, tA: i32, tB: i32, blockSize: i32, vBase: usize, blockBytes: usize,
  tokenBytes: usize, hd: i32, init: bool,
): void {
  let d = 0;
  for (; d + 16 <= hd; d += 16) {
    accumulateV<T>(o + (<usize>d << 2), att, table, tA, tB, blockSize, vBase + <usize>d * sizeof<T>(), blockBytes, tokenBytes, 4, init);
  }
  for (; d + 4 <= hd; d += 4) {
    accumulateV<T>(o + (<usize>d << 2), att, table, tA, tB, blockSize, vBase + <usize>d * sizeof<T>(), blockBytes, tokenBytes, 1, init);
  }
  for (; d < hd; d++) {
    accumulateV1<T>(o + (<usize>d << 2), att, table, tA, tB, blockSize, vBase + <usize>d * sizeof<T>(), blockBytes, tokenBytes, init);
  }
}

// Four queries × 8 dimensions over tokens [0, n): each V vector loaded once for four queries.
function accumulateV4x8<T>(
  o0: usize, o1: usize, o2: usize, o3: usize, att0: usize, att1: usize, att2: usize, att3: usize,
  table: usize, n: i32, blockSize: i32, vBase: usize, blockBytes: usize, tokenBytes: usize,
): void {
  let c00 = f32x4.splat(0), c01 = f32x4.splat(0), c10 = f32x4.splat(0), c11 = f32x4.splat(0);
  let c20 = f32x4.splat(0), c21 = f32x4.splat(0), c30 = f32x4.splat(0), c31 = f32x4.splat(0);
  let ap: usize = 0;
  for (let t0 = 0, b = 0; t0 < n; t0 += blockSize, b++) {
    let vp = vBase + <usize>load<i32>(table + (<usize>b << 2)) * blockBytes;
    const tn = min(blockSize, n - t0);
    for (let j = 0; j < tn; j++) {
      const v0 = load4<T>(vp);
      const v1 = load4<T>(vp + 4 * sizeof<T>());
      const a0 = v128.load32_splat(att0 + ap);
      const a1 = v128.load32_splat(att1 + ap);
      const a2 = v128.load32_splat(att2 + ap);
      const a3 = v128.load32_splat(att3 + ap);
      c00 = f32x4.add(c00, f32x4.mul(a0, v0));
      c01 = f32x4.add(c01, f32x4.mul(a0, v1));
      c10 = f32x4.add(c10, f32x4.mul(a1, v0));
      c11 = f32x4.add(c11, f32x4.mul(a1, v1));
      c20 = f32x4.add(c20, f32x4.mul(a2, v0));
      c21 = f32x4.add(c21, f32x4.mul(a2, v1));
      c30 = f32x4.add(c30, f32x4.mul(a3, v0));
      c31 = f32x4.add(c31, f32x4.mul(a3, v1));
      ap += 4;
      vp += tokenBytes;
    }
  }
  v128.store(o0, c00);
  v128.store(o0, c01, 16);
  v128.store(o1, c10);
  v128.store(o1, c11, 16);
  v128.store(o2, c20);
  v128.store(o2, c21, 16);
  v128.store(o3, c30);
  v128.store(o3, c31, 16);
}

// Two queries × 16 dimensions over tokens [0, n).
function accumulateV2x16<T>(
  o0: usize, o1: usize, att0: usize, att1: usize,
  table: usize, n: i32, blockSize: i32, vBase: usize, blockBytes: usize, tokenBytes: usize,
): void {
  let c00 = f32x4.splat(0), c01 = f32x4.splat(0), c02 = f32x4.splat(0), c03 = f32x4.splat(0);
  let c10 = f32x4.splat(0), c11 = f32x4.splat(0), c12 = f32x4.splat(0), c13 = f32x4.splat(0);
  let ap: usize = 0;
  for (let t0 = 0, b = 0; t0 < n; t0 += blockSize, b++) {
    let vp = vBase + <usize>load<i32>(table + (<usize>b << 2)) * blockBytes;
    const tn = min(blockSize, n - t0);
    for (let j = 0; j < tn; j++) {
      const v0 = load4<T>(vp);
      const v1 = load4<T>(vp + 4 * sizeof<T>());
      const v2 = load4<T>(vp + 8 * sizeof<T>());
      const v3 = load4<T>(vp + 12 * sizeof<T>());
      const a0 = v128.load32_splat(att0 + ap);
      const a1 = v128.load32_splat(att1 + ap);
      c00 = f32x4.add(c00, f32x4.mul(a0, v0));
      c01 = f32x4.add(c01, f32x4.mul(a0, v1));
      c02 = f32x4.add(c02, f32x4.mul(a0, v2));
      c03 = f32x4.add(c03, f32x4.mul(a0, v3));
      c10 = f32x4.add(c10, f32x4.mul(a1, v0));
      c11 = f32x4.add(c11, f32x4.mul(a1, v1));
      c12 = f32x4.add(c12, f32x4.mul(a1, v2));
      c13 = f32x4.add(c13, f32x4.mul(a1, v3));
      ap += 4;
      vp += tokenBytes;
    }
  }
  v128.store(o0, c00);
  v128.store(o0, c01, 16);
  v128.store(o0, c02, 32);
  v128.store(o0, c03, 48);
  v128.store(o1, c10);
  v128.store(o1, c11, 16);
  v128.store(o1, c12, 32);
  v128.store(o1, c13, 48);
}

function attendTile<T>(
  desc: usize, cnt: i32, table: usize, kBase: usize, vBase: usize, blockSize: i32, blockBytes: usize,
  tokenBytes: usize, hd: i32, sqrtHd: f32,
): void {
  let nmax = 0, nmin = i32.MAX_VALUE;
  for (let s = 0; s < cnt; s++) {
    nmax = max(nmax, descN(desc, s));
    nmin = min(nmin, descN(desc, s));
  }
  // scores, KV block by KV block, so a block of K is fetched once and reused from L1 by every query
  for (let t0 = 0, b = 0; t0 < nmax; t0 += blockSize, b++) {
    const kp = kBase + <usize>load<i32>(table + (<usize>b << 2)) * blockBytes;
    for (let s = 0; s < cnt; s++) {
      const n = descN(desc, s);
      if (n > t0) scoreBlock<T>(descQ(desc, s), kp, tokenBytes, hd, sqrtHd, descAtt(desc, s) + (<usize>t0 << 2), min(blockSize, n - t0));
    }
  }
  softmaxTile(desc, cnt, nmin);
  // weighted sums of V: the common prefix [0, nmin) for all queries together, then each query's tail
  if (cnt == 1 || (hd & 7) != 0) {
    for (let s = 0; s < cnt; s++) {
      accumulateVQuery<T>(descO(desc, s), descAtt(desc, s), table, 0, descN(desc, s), blockSize, vBase, blockBytes, tokenBytes, hd, false);
    }
    return;
  }
  if (cnt == 2 && (hd & 15) == 0) {
    const o0 = descO(desc, 0), o1 = descO(desc, 1), a0 = descAtt(desc, 0), a1 = descAtt(desc, 1);
    for (let d = 0; d < hd; d += 16) {
      accumulateV2x16<T>(o0 + (<usize>d << 2), o1 + (<usize>d << 2), a0, a1, table, nmin, blockSize, vBase + <usize>d * sizeof<T>(), blockBytes, tokenBytes);
    }
  } else {
    // 2 or 3 queries repeat the last one (same inputs and outputs, so the same bits are stored twice)
    const o0 = descO(desc, 0), o1 = descO(desc, min(1, cnt - 1)), o2 = descO(desc, min(2, cnt - 1)), o3 = descO(desc, min(3, cnt - 1));
    const a0 = descAtt(desc, 0), a1 = descAtt(desc, min(1, cnt - 1)), a2 = descAtt(desc, min(2, cnt - 1)), a3 = descAtt(desc, min(3, cnt - 1));
    for (let d = 0; d < hd; d += 8) {
      const od = <usize>d << 2;
      accumulateV4x8<T>(o0 + od, o1 + od, o2 + od, o3 + od, a0, a1, a2, a3, table, nmin, blockSize, vBase + <usize>d * sizeof<T>(), blockBytes, tokenBytes);
    }
  }
  for (let s = 0; s < cnt; s++) {
    const n = descN(desc, s);
    if (n > nmin) accumulateVQuery<T>(descO(desc, s), descAtt(desc, s), table, nmin, n, blockSize, vBase, blockBytes, tokenBytes, hd, true);
  }
}

// Up to this many consecutive rows of one sequence form a tile (times the GQA group, in tiles of 4).
const TILE_ROWS: i32 = 4;

function attentionT<T>(
  out: usize, q: usize, base: usize, blockSize: i32, nLayers: i32, nKvHeads: i32, headDim: i32,
  layer: i32, nHeads: i32, M: i32, positions: usize, blockTables: usize, scratch: usize, attStride: i32,
): void {
  const kvDim = nKvHeads * headDim;
  const tokenBytes = <usize>kvDim * sizeof<T>();
  const planeBytes = <usize>blockSize * tokenBytes; // one K (or V) plane of one layer in one block
  const blockBytes = <usize>nLayers * 2 * planeBytes;
  const group = nHeads / nKvHeads;
  const rowBytes = <usize>(nHeads * headDim) << 2;
  const headBytes = <usize>headDim << 2;
  const sqrtHd = Mathf.sqrt(<f32>headDim);
  const desc = scratch;
  for (let s = 0; s < 4; s++) store<i32>(desc + <usize>s * DESC_BYTES, <i32>(scratch + 4 * DESC_BYTES + <usize>s * (<usize>attStride << 2)), 12);
  let r = 0;
  while (r < M) {
    // rows that share a block table read the same K and V
    const table = <usize>load<i32>(blockTables + (<usize>r << 2));
    let R = 1;
    while (R < TILE_ROWS && r + R < M && <usize>load<i32>(blockTables + (<usize>(r + R) << 2)) == table) R++;
    const nq = R * group;
    for (let kh = 0; kh < nKvHeads; kh++) {
      const kBase = base + <usize>layer * 2 * planeBytes + <usize>(kh * headDim) * sizeof<T>();
      const vBase = kBase + planeBytes;
      for (let j0 = 0; j0 < nq; j0 += 4) {
        const cnt = min(4, nq - j0);
        for (let s = 0; s < cnt; s++) {
          const j = j0 + s;
          const row = r + j / group;
          const h = kh * group + j % group;
          const d = desc + <usize>s * DESC_BYTES;
          store<i32>(d, <i32>(q + <usize>row * rowBytes + <usize>h * headBytes));
          store<i32>(d, <i32>(out + <usize>row * rowBytes + <usize>h * headBytes), 4);
          store<i32>(d, load<i32>(positions + (<usize>row << 2)) + 1, 8);
        }
        attendTile<T>(desc, cnt, table, kBase, vBase, blockSize, blockBytes, tokenBytes, headDim, sqrtHd);
      }
    }
    r += R;
  }
}

// Causal attention of each query row against its sequence's tokens 0..pos through its block table.
// Per (row, head): scores in token order, softmax with the max subtracted, then the weighted sum of V
// in token order — the same sequence of operations whatever else is in the batch. Consecutive rows of
// one sequence are tiled (see attendTile) so that K and V are read once per tile, not once per row.
// scratch: 128 bytes of tile descriptors, then 4 score rows of attStride f32 (≥ max position + 1).
export function attention(
  out: usize, q: usize, base: usize, blockSize: i32, nLayers: i32, nKvHeads: i32, headDim: i32, f16: bool,
  layer: i32, nHeads: i32, M: i32, positions: usize, blockTables: usize, scratch: usize, attStride: i32,
): void {
  if (f16) attentionT<u16>(out, q, base, blockSize, nLayers, nKvHeads, headDim, layer, nHeads, M, positions, blockTables, scratch, attStride);
  else attentionT<f32>(out, q, base, blockSize, nLayers, nKvHeads, headDim, layer, nHeads, M, positions, blockTables, scratch, attStride);
}
