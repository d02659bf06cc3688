// The shared memory and bump allocator behind both backends.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createKernels } from '../../src/kernels/index.ts';
import { backends } from './helpers.ts';

const kinds = (await backends()).map((k) => k.name);

for (const kind of kinds) {
  test(`${kind}: shared memory, 64-byte aligned zeroed allocations, mark/release, growth`, async () => {
    const k = await createKernels(kind, { initialBytes: 1 << 17, maximumBytes: 1 << 26 });
    assert.ok(k.memory.buffer instanceof SharedArrayBuffer);
    const a = k.alloc(10);
    assert.ok(a >= 65536, 'the first 64 KiB are reserved');
    assert.equal(a % 64, 0);
    const mark = k.mark();
    const b = k.alloc(100);
    assert.equal(b % 64, 0);
    assert.ok(b >= a + 10);
    k.u8(b, 100).fill(7);
    k.release(mark);
    const c = k.alloc(100);
    assert.equal(c, b, 'release hands the space back');
    assert.ok(k.u8(c, 100).every((x) => x === 0), 'reused space is zeroed');
    // growth keeps old views valid (shared buffers never detach) and new views see the new size
    const view = k.f32(c, 4);
    view[0] = 1.5;
    const before = k.memory.buffer.byteLength;
    const big = k.alloc(4 << 20);
    assert.ok(k.memory.buffer.byteLength > before);
    assert.equal(view[0], 1.5);
    k.f32(big, 1 << 20).fill(2);
    assert.equal(k.f32(c, 1)[0], 1.5);
    assert.throws(() => k.alloc(1 << 27), /cannot grow/);
    assert.throws(() => k.alloc(-1), /non-negative integer/);
    assert.throws(() => k.release(1), /not a mark/);
    assert.throws(() => k.release(k.mark() + 64), /not a mark/);
  });
}

test('createKernels rejects unknown kinds and bad sizes', async () => {
  await assert.rejects(createKernels('gpu' as 'wasm'), /unknown kernels kind/);
  await assert.rejects(createKernels('reference', { initialBytes: 1 << 20, maximumBytes: 1 << 18 }), /exceeds maximumBytes/);
  await assert.rejects(createKernels('wasm', { maximumBytes: -1 }), /maximumBytes/);
  // a small maximum alone is fine: the default initial size shrinks to fit
  const small = await createKernels('wasm', { maximumBytes: 1 << 20 });
  assert.equal(small.memory.buffer.byteLength, 1 << 20);
  assert.throws(() => small.alloc(1 << 20), /cannot grow/);
});
