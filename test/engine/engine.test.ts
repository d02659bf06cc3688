// The serving engine end to end in-process: continuous batching, batch invariance, prefix caching, preemption.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { createEngine, GREEDY, type GenerateEvent, type TandemEngine } from '../../src/engine/index.ts';

async function collect(it: AsyncIterable<GenerateEvent>) {
  const ids: number[] = [];
  let text = '';
  let finish: Extract<GenerateEvent, { type: 'finish' }> | undefined;
  for await (const e of it) {
    if (e.type === 'delta') {
      ids.push(...e.ids);
      text += e.text;
    } else finish = e;
  }
  return { ids, text, finish: finish! };
}

let engine: TandemEngine;
before(async () => {
  ({ engine } = await createEngine({ model: 'stories260K', maxNumBatchedTokens: 64 } as never));
});
after(async () => {
  await engine.close();
});

const prompts = [
  'Once upon a time',
  'The cat sat on the mat and',
  'Lily and Ben went to the park. They',
  'One day, a little bird',
  'Tom had a big red ball. He',
  'There was a dog named Max who',
  'The sun was shining and the',
  'Mom said, "Time for bed!" But',
];

function req(i: number, prompt: string, maxTokens = 24) {
  return { requestId: `r${i}`, promptIds: engine.tokenizer.encode(prompt), sampling: GREEDY, maxTokens };
}

test('stories260K greedy through the engine gives the published llama2.c text', async () => {
  const r = await collect(engine.submit(req(0, 'Once upon a time', 32)));
  assert.equal(r.text, ', there was a little girl named Lily. She loved to play outside in the park. One day, she saw');
  assert.equal(r.finish.reason, 'length');
  assert.equal(r.finish.usage.completionTokens, 32);
});

test('16 concurrent greedy requests equal the same requests one at a time', async () => {
  const all = [...prompts, ...prompts.map((p) => p + ' and')];
  const alone = [];
  for (let i = 0; i < all.length; i++) alone.push(await collect(engine.submit(req(100 + i, all[i]!))));
  const together = await Promise.all(all.map((p, i) => collect(engine.submit(req(200 + i, p)))));
  for (let i = 0; i < all.length; i++) assert.deepEqual(together[i]!.ids, alone[i]!.ids, `prompt ${i}`);
});

test('a repeated long prompt hits the prefix cache and gives the same tokens', async () => {
  const long = 'Once upon a time, there was a little girl named Lily. She loved to play outside in the park with her friends.';
  const a = await collect(engine.submit(req(300, long)));
  const b = await collect(engine.submit(req(301, long)));
  assert.ok(b.finish.usage.cachedTokens > 0, `cached ${b.finish.usage.cachedTokens}`);
  assert.deepEqual(b.ids, a.ids);
  const c = await collect(engine.submit({ ...req(302, long), cacheSalt: 'other-tenant' }));
  assert.equal(c.finish.usage.cachedTokens, 0);
  assert.deepEqual(c.ids, a.ids);
});

test('stop strings and stop token ids end the request with finish_reason stop', async () => {
  const r = await collect(engine.submit({ ...req(400, 'Once upon a time', 64), stop: ['Lily'] }));
  assert.equal(r.finish.reason, 'stop');
  assert.equal(r.finish.stopReason, 'Lily');
  assert.equal(r.text, ', there was a little girl named ');
});

test('abort releases blocks at once', async () => {
  const ac = new AbortController();
  const it = engine.submit(req(500, 'Once upon a time', 200), ac.signal);
  let n = 0;
  let finish;
  for await (const e of it) {
    if (e.type === 'delta' && ++n === 3) ac.abort();
    if (e.type === 'finish') finish = e;
  }
  assert.equal(finish!.reason, 'abort');
  assert.equal(engine.internals.blockPool.usage, 0);
});

test('a tiny KV pool forces preemption and the texts stay correct', async () => {
  const { engine: small } = await createEngine({ model: 'stories260K', numBlocks: 7, maxNumBatchedTokens: 64 } as never);
  try {
    const expected = await Promise.all(prompts.slice(0, 4).map((p, i) => collect(engine.submit(req(600 + i, p, 40)))));
    const got = await Promise.all(
      prompts.slice(0, 4).map((p, i) => collect(small.submit({ ...req(700 + i, p, 40), promptIds: small.tokenizer.encode(p) }))),
    );
    for (let i = 0; i < 4; i++) assert.deepEqual(got[i]!.ids, expected[i]!.ids);
    const metrics = await small.metrics.registry.metrics();
    const m = /vllm:num_preemptions_total\{[^}]*\} (\d+)/.exec(metrics);
    assert.ok(m && Number(m[1]) > 0, 'preemptions counted');
  } finally {
    await small.close();
  }
});
