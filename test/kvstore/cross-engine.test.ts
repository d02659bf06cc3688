// Cross-engine reuse: KV one engine stored is loaded by another, through Redis and through a shared
// disk directory, with the other engine in its own process. And concurrent writers of one chunk.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { encodeChunk } from '../../src/kvstore/index.ts';
import { DiskTier } from '../../src/kvstore/disk-tier.ts';
import { CHUNK, openStore, payloadFor, prompt, runChild, sleep, startRedis, storeAll, tmpDir, type TestRedis } from './helpers.ts';

let redis: TestRedis;
const dirs: string[] = [];
before(async () => {
  redis = await startRedis();
});
after(async () => {
  await redis.stop();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});
function dir(tag: string): string {
  const d = tmpDir(tag);
  dirs.push(d);
  return d;
}

function assertPayloads(chunks: Uint8Array[], tokens: number[]): void {
  chunks.forEach((c, i) => assert.ok(Buffer.from(c).equals(Buffer.from(payloadFor(tokens, i))), `chunk ${i} differs`));
}

test('engine B (this process) reuses what engine A (another process) stored in Redis, and vice versa', async () => {
  const url = `${redis.url}/4`;
  const p = prompt(CHUNK * 5 + 3, 51);
  const b = await openStore(`memory:1MiB,${url}`);
  assert.equal((await b.store.lookup(p)).tokens, 0);
  assert.deepEqual(await runChild({ spec: url, op: 'store', tokens: p.length, seed: 51 }), { taken: 5 });
  const r = await b.store.load(p);
  assert.deepEqual(r.tierOfEach, ['redis', 'redis', 'redis', 'redis', 'redis']);
  assertPayloads(r.chunks, p);
  // Another tenant's salt sees nothing.
  assert.equal((await b.store.lookup(p, 'tenant-x')).tokens, 0);

  // Reverse: B stores, a fresh process loads.
  const q = prompt(CHUNK * 3, 52);
  await storeAll(b.store, q);
  assert.deepEqual(await runChild({ spec: url, op: 'load', tokens: q.length, seed: 52 }), {
    tokens: 3 * CHUNK,
    tierOfEach: ['redis', 'redis', 'redis'],
    ok: true,
  });
  await b.store.close();
});

test('a shared disk directory: chunks written by another process after we opened it are found', async () => {
  const d = dir('shared');
  const spec = `disk:${d}:4MiB`;
  const p = prompt(CHUNK * 4, 61);
  // B opens first (its index is empty), then A writes from another process.
  const b = await openStore(`memory:1MiB,${spec}`);
  assert.deepEqual(await runChild({ spec, op: 'store', tokens: p.length, seed: 61 }), { taken: 4 });
  assert.deepEqual(await b.store.lookup(p), { tokens: 4 * CHUNK, perTier: { memory: 0, disk: 4 * CHUNK, redis: 0 } });
  const r = await b.store.load(p);
  assertPayloads(r.chunks, p);
  await b.store.close();
  // Keys are model- and dtype-specific: a store for another model shares the directory but not the KV.
  const other = await openStore(spec, { modelFingerprint: 'fp-other' });
  assert.equal((await other.store.lookup(p)).tokens, 0);
  await other.store.close();
  const f16 = await openStore(spec, { kvDtype: 'f16' });
  assert.equal((await f16.store.lookup(p)).tokens, 0);
  await f16.store.close();
});

test('concurrent writers of one chunk: eight in one process, then two processes racing on 40 chunks', async () => {
  const d = dir('race');
  const tier = DiskTier.open(d, 64 << 20, 60_000, { log() {}, error() {}, bytesDelta() {}, removed() {} });
  const p = prompt(CHUNK, 71);
  const b = await openStore(`disk:${d}:64MiB`);
  const [key] = b.store.chunkKeys(p);
  const payload = payloadFor(p, 0);
  const { header } = encodeChunk(key!, 'f32', CHUNK, payload);
  // All eight pass the "already there?" check before any of them renames.
  const results = await Promise.all(Array.from({ length: 8 }, () => tier.write(key!, header, payload)));
  assert.deepEqual(results, Array(8).fill('written'));
  assert.deepEqual(readdirSync(d), [`${key}.kv`], 'one file, no temp files left');
  assert.equal(readFileSync(join(d, `${key}.kv`)).byteLength, 64 + payload.byteLength);
  assertPayloads((await b.store.load(p)).chunks, p);

  // Two engines store the same 40-chunk prompt at the same instant into one directory and one Redis.
  const q = prompt(CHUNK * 40, 72);
  const url = `${redis.url}/5`;
  const spec = `disk:${d}:64MiB,${url}`;
  const gateDir = dir('gate');
  const gate = join(gateDir, 'go');
  const children = Promise.all([
    runChild({ spec, op: 'store', tokens: q.length, seed: 72, gate }),
    runChild({ spec, op: 'store', tokens: q.length, seed: 72, gate }),
  ]);
  // Open the gate once both have started up, so their writes overlap.
  const deadline = Date.now() + 60_000;
  children.catch(() => {}); // a failure surfaces at the await below
  while (readdirSync(gateDir).filter((n) => n.startsWith('go.ready.')).length < 2) {
    if (Date.now() > deadline) throw new Error('writer processes did not start');
    await sleep(5);
  }
  writeFileSync(gate, '');
  const [ra, rb] = await children;
  assert.equal(ra.taken + rb.taken >= 40, true);
  assert.equal(readdirSync(d).filter((n) => n.endsWith('.tmp')).length, 0);
  const fromDisk = await b.store.load(q);
  assert.equal(fromDisk.tokens, 40 * CHUNK);
  assertPayloads(fromDisk.chunks, q);
  await b.store.close();
  const viaRedis = await openStore(url);
  const fromRedis = await viaRedis.store.load(q);
  assert.equal(fromRedis.tokens, 40 * CHUNK);
  assertPayloads(fromRedis.chunks, q);
  await viaRedis.store.close();
  const client = new Redis(url);
  await client.flushdb();
  client.disconnect();
});
