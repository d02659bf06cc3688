// wasm vs reference on random data, for every kernel and odd shapes. Kernels whose operation order is
// the same in both backends (matmul, embed, rmsnorm, rope, kvWrite, addInPlace) must agree bit for bit;
// attention (4-lane q·k in wasm) and swiglu (exp) within 1e-5 relative.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Matrix } from '../../src/model/types.ts';
import type { Kernels, KvDtype } from '../../src/kernels/index.ts';
import { KvScenario, backends, bits, maxRelErr, putF32, putI32, quantizeQ8, randomF32, rng } from './helpers.ts';

const [ref, wasm] = await backends();
const both = [ref!, wasm!] as const;

/** Runs fn on both backends, each in its own scratch mark, and returns both results. */
function run(fn: (k: Kernels) => Float32Array): [Float32Array, Float32Array] {
  return both.map((k) => {
    const m = k.mark();
    try {
      return fn(k);
    } finally {
      k.release(m);
    }
  }) as [Float32Array, Float32Array];
}

function matrix(type: 'f32' | 'q8_0', rows: number, cols: number, seed: number): Matrix {
  const data = randomF32(rows * cols, rng(seed));
  return type === 'f32' ? { type, rows, cols, data } : { type, rows, cols, data: quantizeQ8(data, rows, cols) };
}

const matmulShapes: [type: 'f32' | 'q8_0', N: number, K: number][] = [
  ['f32', 172, 37], // N not a multiple of 8, K not a multiple of 4
  ['f32', 512, 64],
  ['f32', 32, 288],
  ['f32', 5, 3],
  ['f32', 520, 288], // large enough for the panel-grouped order at M ≥ 16
  ['q8_0', 172, 64],
  ['q8_0', 512, 96],
  ['q8_0', 32, 288],
  ['q8_0', 9, 32],
];

for (const [type, N, K] of matmulShapes) {
  test(`matmul ${type} ${N}x${K}: wasm equals reference bit for bit`, () => {
    const m = matrix(type, N, K, N * 1000 + K);
    for (const M of [1, 2, 3, 4, 5, 6, 17]) {
      const x = randomF32(M * K, rng(M + K));
      const [a, b] = run((k) => {
        // a guard zone around the output must stay untouched (partial panels, repeated tile rows)
        const out = k.alloc(M * N * 4 + 512);
        k.f32(out, M * N + 128).fill(-7);
        k.matmul(out + 256, putF32(k, x), k.packMatrix(m), M);
        const all = k.f32(out, M * N + 128);
        assert.ok(all.subarray(0, 64).every((v) => v === -7) && all.subarray(64 + M * N).every((v) => v === -7), `${k.name}: wrote outside out`);
        return all.slice(64, 64 + M * N);
      });
      assert.ok(maxRelErr(b, a) <= 1e-5, `M=${M}: rel err ${maxRelErr(b, a)}`);
      assert.deepEqual(bits(b), bits(a), `M=${M}: not bit-identical`);
    }
  });
}

test('matmul q8_0 matches a dense f32 matmul of the dequantized weights', () => {
  const N = 40, K = 64, M = 3;
  const q = matrix('q8_0', N, K, 7) as Extract<Matrix, { type: 'q8_0' }>;
  const deq = new Float32Array(N * K);
  for (const k of both) {
    const m = k.mark();
    const t = k.packMatrix(q);
    const ids = putI32(k, Array.from({ length: N }, (_, i) => i));
    const out = k.alloc(N * K * 4);
    k.embed(out, t, ids, N);
    deq.set(k.f32(out, N * K));
    k.release(m);
  }
  const x = randomF32(M * K, rng(8));
  const [a, b] = run((k) => {
    const out = k.alloc(M * N * 4);
    k.matmul(out, putF32(k, x), k.packMatrix(q), M);
    return k.f32(out, M * N).slice();
  });
  for (let r = 0; r < M; r++) {
    for (let n = 0; n < N; n++) {
      let s = 0;
      for (let i = 0; i < K; i++) s += x[r * K + i]! * deq[n * K + i]!;
      assert.ok(Math.abs(a[r * N + n]! - s) <= 1e-4 * Math.max(1, Math.abs(s)), `reference (${r},${n}): ${a[r * N + n]} vs ${s}`);
      assert.ok(Math.abs(b[r * N + n]! - s) <= 1e-4 * Math.max(1, Math.abs(s)), `wasm (${r},${n}): ${b[r * N + n]} vs ${s}`);
    }
  }
});

for (const type of ['f32', 'q8_0'] as const) {
  test(`embed ${type}: rows of the table, identical in both backends`, () => {
    const N = 45, K = 64;
    const m = matrix(type, N, K, 3);
    const ids = [0, 44, 7, 8, 7, 31];
    const [a, b] = run((k) => {
      const out = k.alloc(ids.length * K * 4);
      k.embed(out, k.packMatrix(m), putI32(k, ids), ids.length);
      return k.f32(out, ids.length * K).slice();
    });
    assert.deepEqual(bits(b), bits(a));
    if (m.type === 'f32') {
      for (let r = 0; r < ids.length; r++) assert.deepEqual(a.subarray(r * K, (r + 1) * K), m.data.subarray(ids[r]! * K, (ids[r]! + 1) * K));
    }
  });
}

test('embed rejects out-of-range ids', () => {
  for (const k of both) {
    const m = k.mark();
    const t = k.packMatrix(matrix('f32', 4, 8, 1));
    assert.throws(() => k.embed(k.alloc(64), t, putI32(k, [4]), 1), /out of range/);
    assert.throws(() => k.embed(k.alloc(64), t, putI32(k, [-1]), 1), /out of range/);
    k.release(m);
  }
});

for (const dim of [172, 288, 7]) {
  test(`rmsnorm dim ${dim}: bit-identical, in place or not`, () => {
    const rows = 5;
    const x = randomF32(rows * dim, rng(dim), 3);
    const w = randomF32(dim, rng(dim + 1));
    const [a, b] = run((k) => {
      const out = k.alloc(rows * dim * 4);
      k.rmsnorm(out, putF32(k, x), putF32(k, w), rows, dim, 1e-5);
      return k.f32(out, rows * dim).slice();
    });
    assert.deepEqual(bits(b), bits(a));
    const [c, d] = run((k) => {
      const xp = putF32(k, x);
      k.rmsnorm(xp, xp, putF32(k, w), rows, dim, 1e-5);
      return k.f32(xp, rows * dim).slice();
    });
    assert.deepEqual(bits(c), bits(a));
    assert.deepEqual(bits(d), bits(a));
    // against an f64 computation
    for (let r = 0; r < rows; r++) {
      let ss = 0;
      for (let j = 0; j < dim; j++) ss += x[r * dim + j]! ** 2;
      const inv = 1 / Math.sqrt(ss / dim + 1e-5);
      for (let j = 0; j < dim; j++) {
        const want = x[r * dim + j]! * inv * w[j]!;
        assert.ok(Math.abs(a[r * dim + j]! - want) <= 1e-5 * Math.max(1, Math.abs(want)));
      }
    }
  });
}

for (const style of ['interleaved', 'neox'] as const) {
  for (const headDim of [8, 16, 64, 6]) {
    test(`rope ${style} headDim ${headDim}: bit-identical and a rotation`, () => {
      const nHeads = 3, rows = 4;
      const positions = [0, 1, 17, 4095];
      const x = randomF32(rows * nHeads * headDim, rng(headDim));
      const [a, b] = run((k) => {
        const xp = putF32(k, x);
        k.rope(xp, putI32(k, positions), rows, nHeads, headDim, 10000, style);
        return k.f32(xp, rows * nHeads * headDim).slice();
      });
      assert.deepEqual(bits(b), bits(a));
      const half = headDim / 2;
      for (let r = 0; r < rows; r++) {
        for (let h = 0; h < nHeads; h++) {
          for (let i = 0; i < half; i++) {
            const at = (r * nHeads + h) * headDim;
            const [i0, i1] = style === 'neox' ? [at + i, at + i + half] : [at + 2 * i, at + 2 * i + 1];
            const angle = positions[r]! * Math.pow(10000, (-2 * i) / headDim);
            const c = Math.cos(angle), s = Math.sin(angle);
            const want0 = x[i0]! * c - x[i1]! * s, want1 = x[i0]! * s + x[i1]! * c;
            // f32 angles (as llama2.c): error grows with position
            const tol = 1e-5 + positions[r]! * 2e-7;
            assert.ok(Math.abs(a[i0]! - want0) <= tol && Math.abs(a[i1]! - want1) <= tol, `pos ${positions[r]} pair ${i}`);
          }
        }
      }
      if (positions[0] === 0) assert.deepEqual(a.subarray(0, nHeads * headDim), x.subarray(0, nHeads * headDim));
    });
  }
}

test('swiglu: within 1e-5, and silu(x)·up', () => {
  const n = 771;
  const g = randomF32(n, rng(1), 8), u = randomF32(n, rng(2), 2);
  g[0] = 0; g[1] = -100; g[2] = 100; g[3] = -0;
  const [a, b] = run((k) => {
    const gp = putF32(k, g);
    k.swiglu(gp, putF32(k, u), n);
    return k.f32(gp, n).slice();
  });
  assert.ok(maxRelErr(b, a) <= 1e-5, `rel err ${maxRelErr(b, a)}`);
  for (let i = 0; i < n; i++) {
    const want = (g[i]! / (1 + Math.exp(-g[i]!))) * u[i]!;
    assert.ok(Math.abs(a[i]! - want) <= 1e-5 * Math.max(1, Math.abs(want)), `i=${i}`);
  }
});

test('swiglu: exp accurate over the whole f32 range (dense sweep, inf, nan)', () => {
  const g: number[] = [];
  for (let x = -120; x <= 120; x += 0.01) g.push(x);
  g.push(-Infinity, Infinity, NaN, 88.5, 88.72, 88.73, -87.3, -87.4, 1e-30, -1e-30);
  const n = g.length;
  const [a, b] = run((k) => {
    const gp = putF32(k, g);
    k.swiglu(gp, putF32(k, new Float32Array(n).fill(1)), n);
    return k.f32(gp, n).slice();
  });
  for (let i = 0; i < n; i++) {
    const x = Math.fround(g[i]!);
    const want = x === -Infinity ? NaN : x === Infinity ? Infinity : x / (1 + Math.exp(-x)); // -inf·0 is NaN, as in f32
    for (const [name, got] of [['reference', a[i]!], ['wasm', b[i]!]] as const) {
      if (Number.isNaN(want)) assert.ok(Number.isNaN(got), `${name} silu(${x}) = ${got}, want NaN`);
      else assert.ok(got === want || Math.abs(got - want) <= 1e-6 * Math.max(1, Math.abs(want)), `${name} silu(${x}) = ${got}, want ${want}`);
    }
  }
});

test('addInPlace: bit-identical, odd length', () => {
  const n = 37;
  const x = randomF32(n, rng(5)), y = randomF32(n, rng(6));
  const [a, b] = run((k) => {
    const xp = putF32(k, x);
    k.addInPlace(xp, putF32(k, y), n);
    return k.f32(xp, n).slice();
  });
  assert.deepEqual(bits(b), bits(a));
  for (let i = 0; i < n; i++) assert.equal(a[i], Math.fround(x[i]! + y[i]!));
});

const kvShapes: { nKvHeads: number; headDim: number; nHeads: number; blockSize: number }[] = [
  { nKvHeads: 2, headDim: 16, nHeads: 6, blockSize: 16 }, // kvDim 32, GQA group 3
  { nKvHeads: 1, headDim: 8, nHeads: 2, blockSize: 4 },
  { nKvHeads: 4, headDim: 64, nHeads: 4, blockSize: 16 }, // MHA
  { nKvHeads: 2, headDim: 6, nHeads: 4, blockSize: 5 }, // headDim not a multiple of 4
];

for (const dtype of ['f32', 'f16'] as KvDtype[]) {
  for (const s of kvShapes) {
    const label = `${dtype} nKvHeads ${s.nKvHeads} headDim ${s.headDim} nHeads ${s.nHeads} blockSize ${s.blockSize}`;
    test(`kvWrite + attention ${label}: wasm vs reference`, () => {
      const shape = { nLayers: 3, nKvHeads: s.nKvHeads, headDim: s.headDim, blockSize: s.blockSize, dtype };
      const lengths = [1, 9, 40, 23];
      const marks = both.map((k) => k.mark());
      const scen = both.map((k) => new KvScenario(k, shape, lengths, 1, 11));
      // the pools must be byte-identical after kvWrite
      const bytes = scen[0]!.pool.numBlocks * (scen[0]!.pool.nLayers * 2 * s.blockSize * s.nKvHeads * s.headDim) * (dtype === 'f16' ? 2 : 4);
      assert.deepEqual(ref!.u8(scen[0]!.pool.base, bytes), wasm!.u8(scen[1]!.pool.base, bytes));
      const rows = [
        { seq: 0, pos: 0 },
        { seq: 2, pos: 39 },
        { seq: 1, pos: 3 },
        { seq: 3, pos: 22 },
        { seq: 2, pos: 16 },
      ];
      const q = randomF32(rows.length * s.nHeads * s.headDim, rng(12), 2);
      const a = scen[0]!.attend(rows, q, s.nHeads);
      const b = scen[1]!.attend(rows, q, s.nHeads);
      assert.ok(maxRelErr(b, a) <= 1e-5, `rel err ${maxRelErr(b, a)}`);
      // against an f64 computation from the f32 inputs (f16 pools: compare loosely, the pool rounds)
      const tol = dtype === 'f32' ? 1e-5 : 2e-3;
      const width = s.nHeads * s.headDim;
      const kvDim = s.nKvHeads * s.headDim;
      const group = s.nHeads / s.nKvHeads;
      rows.forEach(({ seq, pos }, r) => {
        for (let h = 0; h < s.nHeads; h++) {
          const kvh = Math.floor(h / group);
          const scores: number[] = [];
          for (let t = 0; t <= pos; t++) {
            let dot = 0;
            for (let i = 0; i < s.headDim; i++) dot += q[r * width + h * s.headDim + i]! * scen[0]!.k[seq]![t * kvDim + kvh * s.headDim + i]!;
            scores.push(dot / Math.sqrt(s.headDim));
          }
          const mx = Math.max(...scores);
          const e = scores.map((x) => Math.exp(x - mx));
          const sum = e.reduce((x, y) => x + y, 0);
          for (let i = 0; i < s.headDim; i++) {
            let want = 0;
            for (let t = 0; t <= pos; t++) want += (e[t]! / sum) * scen[0]!.v[seq]![t * kvDim + kvh * s.headDim + i]!;
            const got = a[r * width + h * s.headDim + i]!;
            assert.ok(Math.abs(got - want) <= tol, `row ${r} head ${h} dim ${i}: ${got} vs ${want}`);
          }
        }
      });
      both.forEach((k, i) => k.release(marks[i]!));
    });
  }
}

test('attention with a wide score range (most weights underflow): wasm vs reference', () => {
  for (const dtype of ['f32', 'f16'] as KvDtype[]) {
    const shape = { nLayers: 1, nKvHeads: 2, headDim: 32, blockSize: 8, dtype };
    const marks = both.map((k) => k.mark());
    const scen = both.map((k) => new KvScenario(k, shape, [70], 0, 5));
    const rows = [{ seq: 0, pos: 69 }, { seq: 0, pos: 3 }];
    const q = randomF32(rows.length * 4 * 32, rng(6), 60);
    const a = scen[0]!.attend(rows, q, 4);
    const b = scen[1]!.attend(rows, q, 4);
    assert.ok(maxRelErr(b, a) <= 1e-5, `${dtype}: rel err ${maxRelErr(b, a)}`);
    both.forEach((k, i) => k.release(marks[i]!));
  }
});

test('argument checks: precise errors, no wasm traps', () => {
  for (const k of both) {
    assert.throws(() => k.packMatrix({ type: 'f32', rows: 2, cols: 3, data: new Float32Array(5) }), /needs 6 values/);
    assert.throws(() => k.packMatrix({ type: 'q8_0', rows: 1, cols: 31, data: new Uint8Array(34) }), /multiple of 32/);
    assert.throws(() => k.packMatrix({ type: 'q8_0', rows: 1, cols: 32, data: new Uint8Array(33) }), /needs 34 bytes/);
    const other = both.find((o) => o !== k)!;
    const w = other.packMatrix({ type: 'f32', rows: 1, cols: 1, data: new Float32Array(1) });
    assert.throws(() => k.matmul(0, 0, w, 1), /not packed by this Kernels/);
    const pool = { base: 65536, numBlocks: 2, blockSize: 4, nLayers: 2, nKvHeads: 2, headDim: 8, dtype: 'f16' as const };
    assert.throws(() => k.kvWrite(pool, 2, 0, 0, 0, 0), /layer 2 out of range/);
    assert.throws(() => k.kvWrite({ ...pool, dtype: 'bf16' as 'f16' }, 0, 0, 0, 0, 0), /dtype/);
    const m = k.mark();
    assert.throws(() => k.kvWrite(pool, 0, 0, 0, putI32(k, [8]), 1), /slot 8 out of range/);
    assert.throws(() => k.attention(0, 0, pool, 0, 3, 0, 0, 0, 0), /multiple of nKvHeads/);
    assert.throws(() => k.rope(0, putI32(k, [-1]), 1, 1, 8, 10000, 'neox'), /position/);
    assert.throws(() => k.rope(0, 0, 1, 1, 7, 10000, 'neox'), /headDim/);
    assert.throws(() => k.rope(0, 0, 1, 1, 8, 10000, 'gptj' as 'neox'), /rope style/);
    assert.throws(() => k.matmul(0, 0, k.packMatrix({ type: 'f32', rows: 1, cols: 1, data: new Float32Array(1) }), 1.5), /rows/);
    k.release(m);
  }
});
