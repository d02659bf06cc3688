// The wire checksum: the hand-assembled WebAssembly SIMD Fletcher-4 against a plain BigInt
// reference of the documented algorithm, for every way of feeding the bytes (in place in a shared
// memory, through the scratch copy, in odd-sized pieces), and its sensitivity to small errors.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { anyChecksum, checksumIn, FrameChecksum, frameChecksum } from '../../src/kvconnector/checksum.ts';

const M64 = (1n << 64n) - 1n;

/** docs/kv-connector.md "Frame checksum", written out the slow way. */
function reference(bytes: Uint8Array): number {
  const padded = new Uint8Array(Math.ceil(bytes.length / 16) * 16);
  padded.set(bytes);
  const dv = new DataView(padded.buffer);
  const sums = Array.from({ length: 4 }, () => [0n, 0n, 0n, 0n]); // [A, B, C, D] per stream
  for (let i = 0; i < padded.length; i += 4) {
    const s = sums[(i / 4) % 4]!;
    s[0] = (s[0]! + BigInt(dv.getUint32(i, true))) & M64;
    for (let k = 1; k < 4; k++) s[k] = (s[k]! + s[k - 1]!) & M64;
  }
  // Fold order: A of streams 0..3, then B, C, D.
  const ordered = [0, 1, 2, 3].flatMap((k) => sums.map((s) => s[k]!));
  let h = BigInt(bytes.length);
  for (const v of ordered) {
    h = ((h ^ v) * 0x9e3779b97f4a7c15n) & M64;
    h ^= h >> 32n;
  }
  h ^= h >> 30n;
  h = (h * 0xbf58476d1ce4e5b9n) & M64;
  h ^= h >> 27n;
  h = (h * 0x94d049bb133111ebn) & M64;
  h ^= h >> 31n;
  return Number(h & 0xffffffffn);
}

function pseudoRandom(n: number, seed: number): Uint8Array {
  const b = new Uint8Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    b[i] = s >>> 24;
  }
  return b;
}

const SIZES = [0, 1, 3, 4, 12, 15, 16, 17, 31, 32, 33, 48, 63, 64, 65, 255, 256, 1000, 4096, 65_536 + 7, 200_003];

test('matches the reference for every length, fed whole', () => {
  for (const n of SIZES) {
    const b = pseudoRandom(n, n + 1);
    assert.equal(frameChecksum(b), reference(b), `${n} bytes`);
  }
});

test('matches the reference however the bytes are split, in place or copied', () => {
  const memory = new WebAssembly.Memory({ initial: 8, maximum: 8, shared: true });
  const inPlace = checksumIn(memory);
  for (const n of SIZES) {
    const ref = reference(pseudoRandom(n, 7 * n));
    const inMemory = new Uint8Array(memory.buffer, 100, n); // deliberately not 16-aligned
    inMemory.set(pseudoRandom(n, 7 * n));
    for (const piece of [1, 5, 16, 17, 300, 70_000]) {
      const c = inPlace.begin();
      for (let o = 0; o < n; o += piece) c.update(inMemory.subarray(o, Math.min(n, o + piece)));
      assert.equal(c.end(), ref, `${n} bytes in place, pieces of ${piece}`);
      const d = anyChecksum().begin();
      const copy = Buffer.from(inMemory);
      for (let o = 0; o < n; o += piece) d.update(copy.subarray(o, Math.min(n, o + piece)));
      assert.equal(d.end(), ref, `${n} bytes copied, pieces of ${piece}`);
    }
  }
  // A private (non-shared) memory works the same.
  const own = new FrameChecksum(new WebAssembly.Memory({ initial: 1 }));
  const b = pseudoRandom(5000, 3);
  new Uint8Array(own.memory.buffer).set(b, 64);
  assert.equal(own.begin().updateAt(64, 5000).end(), reference(b));
});

test('single-bit flips, swapped words, zero runs and appended zeros all change it', () => {
  const b = pseudoRandom(4096, 9);
  const base = frameChecksum(b);
  for (let bit = 0; bit < b.length * 8; bit += 61) {
    const c = Uint8Array.from(b);
    c[bit >> 3]! ^= 1 << (bit & 7);
    assert.notEqual(frameChecksum(c), base, `bit ${bit}`);
  }
  const swapped = Uint8Array.from(b);
  swapped.set(b.subarray(0, 4), 16);
  swapped.set(b.subarray(16, 20), 0);
  assert.notEqual(frameChecksum(swapped), base, 'two words swapped');
  assert.notEqual(frameChecksum(new Uint8Array(4097).fill(0, 0)), frameChecksum(new Uint8Array(4096)), 'length matters');
  assert.notEqual(frameChecksum(new Uint8Array(64)), frameChecksum(new Uint8Array(64).fill(0xff)));
});
