// Keys, chunk format and --kv-store parsing: the pure parts of the store.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { UsageError } from '../../src/cli/args.ts';
import { ChunkError, chunkKeys, decodeChunk, encodeChunk, HEADER_BYTES, parseKvStoreSpec } from '../../src/kvstore/index.ts';
import { prompt } from './helpers.ts';

const space = { modelFingerprint: 'fp-a', kvDtype: 'f32' as const, chunkTokens: 16 };

test('chunk keys: full chunks only, chained over the whole prefix', () => {
  const t = prompt(16 * 3 + 5);
  const keys = chunkKeys(space, t);
  assert.equal(keys.length, 3);
  assert.ok(keys.every((k) => /^[0-9a-f]{64}$/.test(k)));
  assert.equal(new Set(keys).size, 3);
  // A prompt that shares chunk 0 but differs in chunk 1 shares key 0 only.
  const u = [...t];
  u[20] = (u[20]! + 1) % 32000;
  const k2 = chunkKeys(space, u);
  assert.equal(k2[0], keys[0]);
  assert.notEqual(k2[1], keys[1]);
  // Chaining: chunk 2 differs too although its own tokens are equal.
  assert.notEqual(k2[2], keys[2]);
  // Extending a prompt keeps its keys.
  assert.deepEqual(chunkKeys(space, [...t, ...prompt(40, 9)]).slice(0, 3), keys);
});

test('chunk keys: isolated by cache salt, model fingerprint, dtype and chunk size', () => {
  const t = prompt(32);
  const base = chunkKeys(space, t)[0];
  assert.notEqual(chunkKeys(space, t, 'tenant-b')[0], base);
  assert.notEqual(chunkKeys({ ...space, modelFingerprint: 'fp-b' }, t)[0], base);
  assert.notEqual(chunkKeys({ ...space, kvDtype: 'f16' }, t)[0], base);
  assert.notEqual(chunkKeys({ ...space, chunkTokens: 8 }, t)[0], base);
  assert.equal(chunkKeys(space, t, '')[0], base);
});

test('chunk keys: reject token ids that are not u32', () => {
  assert.throws(() => chunkKeys(space, [...prompt(15), -1]), RangeError);
  assert.throws(() => chunkKeys(space, [...prompt(15), 1.5]), RangeError);
});

test('chunk format: round trip, and every defect is caught', () => {
  const key = chunkKeys(space, prompt(16))[0]!;
  const payload = new Uint8Array(1000).map((_, i) => i * 7);
  const { header } = encodeChunk(key, 'f32', 16, payload);
  assert.equal(header.byteLength, HEADER_BYTES);
  const whole = Buffer.concat([header, payload]);
  const expect: Parameters<typeof decodeChunk>[1] = { key, dtype: 'f32', tokens: 16, payloadBytes: 1000 };
  assert.deepEqual(Buffer.from(decodeChunk(whole, expect)), Buffer.from(payload));

  const reason = (bytes: Uint8Array, e = expect) => {
    try {
      decodeChunk(bytes, e);
    } catch (err) {
      assert.ok(err instanceof ChunkError);
      return err.reason;
    }
    return 'accepted';
  };
  for (const at of [0, 8, 20, 50, HEADER_BYTES, HEADER_BYTES + 999]) {
    const flipped = Buffer.from(whole);
    flipped[at]! ^= 0x10;
    assert.equal(reason(flipped), 'corrupt', `flip at ${at}`);
  }
  assert.equal(reason(whole.subarray(0, whole.length - 1)), 'truncated');
  assert.equal(reason(whole.subarray(0, 10)), 'truncated');
  assert.equal(reason(new Uint8Array(0)), 'truncated');
  assert.equal(reason(Buffer.concat([whole, Buffer.from([0])])), 'corrupt');
  // Valid object, but for another key / dtype / size.
  assert.equal(reason(whole, { ...expect, key: chunkKeys(space, prompt(16, 2))[0]! }), 'corrupt');
  assert.equal(reason(whole, { ...expect, dtype: 'f16' }), 'corrupt');
  assert.equal(reason(whole, { ...expect, payloadBytes: 999 }), 'corrupt');
});

test('--kv-store spec: tiers, sizes and defaults', () => {
  assert.deepEqual(parseKvStoreSpec('memory:1GiB'), { memory: { capacityBytes: 2 ** 30 } });
  const all = parseKvStoreSpec('memory:512MiB,disk:/var/cache/kv:10GiB,redis://10.0.0.5:6380/2');
  assert.deepEqual(all.disk, { dir: '/var/cache/kv', capacityBytes: 10 * 2 ** 30 });
  assert.deepEqual(all.redis, { url: 'redis://10.0.0.5:6380/2', host: '10.0.0.5', port: 6380, db: 2 });
  assert.equal(parseKvStoreSpec('redis://localhost').redis!.port, 6379);
  assert.equal(parseKvStoreSpec('disk:/a:b/c:1MiB').disk!.dir, '/a:b/c');
  // Order in the spec does not matter; a lone tier is fine.
  assert.ok(parseKvStoreSpec('redis://h:1,memory:1MiB').memory);
});

test('--kv-store spec: precise errors', () => {
  const bad: [string, RegExp][] = [
    ['', /empty tier/],
    ['memory:1GiB,', /empty tier/],
    ['memory:lots', /bad memory size 'lots'/],
    ['memory:0', /must be positive/],
    ['disk:/tmp/kv', /needs a directory and a size/],
    ['disk:/tmp/kv:-1', /bad disk size/],
    ['s3://bucket', /unknown tier 's3:\/\/bucket'/],
    ['memory:1MiB,memory:2MiB', /memory tier given twice/],
    ['redis://h:6379/x', /database must be a number/],
    ['redis://h:99999', /bad redis URL/],
  ];
  for (const [spec, re] of bad) {
    assert.throws(() => parseKvStoreSpec(spec), (e: Error) => e instanceof UsageError && re.test(e.message), spec);
  }
});
