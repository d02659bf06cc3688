// Faults: Redis killed and restarted, Redis slow, disk full. The store must keep serving from the
// other tiers, bound its latency, say so once in the log, and recover by itself.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { CHUNK, metric, openStore, payloadFor, prompt, sleep, startRedis, storeAll, tmpDir, type TestRedis } from './helpers.ts';

const dirs: string[] = [];
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});
function dir(tag: string): string {
  const d = tmpDir(tag);
  dirs.push(d);
  return d;
}

async function until(what: string, cond: () => boolean | Promise<boolean>, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

test('redis killed mid-run: tier marked down once, disk keeps serving, writes resume after restart', async () => {
  let redis: TestRedis = await startRedis();
  const port = redis.port;
  const d = dir('kill');
  const { store, registry, rec } = await openStore(`disk:${d}:4MiB,${redis.url}`);
  try {
    const p1 = prompt(CHUNK * 3, 21);
    await storeAll(store, p1);
    assert.equal(store.stats().redis!.available, true);

    await redis.kill('SIGKILL');
    await until('redis tier down', () => !store.stats().redis!.available);

    // Lookups and loads keep working from disk, many times over, with one log line in total.
    for (let i = 0; i < 20; i++) {
      const r = await store.load(p1);
      assert.equal(r.tokens, 3 * CHUNK);
      assert.deepEqual(r.tierOfEach, ['disk', 'disk', 'disk']);
    }
    // A prompt only Redis could have served is a plain miss, not an error.
    const p2 = prompt(CHUNK * 2, 22);
    assert.equal((await store.lookup(p2)).tokens, 0);
    // Writes: disk still takes them; Redis writes are dropped (counted) while it is down.
    await storeAll(store, p2);
    assert.equal((await store.lookup(p2)).perTier.disk, 2 * CHUNK);
    assert.ok((await metric(registry, 'tandem:kv_store_write_drops_total', { tier: 'redis' })) >= 2);
    assert.ok((await metric(registry, 'tandem:kv_store_errors_total', { tier: 'redis' })) >= 1);
    await sleep(600); // several backoff rounds
    assert.equal(rec.logs.filter((l) => /unavailable/.test(l)).length, 1, rec.logs.join('\n'));

    // Redis comes back on the same port: the tier recovers without intervention.
    redis = await startRedis({ port });
    await until('redis tier back', () => store.stats().redis!.available);
    assert.equal(rec.logs.filter((l) => /available again/.test(l)).length, 1, rec.logs.join('\n'));
    const p3 = prompt(CHUNK * 2, 23);
    await storeAll(store, p3);
    const client = new Redis(redis.url);
    const [k0] = store.chunkKeys(p3);
    assert.equal(await client.exists(`tandem:kv:${k0}`), 1);
    client.disconnect();
  } finally {
    await store.close();
    await redis.stop();
  }
});

test('redis slow (DEBUG SLEEP): a lookup costs at most its deadline, then the tier recovers', async () => {
  const redis = await startRedis();
  const { store, registry, rec } = await openStore(`memory:1MiB,${redis.url}`, {
    redis: { lookupTimeoutMs: 200, minBackoffMs: 50, maxBackoffMs: 200 },
  });
  const blocker = new Redis(redis.url);
  try {
    const inMemory = prompt(CHUNK * 2, 31);
    store.store(inMemory, '', 0, (i) => payloadFor(inMemory, i));
    await store.flush();
    const onlyRemote = prompt(CHUNK * 2, 32);

    const sleeping = blocker.call('DEBUG', 'SLEEP', '2');
    await sleep(50); // let the server start sleeping
    const t0 = performance.now();
    const r = await store.lookup(onlyRemote);
    const elapsed = performance.now() - t0;
    assert.equal(r.tokens, 0);
    // The server is blocked for 2 s; the lookup gave up at its 200 ms deadline.
    assert.ok(elapsed < 1000, `lookup took ${elapsed.toFixed(0)} ms while Redis slept 2 s`);
    assert.equal(await metric(registry, 'tandem:kv_store_errors_total', { tier: 'redis', reason: 'timeout' }), 1);
    assert.equal(store.stats().redis!.available, false);
    // While down, lookups skip Redis entirely, and memory still serves.
    const t1 = performance.now();
    assert.equal((await store.lookup(inMemory)).perTier.memory, 2 * CHUNK);
    assert.equal((await store.lookup(onlyRemote)).tokens, 0);
    assert.ok(performance.now() - t1 < 500);

    await sleeping;
    await until('redis tier back after the sleep', () => store.stats().redis!.available);
    // One line going down, one coming back: no flood while it was down.
    assert.equal(rec.logs.length, 2, rec.logs.join('\n'));
    assert.match(rec.logs[0]!, /unavailable \(no reply within 200 ms\)/);
    assert.match(rec.logs[1]!, /available again/);
    // And works again: the prompt stored now reaches Redis and is found there.
    store.store(onlyRemote, '', 0, (i) => payloadFor(onlyRemote, i));
    await store.flush();
    assert.equal((await store.lookup(onlyRemote)).tokens, 2 * CHUNK);
  } finally {
    blocker.disconnect();
    await store.close();
    await redis.stop();
  }
});

test('disk full (ENOSPC on a 32 KiB tmpfs): the tier stops writing, logs once, reads continue', async (t) => {
  const d = join(dir('full'), 'mnt');
  mkdirSync(d);
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=32k', 'tmpfs', d], { stdio: 'ignore' });
  } catch {
    // Without mount rights ENOSPC cannot be produced for real; the size cap is tested in tiers.test.ts.
    t.skip('cannot mount a tmpfs here (needs root)');
    return;
  }
  try {
    // The tier's own cap (1 MiB) is far above the file system's 32 KiB: the kernel says no first.
    const { store, registry, rec } = await openStore(`disk:${d}:1MiB`, { diskFullRetryMs: 60_000 });
    const p = prompt(CHUNK * 12, 41);
    await storeAll(store, p);
    const onDisk = readdirSync(d).filter((n) => n.endsWith('.kv')).length;
    assert.ok(onDisk >= 1 && onDisk < 12, `${onDisk} chunks fit`);
    assert.equal(readdirSync(d).filter((n) => n.endsWith('.tmp')).length, 0, 'temp files cleaned up');
    assert.equal(store.stats().disk!.writable, false);
    assert.equal(await metric(registry, 'tandem:kv_store_errors_total', { tier: 'disk', reason: 'enospc' }), 1);
    assert.equal(rec.logs.filter((l) => /full/.test(l)).length, 1, rec.logs.join('\n'));
    // Later writes are dropped up front, not attempted.
    const before = await metric(registry, 'tandem:kv_store_write_drops_total', { tier: 'disk' });
    await storeAll(store, prompt(CHUNK * 3, 42));
    assert.equal(await metric(registry, 'tandem:kv_store_write_drops_total', { tier: 'disk' }), before + 3);
    assert.equal(await metric(registry, 'tandem:kv_store_errors_total', { tier: 'disk', reason: 'enospc' }), 1);
    assert.equal(rec.logs.length, 1);
    // Reads continue: the chunks that made it are served and valid.
    const r = await store.load(p);
    assert.equal(r.tokens, onDisk * CHUNK);
    r.chunks.forEach((c, i) => assert.ok(Buffer.from(c).equals(Buffer.from(payloadFor(p, i)))));
    await store.close();
  } finally {
    execFileSync('umount', [d]);
  }
});

test('redis unreachable at startup: the store opens within its bound, serves other tiers, logs once', async () => {
  // A port nothing listens on: take one from a server we start and stop.
  const gone = await startRedis();
  await gone.stop();
  const t0 = performance.now();
  const { store, rec } = await openStore(`memory:1MiB,${gone.url}`);
  assert.ok(performance.now() - t0 < 5000);
  try {
    assert.equal(store.stats().redis!.available, false);
    const p = prompt(CHUNK * 2, 81);
    store.store(p, '', 0, (i) => payloadFor(p, i));
    await store.flush();
    assert.deepEqual((await store.load(p)).tierOfEach, ['memory', 'memory']);
    await sleep(300);
    assert.equal(rec.logs.length, 1, rec.logs.join('\n'));
    assert.match(rec.logs[0]!, /unavailable/);
  } finally {
    await store.close();
  }
});
