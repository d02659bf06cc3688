// P/D disaggregation through the engines' KV connector (real sockets, in-process engines):
// greedy output of prefill → decode equals one engine doing both phases, token for token.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { createEngine, GREEDY, type EngineOptions, type GenerateEvent, type TandemEngine } from '../../src/engine/index.ts';

async function run(engine: TandemEngine, prompt: string, maxTokens: number, kvTransferParams?: Record<string, unknown>) {
  const ids: number[] = [];
  let finish: Extract<GenerateEvent, { type: 'finish' }> | undefined;
  const it = engine.submit({ requestId: `r-${Math.random().toString(36).slice(2)}`, promptIds: engine.tokenizer.encode(prompt), sampling: GREEDY, maxTokens, kvTransferParams });
  for await (const e of it) {
    if (e.type === 'delta') ids.push(...e.ids);
    else finish = e;
  }
  return { ids, finish: finish! };
}

async function disagg(p: TandemEngine, d: TandemEngine, prompt: string, maxTokens: number) {
  const leg1 = await run(p, prompt, 1, { do_remote_decode: true, do_remote_prefill: false, remote_engine_id: null, remote_block_ids: null, remote_host: null, remote_port: null });
  assert.ok(leg1.finish.kvTransferParams, 'leg 1 returns kv_transfer_params');
  return run(d, prompt, maxTokens, leg1.finish.kvTransferParams);
}

const engines: TandemEngine[] = [];
async function start(o: Partial<EngineOptions>): Promise<TandemEngine> {
  const { engine } = await createEngine({ model: 'stories260K', ...o } as EngineOptions);
  engines.push(engine);
  return engine;
}
after(async () => {
  for (const e of engines) await e.close();
});

let both: TandemEngine;
let both16: TandemEngine;
let prefill: TandemEngine;
before(async () => {
  both = await start({ role: 'both' });
  both16 = await start({ role: 'both', kvCacheDtype: 'f16' });
  prefill = await start({ role: 'prefill' });
});

const story =
  'Once upon a time, there was a little girl named Lily. She loved to play outside in the park. One day, she saw a big red ball. ';
const prompts = {
  short: 'Once upon a time',
  oneBlock: 'Lily and Ben went to the park to play with a', // exactly 16 tokens with BOS: one block
  manyBlocks: story.repeat(3),
  nearLimit: story.repeat(11) + 'One day, Lily and Ben went to the park to play with a big red ball and', // 498 of 512
};

for (const [name, prompt] of Object.entries(prompts)) {
  test(`prefill → decode equals one engine (${name} prompt, equal block sizes)`, async () => {
    const d = await start({ role: 'decode' });
    const n = both.tokenizer.encode(prompt).length;
    if (name === 'oneBlock') assert.equal(n, 16);
    const maxTokens = Math.min(24, both.info.maxModelLen - n);
    const ref = await run(both, prompt, maxTokens);
    const got = await disagg(prefill, d, prompt, maxTokens);
    assert.deepEqual(got.ids, ref.ids);
  });
}

test('different block sizes on P and D', async () => {
  const d = await start({ role: 'decode', blockSize: 32 });
  const p8 = await start({ role: 'prefill', blockSize: 8 });
  const ref = await run(both, prompts.manyBlocks, 24);
  assert.deepEqual((await disagg(p8, d, prompts.manyBlocks, 24)).ids, ref.ids);
});

test('f16 KV on D equals a both engine with f16 KV', async () => {
  const d = await start({ role: 'decode', kvCacheDtype: 'f16' });
  const ref = await run(both16, prompts.manyBlocks, 24);
  assert.deepEqual((await disagg(prefill, d, prompts.manyBlocks, 24)).ids, ref.ids);
});

test('D already caching part of the prefix pulls only the rest', async () => {
  const d = await start({ role: 'decode' });
  await run(d, prompts.manyBlocks, 1); // D now caches the prefix of this prompt
  const before = await d.metrics.registry.getSingleMetricAsString('tandem:kv_transfer_tokens_total');
  const longer = prompts.manyBlocks + 'The ball was';
  const ref = await run(both, longer, 16);
  const got = await disagg(prefill, d, longer, 16);
  assert.deepEqual(got.ids, ref.ids);
  const after = await d.metrics.registry.getSingleMetricAsString('tandem:kv_transfer_tokens_total');
  const recv = (s: string) => Number(/direction="recv"\} (\d+)/.exec(s)?.[1] ?? 0);
  const pulled = recv(after) - recv(before);
  const n = d.tokenizer.encode(longer).length;
  assert.ok(pulled > 0 && pulled < n / 2, `pulled ${pulled} of ${n} tokens`);
  assert.ok(got.finish.usage.cachedTokens >= n - 1);
});

test('prefill engine gone between the legs: recompute gives the right text; fail gives an error', async () => {
  const p = await start({ role: 'prefill' });
  const dr = await start({ role: 'decode' });
  const df = await start({ role: 'decode', kvLoadFailurePolicy: 'fail' });
  const prompt = prompts.manyBlocks;
  const leg = (await run(p, prompt, 1, { do_remote_decode: true })).finish.kvTransferParams!;
  const leg2 = (await run(p, prompt + ' x', 1, { do_remote_decode: true })).finish.kvTransferParams!;
  await p.close();
  const ref = await run(both, prompt, 16);
  assert.deepEqual((await run(dr, prompt, 16, leg)).ids, ref.ids);
  const failed = await run(df, prompt + ' x', 16, leg2);
  assert.equal(failed.finish.reason, 'error');
  assert.ok(failed.finish.error!.status >= 500);
});

test('lease expiry frees the blocks', async () => {
  const p = await start({ role: 'prefill', kvLeaseSeconds: 0.3 });
  await run(p, prompts.manyBlocks, 1, { do_remote_decode: true });
  assert.ok(p.internals.blockPool.usage > 0, 'blocks held under lease');
  const leased = async () => Number(/^tandem:kv_leased_blocks(?:\{[^}]*\})? (\S+)$/m.exec(await p.metrics.registry.getSingleMetricAsString('tandem:kv_leased_blocks'))?.[1]);
  assert.ok((await leased()) > 0);
  await new Promise((r) => setTimeout(r, 600));
  assert.equal(p.internals.blockPool.usage, 0);
  assert.equal(await leased(), 0, 'tandem:kv_leased_blocks back to zero');
});

test('a decode leg cancelled while it waits (before its KV pull) frees the prefill lease at once, not at expiry', async () => {
  const p = await start({ role: 'prefill' }); // 30 s lease
  const d = await start({ role: 'decode', maxNumSeqs: 1 });
  const leased = async () => Number(/^tandem:kv_leased_blocks(?:\{[^}]*\})? (\S+)$/m.exec(await p.metrics.registry.getSingleMetricAsString('tandem:kv_leased_blocks'))?.[1]);
  const kv = (await run(p, prompts.manyBlocks, 1, { do_remote_decode: true })).finish.kvTransferParams!;
  assert.ok((await leased()) > 0);
  // the decode engine's only slot is busy: the leg waits in the queue, then its client goes away
  const busy = run(d, prompts.short, 200);
  const aborter = new AbortController();
  const it = d.submit({ requestId: 'cancelled-leg-2', promptIds: d.tokenizer.encode(prompts.manyBlocks), sampling: GREEDY, maxTokens: 8, kvTransferParams: kv }, aborter.signal);
  await new Promise((r) => setTimeout(r, 20));
  aborter.abort();
  for await (const e of it) if (e.type === 'finish') assert.equal(e.reason, 'abort');
  const end = Date.now() + 5000;
  while ((await leased()) > 0 && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
  assert.equal(await leased(), 0, 'tandem:kv_leased_blocks back to zero well before the 30 s lease ends');
  await busy;
});

test('a wrong transfer token or an incompatible prefill engine: clean failure, recompute gives the right text, both keep serving', async () => {
  const p = await start({ role: 'prefill' });
  const other = await start({ role: 'prefill', model: 'tinystories-656k' });
  const d = await start({ role: 'decode' });
  const prompt = prompts.manyBlocks;
  const ref = await run(both, prompt, 16);
  const failures = async () => d.metrics.registry.getSingleMetricAsString('tandem:kv_load_failures_total');

  const leg = (await run(p, prompt, 1, { do_remote_decode: true })).finish.kvTransferParams!;
  const forged = { ...leg, tandem_transfer_token: 'f'.repeat(32) };
  assert.deepEqual((await run(d, prompt, 16, forged)).ids, ref.ids);
  assert.match(await failures(), /reason="bad-token"\} 1/);

  // params that point at an engine serving another model: the handshake refuses
  const otherPort = (await run(other, 'Once upon a time', 1, { do_remote_decode: true })).finish.kvTransferParams!['remote_port'];
  const mismatched = { ...leg, remote_port: otherPort };
  assert.deepEqual((await run(d, prompt, 16, mismatched)).ids, ref.ids);
  assert.match(await failures(), /reason="incompatible"\} 1/);

  // both sides still serve: the genuine params work afterwards
  assert.deepEqual((await run(d, prompt, 16, leg)).ids, ref.ids);
  assert.deepEqual((await run(p, 'Once upon a time', 8)).ids.length, 8);
});
