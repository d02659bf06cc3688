// The engine with a KV store: stored chunks replace recomputation, within one engine and across engines
// (shared disk directory, shared real Redis), and greedy output is identical with and without store hits.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { createEngine, GREEDY, type EngineOptions, type GenerateEvent, type TandemEngine } from '../../src/engine/index.ts';
// @ts-expect-error plain JS helper shared with .ci/run
import { startRedis } from '../../scripts/redis-test-server.js';

const story =
  'Once upon a time, there was a little girl named Lily. She loved to play outside in the park. One day, she saw a big red ball. ';
const prompt = story.repeat(5) + 'Lily';

async function run(engine: TandemEngine, text: string, maxTokens = 20) {
  const ids: number[] = [];
  let finish: Extract<GenerateEvent, { type: 'finish' }> | undefined;
  for await (const e of engine.submit({ requestId: `r${Math.random()}`, promptIds: engine.tokenizer.encode(text), sampling: GREEDY, maxTokens })) {
    if (e.type === 'delta') ids.push(...e.ids);
    else finish = e;
  }
  return { ids, cached: finish!.usage.cachedTokens };
}

const engines: TandemEngine[] = [];
async function start(o: Partial<EngineOptions>): Promise<TandemEngine> {
  const { engine } = await createEngine({ model: 'stories260K', kvChunkTokens: 64, ...o } as EngineOptions);
  engines.push(engine);
  return engine;
}
let dir: string;
let redis: { url: string; stop(): Promise<void> };
let reference: number[];
before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'tandem-kvstore-'));
  redis = await startRedis();
  const plain = await start({ prefixCaching: false });
  reference = (await run(plain, prompt)).ids;
});
after(async () => {
  for (const e of engines) await e.close();
  await redis.stop();
  rmSync(dir, { recursive: true, force: true });
});

test('memory tier: a repeated prompt is loaded from the store (no prefix caching) and gives the same tokens', async () => {
  const e = await start({ prefixCaching: false, kvStore: 'memory:64MiB' });
  const first = await run(e, prompt);
  assert.deepEqual(first.ids, reference);
  assert.equal(first.cached, 0);
  const second = await run(e, prompt);
  assert.deepEqual(second.ids, reference);
  assert.ok(second.cached >= 192, `cached ${second.cached}`);
  const m = await e.metrics.registry.getSingleMetricAsString('tandem:kv_store_hits_total');
  assert.match(m, /tier="memory"\} [1-9]/);
});

test('block-pool eviction followed by a store hit', async () => {
  const e = await start({ kvStore: 'memory:64MiB', numBlocks: 24 });
  assert.deepEqual((await run(e, prompt)).ids, reference);
  await run(e, story.repeat(5) + 'Tom had a dog.'); // evicts the first prompt's blocks (same first block though)
  await run(e, 'The cat and the dog played all day in the sun. '.repeat(6));
  const again = await run(e, prompt);
  assert.deepEqual(again.ids, reference);
  assert.ok(again.cached >= 192, `cached ${again.cached}`);
});

test('cross-engine reuse through a shared disk directory', async () => {
  const a = await start({ prefixCaching: false, kvStore: `disk:${dir}:64MiB` });
  await run(a, prompt);
  await a.flushKvStore();
  const b = await start({ prefixCaching: false, kvStore: `disk:${dir}:64MiB` });
  const got = await run(b, prompt);
  assert.deepEqual(got.ids, reference);
  assert.ok(got.cached >= 192, `cached ${got.cached}`);
});

test('cross-engine reuse through Redis, also into an engine with a different block size', async () => {
  const a = await start({ prefixCaching: false, kvStore: redis.url });
  await run(a, prompt);
  await a.flushKvStore();
  const b = await start({ prefixCaching: false, kvStore: redis.url, blockSize: 32 });
  const got = await run(b, prompt);
  assert.deepEqual(got.ids, reference);
  assert.ok(got.cached >= 192, `cached ${got.cached}`);
  const lookup = await b.kvLookup(b.tokenizer.encode(prompt));
  assert.ok(lookup.perTier.redis! >= 192);
});
