// The many-rows paths that prefill takes: attention tiles consecutive rows of one sequence (sharing K/V
// loads between up to 4 queries, with each query's own causal length), and the q8_0 matmul widens
// weight panels to f32 once when M ≥ 16. Each must give every row the same bits as that row alone, in
// any chunking of the prompt, and agree with the reference backend.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { KvDtype } from '../../src/kernels/index.ts';
import { KvScenario, backends, bits, maxRelErr, putF32, quantizeQ8, randomF32, rng } from './helpers.ts';

const [ref, wasm] = await backends();

function assertSameBits(got: Float32Array, want: Float32Array, what: string): void {
  const g = bits(got), w = bits(want);
  assert.equal(g.length, w.length, what);
  for (let i = 0; i < g.length; i++) if (g[i] !== w[i]) assert.fail(`${what}: element ${i} differs (${got[i]} vs ${want[i]})`);
}

// headDim 16 with GQA 2 (2-query tiles, 2×16 V path), 8 (4×8 V path), 48 with GQA 3 (3-query tiles,
// repeated-query 4×8 path), 12 (V per query), 6 (score and V tails); block sizes that do and do not
// divide 4.
const shapes = [
  { nKvHeads: 2, headDim: 16, nHeads: 4, blockSize: 16 },
  { nKvHeads: 1, headDim: 8, nHeads: 1, blockSize: 8 },
  { nKvHeads: 1, headDim: 48, nHeads: 3, blockSize: 5 },
  { nKvHeads: 2, headDim: 12, nHeads: 2, blockSize: 3 },
  { nKvHeads: 1, headDim: 6, nHeads: 2, blockSize: 7 },
];

for (const dtype of ['f32', 'f16'] as KvDtype[]) {
  for (const s of shapes) {
    const label = `${dtype} headDim ${s.headDim} heads ${s.nHeads}/${s.nKvHeads} block ${s.blockSize}`;
    test(`attention over a prompt's rows (${label}): same bits in any chunking, matches reference`, () => {
      const shape = { nLayers: 2, nKvHeads: s.nKvHeads, headDim: s.headDim, blockSize: s.blockSize, dtype };
      const L = 43;
      const width = s.nHeads * s.headDim;
      const marks = [ref!.mark(), wasm!.mark()];
      const [sr, sw] = [ref!, wasm!].map((k) => new KvScenario(k, shape, [L, 9], 1, 31)) as [KvScenario, KvScenario];
      const prompt = Array.from({ length: L }, (_, pos) => ({ seq: 0, pos }));
      const q = randomF32(L * width, rng(32), 2);
      const full = sw.attend(prompt, q, s.nHeads);
      assert.ok(maxRelErr(full, sr.attend(prompt, q, s.nHeads)) <= 1e-5, 'wasm vs reference');
      // every row alone, and prompt chunkings
      for (const chunk of [1, 2, 3, 5, 8, 17]) {
        for (let start = 0; start < L; start += chunk) {
          const end = Math.min(L, start + chunk);
          const got = sw.attend(prompt.slice(start, end), q.subarray(start * width, end * width), s.nHeads);
          assertSameBits(got, full.subarray(start * width, end * width), `${label} rows [${start}, ${end})`);
        }
      }
      // prompt rows broken up by another sequence's rows, and rows of one sequence out of order
      const other = randomF32(2 * width, rng(33), 2);
      const mixed = sw.attend(
        [{ seq: 1, pos: 8 }, ...prompt.slice(10, 21), { seq: 1, pos: 3 }, ...prompt.slice(21, 23)],
        Float32Array.of(...other.subarray(0, width), ...q.subarray(10 * width, 21 * width), ...other.subarray(width), ...q.subarray(21 * width, 23 * width)),
        s.nHeads,
      );
      assertSameBits(mixed.subarray(width, 12 * width), full.subarray(10 * width, 21 * width), `${label} mixed batch`);
      assertSameBits(mixed.subarray(13 * width), full.subarray(21 * width, 23 * width), `${label} mixed batch tail`);
      const order = [40, 3, 41, 0, 42, 17];
      const shuffled = sw.attend(order.map((pos) => ({ seq: 0, pos })), Float32Array.of(...order.flatMap((p) => [...q.subarray(p * width, (p + 1) * width)])), s.nHeads);
      order.forEach((p, i) => assertSameBits(shuffled.subarray(i * width, (i + 1) * width), full.subarray(p * width, (p + 1) * width), `${label} row ${p} in a shuffled batch`));
      ref!.release(marks[0]!);
      wasm!.release(marks[1]!);
    });
  }
}

test('attention tile: a masked-out token holding inf does not leak into earlier rows', () => {
  // rows at positions 0..3 share a tile; token 3's V is inf, which only row 3 may see
  const k = wasm!;
  const mark = k.mark();
  const shape = { nLayers: 1, nKvHeads: 1, headDim: 8, blockSize: 4, dtype: 'f32' as const };
  const scen = new KvScenario(k, shape, [4], 0, 41);
  const vAt = scen.pool.base + (1 * 4 + 3) * 8 * 4; // block 0 (its only block), V plane, token 3
  const tableBlock = scen.tables[0]![0]!;
  const blockBytes = 2 * 4 * 8 * 4;
  k.f32(vAt + tableBlock * blockBytes, 8).fill(Infinity);
  const rows = [0, 1, 2, 3].map((pos) => ({ seq: 0, pos }));
  const out = scen.attend(rows, randomF32(4 * 8, rng(42)), 1);
  for (let i = 0; i < 3 * 8; i++) assert.ok(Number.isFinite(out[i]!), `row ${Math.floor(i / 8)} dim ${i % 8}: ${out[i]}`);
  assert.ok(out.subarray(3 * 8).every((v) => !Number.isFinite(v)), 'row 3 attends to the inf token');
  k.release(mark);
});

test('matmul q8_0 with M ≥ 16 (f32-widened panels): rows equal M = 1 rows and the reference, bit for bit', () => {
  // K 2048: one widened panel is 64 KiB, so several panel groups; N not a multiple of 8
  for (const [N, K, M] of [[100, 2048, 21], [384, 128, 37], [13, 64, 16]] as const) {
    const m = { type: 'q8_0' as const, rows: N, cols: K, data: quantizeQ8(randomF32(N * K, rng(N + K)), N, K) };
    const x = randomF32(M * K, rng(M), 2);
    const results = [ref!, wasm!].map((k) => {
      const mark = k.mark();
      const w = k.packMatrix(m);
      const xp = putF32(k, x);
      const out = k.alloc(M * N * 4);
      k.matmul(out, xp, w, M);
      const all = k.f32(out, M * N).slice();
      if (k === wasm) {
        for (let r = 0; r < M; r++) {
          const o = k.alloc(N * 4);
          k.matmul(o, xp + r * K * 4, w, 1);
          assertSameBits(k.f32(o, N), all.subarray(r * N, (r + 1) * N), `q8_0 ${N}x${K} row ${r} alone vs in M = ${M}`);
        }
      }
      k.release(mark);
      return all;
    });
    assertSameBits(results[1]!, results[0]!, `q8_0 ${N}x${K} M = ${M}: wasm vs reference`);
  }
});
