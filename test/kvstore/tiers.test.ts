// Round trips through each tier, longest-prefix lookup across tiers, promotion, eviction, events,
// corrupt and truncated chunks, and the bounded write queue. Real files, real Redis.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync, truncateSync, utimesSync, writeFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { CHUNK, CHUNK_BYTES, metric, openStore, payloadFor, prompt, startRedis, storeAll, tmpDir, type TestRedis } from './helpers.ts';

let redis: TestRedis;
let client: Redis;
const dirs: string[] = [];
before(async () => {
  redis = await startRedis();
  client = new Redis(redis.url);
});
after(async () => {
  client.disconnect();
  await redis.stop();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});
function dir(tag: string): string {
  const d = tmpDir(tag);
  dirs.push(d);
  return d;
}

function samePayloads(chunks: Uint8Array[], tokens: number[]): void {
  chunks.forEach((c, i) => assert.ok(Buffer.from(c).equals(Buffer.from(payloadFor(tokens, i))), `chunk ${i} differs`));
}

test('memory tier: round trip, partial tail ignored, events and metrics', async () => {
  const { store, registry, rec } = await openStore('memory:1MiB');
  const t = prompt(CHUNK * 3 + 7);
  const seen: number[] = [];
  const taken = store.store(t, '', 0, (i) => (seen.push(i), payloadFor(t, i)));
  assert.equal(taken, 3);
  assert.deepEqual(seen, [0, 1, 2]);
  assert.deepEqual(await store.lookup(t), { tokens: 3 * CHUNK, perTier: { memory: 3 * CHUNK, disk: 0, redis: 0 } });
  const r = await store.load(t);
  assert.equal(r.tokens, 3 * CHUNK);
  assert.deepEqual(r.tierOfEach, ['memory', 'memory', 'memory']);
  samePayloads(r.chunks, t);
  assert.deepEqual(rec.stored, [{ keys: store.chunkKeys(t), tier: 'memory' }]);
  assert.equal(await metric(registry, 'tandem:kv_store_hits_total', { tier: 'memory' }), 3);
  assert.equal(await metric(registry, 'tandem:kv_store_bytes', { tier: 'memory' }), 3 * (CHUNK_BYTES + 64));
  // Storing again takes nothing: memory already has every chunk.
  assert.equal(store.store(t, '', 0, () => assert.fail('should not gather')), 0);
  // upToTokens caps the load; a shorter prompt sharing the prefix hits.
  assert.equal((await store.load(t, '', 2 * CHUNK + 3)).tokens, 2 * CHUNK);
  assert.equal((await store.lookup(t.slice(0, CHUNK * 2))).tokens, 2 * CHUNK);
  // Another salt misses; a miss is counted per wanted chunk.
  assert.equal((await store.load(t, 'other')).tokens, 0);
  assert.equal(await metric(registry, 'tandem:kv_store_misses_total'), 3);
  await store.close();
});

test('memory tier: LRU by bytes, eviction reported', async () => {
  const { store, registry, rec } = await openStore(`memory:${3 * (CHUNK_BYTES + 64)}`);
  const a = prompt(CHUNK * 2, 1);
  const b = prompt(CHUNK * 2, 2);
  await storeAll(store, a);
  await store.load(a.slice(0, CHUNK)); // a0 most recent, a1 least
  await storeAll(store, b); // 4 chunks for 3 slots: the least recently used one (a1) goes
  const [a0, a1] = store.chunkKeys(a);
  assert.deepEqual(rec.removed, [{ keys: [a1], tier: 'memory' }]);
  assert.equal((await store.lookup(a)).tokens, CHUNK, 'a0 survives (recently used), a1 evicted');
  assert.equal((await store.lookup(b)).tokens, 2 * CHUNK);
  assert.ok(a0);
  assert.equal(await metric(registry, 'tandem:kv_store_bytes', { tier: 'memory' }), 3 * (CHUNK_BYTES + 64));
  await store.close();
});

test('store validates the chunk size it is given', async () => {
  const { store } = await openStore('memory:1MiB');
  assert.throws(() => store.store(prompt(CHUNK), '', 0, () => new Uint8Array(10)), /expected 4096/);
  await store.close();
});

test('disk tier: round trip, one file per chunk, index rebuilt at start, cap evicts oldest', async () => {
  const d = dir('disk');
  const { store, rec } = await openStore(`disk:${d}:1MiB`);
  const t = prompt(CHUNK * 3);
  await storeAll(store, t);
  const keys = store.chunkKeys(t);
  assert.deepEqual(readdirSync(d).sort(), keys.map((k) => `${k}.kv`).sort());
  assert.equal(readFileSync(join(d, `${keys[0]}.kv`)).byteLength, 64 + CHUNK_BYTES);
  assert.deepEqual(rec.stored.map((s) => s.tier), ['disk', 'disk', 'disk']);
  await store.close();
  // Make the age order explicit: chunk 0 oldest.
  keys.forEach((k, i) => utimesSync(join(d, `${k}.kv`), 1000 + i, 1000 + i));

  // A new process-lifetime (new store) finds the files without any write.
  const reopened = await openStore(`disk:${d}:${2 * (CHUNK_BYTES + 64)}`);
  // The cap is now two chunks: the oldest file was evicted at open.
  assert.equal(reopened.store.stats().disk!.chunks, 2);
  assert.equal(readdirSync(d).length, 2);
  const r = await reopened.store.load(t);
  assert.equal(r.tokens, 0, 'chunk 0 (oldest) is gone, so no prefix');
  await reopened.store.close();
});

test('disk tier: a flipped byte and a truncated file are discarded, counted and reported as misses', async () => {
  const d = dir('corrupt');
  const { store, registry, rec } = await openStore(`disk:${d}:1MiB`);
  const t = prompt(CHUNK * 3);
  await storeAll(store, t);
  const keys = store.chunkKeys(t);
  // Flip one payload byte of chunk 1.
  const f1 = join(d, `${keys[1]}.kv`);
  const bytes = readFileSync(f1);
  bytes[64 + 1234]! ^= 0x01;
  writeFileSync(f1, bytes);
  assert.equal((await store.lookup(t)).tokens, 3 * CHUNK, 'lookup does not read payloads');
  let r = await store.load(t);
  assert.equal(r.tokens, CHUNK, 'prefix stops before the corrupt chunk');
  samePayloads(r.chunks, t);
  assert.equal(await metric(registry, 'tandem:kv_store_errors_total', { tier: 'disk', reason: 'corrupt' }), 1);
  assert.ok(!readdirSync(d).includes(`${keys[1]}.kv`), 'corrupt file deleted');
  assert.deepEqual(rec.removed, [{ keys: [keys[1]], tier: 'disk' }]);
  assert.equal(await metric(registry, 'tandem:kv_store_misses_total'), 2);

  // Truncate chunk 0 (a crash mid-write without fsync looks like this).
  truncateSync(join(d, `${keys[0]}.kv`), 64 + 100);
  r = await store.load(t);
  assert.equal(r.tokens, 0);
  assert.equal(await metric(registry, 'tandem:kv_store_errors_total', { tier: 'disk', reason: 'truncated' }), 1);
  // The engine recomputes and stores again: everything is whole after that.
  await storeAll(store, t);
  r = await store.load(t);
  assert.equal(r.tokens, 3 * CHUNK);
  samePayloads(r.chunks, t);
  await store.close();
});

test('redis tier: round trip, corrupt object discarded', async () => {
  const { store, registry, rec } = await openStore(`${redis.url}/1`);
  const t = prompt(CHUNK * 2, 5);
  await storeAll(store, t);
  const keys = store.chunkKeys(t);
  assert.deepEqual(rec.stored.map((s) => s.tier), ['redis', 'redis']);
  await client.select(1);
  assert.equal(await client.exists(`tandem:kv:${keys[0]}`), 1);
  assert.deepEqual(await store.lookup(t), { tokens: 2 * CHUNK, perTier: { memory: 0, disk: 0, redis: 2 * CHUNK } });
  let r = await store.load(t);
  assert.deepEqual(r.tierOfEach, ['redis', 'redis']);
  samePayloads(r.chunks, t);
  assert.equal(await metric(registry, 'tandem:kv_store_hits_total', { tier: 'redis' }), 2);

  // Corrupt chunk 0 in Redis.
  const v = (await client.getBuffer(`tandem:kv:${keys[0]}`))!;
  v[100]! ^= 0xff;
  await client.set(`tandem:kv:${keys[0]}`, v);
  r = await store.load(t);
  assert.equal(r.tokens, 0);
  assert.equal(await metric(registry, 'tandem:kv_store_errors_total', { tier: 'redis', reason: 'corrupt' }), 1);
  // The corrupt object is deleted from Redis (in the background).
  for (let i = 0; (await client.exists(`tandem:kv:${keys[0]}`)) === 1; i++) {
    assert.ok(i < 200, 'corrupt object not deleted');
    await new Promise((r) => setTimeout(r, 10));
  }
  // Re-storing gathers only the discarded chunk: the store remembers that Redis holds chunk 1.
  const gathered: number[] = [];
  assert.equal(store.store(t, '', 0, (i) => (gathered.push(i), payloadFor(t, i))), 1);
  assert.deepEqual(gathered, [0]);
  await store.close();
  assert.equal(await client.exists(`tandem:kv:${keys[0]}`), 1, 'rewritten on close (flush)');
  await client.del(`tandem:kv:${keys[0]}`);
  await client.select(0);
});

test('longest prefix across tiers, fastest first, with promotion into memory', async () => {
  const d = dir('mixed');
  const spec = `memory:1MiB,disk:${d}:1MiB,${redis.url}/2`;
  const t = prompt(CHUNK * 4, 7);
  // Engine "A" (disk + redis only) stores all four chunks; then we remove some copies by hand so that
  // each chunk lives in a different tier: c0 memory (via B), c1 disk only, c2 redis only, c3 nowhere.
  const a = await openStore(`disk:${d}:1MiB,${redis.url}/2`);
  await storeAll(a.store, t);
  await a.store.close();
  const keys = a.store.chunkKeys(t);
  await client.select(2);
  await client.del(`tandem:kv:${keys[1]}`, `tandem:kv:${keys[3]}`);
  rmSync(join(d, `${keys[2]}.kv`));
  rmSync(join(d, `${keys[3]}.kv`));

  const b = await openStore(spec);
  // Put c0 into B's memory by loading just the first chunk.
  assert.deepEqual((await b.store.load(t, '', CHUNK)).tierOfEach, ['disk']);
  assert.deepEqual(await b.store.lookup(t), { tokens: 3 * CHUNK, perTier: { memory: CHUNK, disk: CHUNK, redis: CHUNK } });
  const r = await b.store.load(t);
  assert.deepEqual(r.tierOfEach, ['memory', 'disk', 'redis']);
  samePayloads(r.chunks, t);
  // Promoted: now everything found is in memory.
  assert.deepEqual((await b.store.lookup(t)).perTier, { memory: 3 * CHUNK, disk: 0, redis: 0 });
  assert.deepEqual(
    b.rec.stored.filter((s) => s.tier === 'memory').flatMap((s) => s.keys),
    [keys[0], keys[1], keys[2]],
  );
  // A prefix hole stops the match even if later chunks exist.
  await b.store.close();
  rmSync(join(d, `${keys[0]}.kv`));
  const c = await openStore(`disk:${d}:1MiB`);
  assert.equal((await c.store.lookup(t)).tokens, 0);
  await c.store.close();
  await client.flushdb();
  await client.select(0);
});

test('write queue full: writes are dropped and counted, store() never blocks', async () => {
  const d = dir('queue');
  const { store, registry } = await openStore(`disk:${d}:64MiB`, { writeQueueLimit: 2 });
  const t = prompt(CHUNK * 10, 11);
  const taken = store.store(t, '', 0, (i) => payloadFor(t, i));
  assert.equal(taken, 2, 'only two chunks fit the queue');
  assert.equal(await metric(registry, 'tandem:kv_store_write_drops_total', { tier: 'disk' }), 8);
  await store.flush();
  assert.equal(readdirSync(d).length, 2);
  // The next store of the same prompt continues where the store has a gap.
  store.store(t, '', 2, (i) => payloadFor(t, i));
  await store.flush();
  assert.equal((await store.lookup(t)).tokens, 4 * CHUNK);
  await store.close();
});
