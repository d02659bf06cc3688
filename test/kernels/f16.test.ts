// f16 (IEEE binary16) conversion exactness: the JS helpers, both backends' kvWrite (f32 → f16) and
// the wasm attention's f16 reads (f16 → f32), on edge values and exhaustively.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { f16ToF32, f32ToF16, kvBlockBytes } from '../../src/kernels/index.ts';
import { backends, putF32, putI32 } from './helpers.ts';

const [ref, wasm] = await backends();
const f32bits = (x: number) => new Uint32Array(Float32Array.of(x).buffer)[0]!;
const fromBits = (b: number) => new Float32Array(Uint32Array.of(b).buffer)[0]!;

const edges: [number, number][] = [
  [0, 0x0000],
  [-0, 0x8000],
  [1, 0x3c00],
  [-2, 0xc000],
  [65504, 0x7bff], // largest finite half
  [65519.99, 0x7bff], // just below the rounding boundary
  [65520, 0x7c00], // halfway to 65536: ties to even = inf
  [1e9, 0x7c00],
  [-1e9, 0xfc00],
  [Infinity, 0x7c00],
  [-Infinity, 0xfc00],
  [2 ** -14, 0x0400], // smallest normal
  [2 ** -24, 0x0001], // smallest subnormal
  [2 ** -25, 0x0000], // half of it: tie to even → 0
  [fromBits(f32bits(2 ** -25) + 1), 0x0001], // just above the tie
  [3 * 2 ** -25, 0x0002], // 1.5 units: tie → even (2)
  [5 * 2 ** -25, 0x0002], // 2.5 units: tie → even (2)
  [1023 * 2 ** -24, 0x03ff], // largest subnormal
  [-1023 * 2 ** -24, 0x83ff],
  [1e-10, 0x0000],
  [-1e-10, 0x8000],
  [1 + 2 ** -11, 0x3c00], // tie between 1 and 1+2^-10 → even (1)
  [1 + 3 * 2 ** -11, 0x3c02], // tie → even
  [1 + 2 ** -11 + 2 ** -20, 0x3c01], // above the tie
  [fromBits(1), 0x0000], // f32 subnormal
  [0.1, 0x2e66],
  [-65504, 0xfbff],
];

test('f32ToF16: edge values', () => {
  for (const [x, want] of edges) assert.equal(f32ToF16(x).toString(16), want.toString(16), `f32ToF16(${x})`);
  const nan = f32ToF16(NaN);
  assert.equal(nan & 0x7c00, 0x7c00);
  assert.notEqual(nan & 0x3ff, 0, 'NaN must stay NaN');
  assert.ok(Number.isNaN(f16ToF32(nan)));
  assert.ok(Number.isNaN(f16ToF32(f32ToF16(fromBits(0xff800001)))), 'signalling NaN');
});

test('f16: every finite half round-trips; midpoints round to even; neighbours of midpoints to nearest', () => {
  for (let h = 0; h < 0x7c00; h++) {
    for (const sign of [0, 0x8000]) {
      const v = f16ToF32(sign | h);
      assert.equal(f32ToF16(v), sign | h);
      if (h === 0x7bff) continue;
      const next = f16ToF32(sign | (h + 1));
      const mid = (v + next) / 2; // exact in f32: 12 significant bits
      assert.equal(Math.fround(mid), mid);
      const even = (h & 1) === 0 ? h : h + 1;
      assert.equal(f32ToF16(mid), sign | even, `midpoint after ${h.toString(16)}`);
      // one f32 ulp toward zero / away from zero (bit patterns order magnitudes for either sign)
      assert.equal(f32ToF16(fromBits(f32bits(mid) - 1)), sign | h);
      assert.equal(f32ToF16(fromBits(f32bits(mid) + 1)), sign | (h + 1));
    }
  }
  assert.equal(f16ToF32(0x7c00), Infinity);
  assert.equal(f16ToF32(0xfc00), -Infinity);
  assert.ok(Object.is(f16ToF32(0x8000), -0));
});

test('kvWrite to an f16 pool stores the exact halves in both backends (edges, all halves and midpoints)', () => {
  const values = edges.map(([x]) => x);
  values.push(NaN);
  // a random spread of magnitudes too
  for (let i = 0; i < 500; i++) values.push((i % 2 ? -1 : 1) * 2 ** (-30 + (i * 47) % 48) * (1 + ((i * 7919) % 1000) / 1000));
  // every positive finite half, every midpoint between neighbours, and one f32 ulp either side of it
  for (let h = 0; h < 0x7bff; h++) {
    const mid = (f16ToF32(h) + f16ToF32(h + 1)) / 2;
    values.push(f16ToF32(h), mid, fromBits(f32bits(mid) - 1), fromBits(f32bits(mid) + 1));
  }
  const kvDim = values.length + (values.length % 2); // keep it even: headDim * 1 head
  const layout = { blockSize: 2, nLayers: 1, nKvHeads: 1, headDim: kvDim, dtype: 'f16' as const };
  for (const k of [ref!, wasm!]) {
    const m = k.mark();
    const pool = { ...layout, base: k.alloc(kvBlockBytes(layout)), numBlocks: 1 };
    const kv = new Float32Array(kvDim);
    kv.set(values);
    k.kvWrite(pool, 0, putF32(k, kv), putF32(k, kv.map((x) => -x)), putI32(k, [1]), 1);
    const halves = new Uint16Array(k.memory.buffer, pool.base, kvBlockBytes(layout) / 2);
    for (let e = 0; e < kvDim; e++) {
      assert.equal(halves[e], 0, 'slot 0 untouched');
      const want = f32ToF16(kv[e]!);
      const gotK = halves[kvDim + e]!, gotV = halves[3 * kvDim + e]!;
      if (Number.isNaN(kv[e])) {
        assert.ok(Number.isNaN(f16ToF32(gotK)) && Number.isNaN(f16ToF32(gotV)), `${k.name}: NaN`);
        continue;
      }
      assert.equal(gotK, want, `${k.name}: K ${kv[e]}`);
      assert.equal(gotV, f32ToF16(-kv[e]!), `${k.name}: V ${-kv[e]!}`);
    }
    k.release(m);
  }
});

test('attention reads every f16 value exactly (a single-token context returns V itself)', () => {
  // 1024 rows, each at position 0 of its own one-token block; V of block r holds halves r*64 .. r*64+63.
  const headDim = 64, rows = 1024;
  const layout = { blockSize: 1, nLayers: 1, nKvHeads: 1, headDim, dtype: 'f16' as const };
  for (const k of [ref!, wasm!]) {
    const m = k.mark();
    const pool = { ...layout, base: k.alloc(rows * kvBlockBytes(layout)), numBlocks: rows };
    const halves = new Uint16Array(k.memory.buffer, pool.base, (rows * kvBlockBytes(layout)) / 2);
    for (let r = 0; r < rows; r++) for (let e = 0; e < headDim; e++) halves[(r * 2 + 1) * headDim + e] = r * headDim + e;
    const tables = Array.from({ length: rows }, (_, r) => putI32(k, [r]));
    const out = k.alloc(rows * headDim * 4);
    k.attention(out, k.alloc(rows * headDim * 4), pool, 0, 1, rows, putI32(k, new Array(rows).fill(0)), putI32(k, tables), k.alloc(64));
    const o = k.f32(out, rows * headDim);
    for (let h = 0; h < 65536; h++) {
      const want = f16ToF32(h);
      if (Number.isNaN(want)) assert.ok(Number.isNaN(o[h]), `${k.name}: half ${h.toString(16)} should be NaN`);
      else assert.equal(o[h], want === 0 ? 0 : want, `${k.name}: half ${h.toString(16)}`); // 0 + 1·(-0) = +0
    }
    k.release(m);
  }
});
