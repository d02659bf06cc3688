// Batch invariance: a row computed alone is bit-identical to the same row inside batches of any size
// and at any offset (compared as Uint32 bit patterns), for every kernel, both backends, f32 and q8_0
// weights, f32 and f16 KV.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Matrix } from '../../src/model/types.ts';
import type { Kernels, KvDtype } from '../../src/kernels/index.ts';
import { KvScenario, backends, bits, putF32, putI32, quantizeQ8, randomF32, rng } from './helpers.ts';

const [ref, wasm] = await backends();

/** [start, size] windows over `total` rows: singles, every small size at a few offsets, the whole batch. */
function windows(total: number): [number, number][] {
  const out: [number, number][] = [];
  for (let r = 0; r < total; r++) out.push([r, 1]);
  for (const size of [2, 3, 4, 5, 7, 8, 9, 16, 17, 31]) {
    for (const start of [0, 1, 3, total - size]) if (size <= total && start >= 0 && start + size <= total) out.push([start, size]);
  }
  out.push([0, total]);
  return out;
}

function assertRowsEqual(got: Float32Array, want: Float32Array, width: number, start: number, what: string): void {
  const g = bits(got), w = bits(want.subarray(start * width, start * width + got.length));
  for (let i = 0; i < g.length; i++) {
    if (g[i] !== w[i]) assert.fail(`${what}: row ${start + Math.floor(i / width)} col ${i % width} differs (${got[i]} vs ${want[start * width + i]})`);
  }
}

function matmulInvariance(k: Kernels, m: Matrix, total: number): void {
  const K = m.cols, N = m.rows;
  const mark = k.mark();
  const w = k.packMatrix(m);
  const x = putF32(k, randomF32(total * K, rng(N + K)));
  const out = k.alloc(total * N * 4);
  k.matmul(out, x, w, total);
  const full = k.f32(out, total * N).slice();
  for (const [start, size] of windows(total)) {
    const o = k.alloc(size * N * 4);
    k.matmul(o, x + start * K * 4, w, size);
    assertRowsEqual(k.f32(o, size * N), full, N, start, `${k.name} matmul ${m.type} ${N}x${K} rows [${start}, +${size})`);
  }
  k.release(mark);
}

const f32Data = (rows: number, cols: number, seed: number) => randomF32(rows * cols, rng(seed));

for (const k of [ref!, wasm!]) {
  test(`${k.name}: matmul f32 rows identical in any batch`, () => {
    matmulInvariance(k, { type: 'f32', rows: 172, cols: 37, data: f32Data(172, 37, 1) }, 33);
    matmulInvariance(k, { type: 'f32', rows: 32, cols: 64, data: f32Data(32, 64, 2) }, 20);
    if (k === wasm) {
      // big enough that M ≥ 16 switches to the panel-grouped loop order
      matmulInvariance(k, { type: 'f32', rows: 1000, cols: 288, data: f32Data(1000, 288, 3) }, 40);
    }
  });

  test(`${k.name}: matmul q8_0 rows identical in any batch`, () => {
    matmulInvariance(k, { type: 'q8_0', rows: 172, cols: 64, data: quantizeQ8(f32Data(172, 64, 4), 172, 64) }, 33);
    if (k === wasm) {
      matmulInvariance(k, { type: 'q8_0', rows: 520, cols: 1024, data: quantizeQ8(f32Data(520, 1024, 5), 520, 1024) }, 36);
    }
  });

  test(`${k.name}: embed, rmsnorm, rope, swiglu, addInPlace rows identical in any batch`, () => {
    const mark = k.mark();
    const total = 19, dim = 172, nHeads = 2, headDim = 86;
    const x = randomF32(total * dim, rng(9), 2);
    const y = randomF32(total * dim, rng(10), 2);
    const weight = putF32(k, randomF32(dim, rng(11)));
    const positions = Array.from({ length: total }, (_, i) => (i * 37) % 101);
    const tableQ8 = k.packMatrix({ type: 'q8_0', rows: 50, cols: 64, data: quantizeQ8(f32Data(50, 64, 12), 50, 64) });
    const ids = Array.from({ length: total }, (_, i) => (i * 7) % 50);

    type Op = (rows: number, start: number) => Float32Array;
    const ops: [string, number, Op][] = [
      ['embed q8_0', 64, (rows, start) => {
        const out = k.alloc(rows * 64 * 4);
        k.embed(out, tableQ8, putI32(k, ids.slice(start, start + rows)), rows);
        return k.f32(out, rows * 64);
      }],
      ['rmsnorm', dim, (rows, start) => {
        const out = k.alloc(rows * dim * 4);
        k.rmsnorm(out, putF32(k, x.subarray(start * dim, (start + rows) * dim)), weight, rows, dim, 1e-6);
        return k.f32(out, rows * dim);
      }],
      ...(['interleaved', 'neox'] as const).map((style): [string, number, Op] => [`rope ${style}`, dim, (rows, start) => {
        const p = putF32(k, x.subarray(start * dim, (start + rows) * dim));
        k.rope(p, putI32(k, positions.slice(start, start + rows)), rows, nHeads, headDim, 500000, style);
        return k.f32(p, rows * dim);
      }]),
      // elementwise kernels: a "row" is a dim-sized slice; windows also shift SIMD lane alignment
      ['swiglu', dim, (rows, start) => {
        const g = putF32(k, x.subarray(start * dim, (start + rows) * dim));
        k.swiglu(g, putF32(k, y.subarray(start * dim, (start + rows) * dim)), rows * dim);
        return k.f32(g, rows * dim);
      }],
      ['addInPlace', dim, (rows, start) => {
        const a = putF32(k, x.subarray(start * dim, (start + rows) * dim));
        k.addInPlace(a, putF32(k, y.subarray(start * dim, (start + rows) * dim)), rows * dim);
        return k.f32(a, rows * dim);
      }],
    ];
    for (const [name, width, op] of ops) {
      const full = op(total, 0).slice();
      for (const [start, size] of windows(total)) assertRowsEqual(op(size, start), full, width, start, `${k.name} ${name} [${start}, +${size})`);
    }
    // elementwise at odd element offsets (unaligned SIMD, tails in different places)
    for (const off of [1, 2, 3, 5]) {
      const n = 41;
      const g = putF32(k, x.subarray(0, 64));
      k.swiglu(g + off * 4, putF32(k, y.subarray(off, off + n)), n);
      const want = (() => {
        const gg = putF32(k, x.subarray(off, off + n));
        k.swiglu(gg, putF32(k, y.subarray(off, off + n)), n);
        return k.f32(gg, n).slice();
      })();
      assert.deepEqual(bits(k.f32(g + off * 4, n)), bits(want), `${k.name} swiglu at offset ${off}`);
      const a = putF32(k, x.subarray(0, 64));
      k.addInPlace(a + off * 4, putF32(k, y.subarray(off, off + n)), n);
      assert.deepEqual(bits(k.f32(a + off * 4, n)), bits(Float32Array.from(x.subarray(off, off + n), (v, i) => Math.fround(v + y[off + i]!))));
    }
    k.release(mark);
  });

  for (const dtype of ['f32', 'f16'] as KvDtype[]) {
    test(`${k.name}: kvWrite and attention (${dtype} KV, scattered block tables) identical in any batch`, () => {
      const mark = k.mark();
      const shape = { nLayers: 2, nKvHeads: 2, headDim: 16, blockSize: 8, dtype };
      const lengths = [3, 29, 64, 17, 1];
      const scen = new KvScenario(k, shape, lengths, 1, 21);
      const nHeads = 4;
      const width = nHeads * shape.headDim;
      // queries: several positions of each sequence, interleaved across sequences
      const rows: { seq: number; pos: number }[] = [];
      for (let i = 0; i < 24; i++) {
        const seq = (i * 3) % lengths.length;
        rows.push({ seq, pos: (i * 11) % lengths[seq]! });
      }
      const q = randomF32(rows.length * width, rng(22));
      const full = scen.attend(rows, q, nHeads);
      for (const [start, size] of windows(rows.length)) {
        const got = scen.attend(rows.slice(start, start + size), q.subarray(start * width, (start + size) * width), nHeads);
        assertRowsEqual(got, full, width, start, `${k.name} attention ${dtype} [${start}, +${size})`);
      }
      // reversed order
      const rev = scen.attend(rows.slice().reverse(), Float32Array.from({ length: q.length }, (_, i) => q[(rows.length - 1 - Math.floor(i / width)) * width + (i % width)]!), nHeads);
      for (let r = 0; r < rows.length; r++) {
        assert.deepEqual(bits(rev.subarray(r * width, (r + 1) * width)), bits(full.subarray((rows.length - 1 - r) * width, (rows.length - r) * width)));
      }

      // kvWrite one row at a time gives the same pool bytes as one call for all rows
      const poolBytes = scen.pool.numBlocks * shape.nLayers * 2 * shape.blockSize * shape.nKvHeads * shape.headDim * (dtype === 'f16' ? 2 : 4);
      const before = k.u8(scen.pool.base, poolBytes).slice();
      const kvDim = shape.nKvHeads * shape.headDim;
      const seq = 2;
      const slots = Array.from({ length: lengths[seq]! }, (_, t) => scen.tables[seq]![Math.floor(t / shape.blockSize)]! * shape.blockSize + (t % shape.blockSize));
      k.u8(scen.pool.base, poolBytes).fill(0xee);
      // sequences 0, 1, 3, 4 in one call, sequence 2 token by token
      const allK = putF32(k, [...scen.k[0]!, ...scen.k[1]!, ...scen.k[3]!, ...scen.k[4]!]);
      const allV = putF32(k, [...scen.v[0]!, ...scen.v[1]!, ...scen.v[3]!, ...scen.v[4]!]);
      const allSlots = [0, 1, 3, 4].flatMap((s) => Array.from({ length: lengths[s]! }, (_, t) => scen.tables[s]![Math.floor(t / shape.blockSize)]! * shape.blockSize + (t % shape.blockSize)));
      k.kvWrite(scen.pool, 1, allK, allV, putI32(k, allSlots), allSlots.length);
      for (let t = 0; t < lengths[seq]!; t++) {
        k.kvWrite(scen.pool, 1, putF32(k, scen.k[seq]!.subarray(t * kvDim, (t + 1) * kvDim)), putF32(k, scen.v[seq]!.subarray(t * kvDim, (t + 1) * kvDim)), putI32(k, [slots[t]!]), 1);
      }
      const after = k.u8(scen.pool.base, poolBytes);
      const elt = dtype === 'f16' ? 2 : 4;
      const planeBytes = shape.blockSize * kvDim * elt;
      // every slot of every sequence (layer 1) holds the same bytes as after the original writes
      for (const [s, len] of lengths.entries()) {
        for (let t = 0; t < len; t++) {
          const b = scen.tables[s]![Math.floor(t / shape.blockSize)]!, off = t % shape.blockSize;
          for (let kv = 0; kv < 2; kv++) {
            const at = ((b * shape.nLayers + 1) * 2 + kv) * planeBytes + off * kvDim * elt;
            assert.deepEqual(after.subarray(at, at + kvDim * elt), before.subarray(at, at + kvDim * elt), `seq ${s} token ${t} kv ${kv}`);
          }
        }
      }
      k.release(mark);
    });
  }
}
