// Simulated engines: the real engine with a GPU timing profile instead of arithmetic.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createEngine, GREEDY, type EngineOptions, type GenerateEvent, type TandemEngine } from '../../src/engine/index.ts';
import { H200_LLAMA3_8B, stepMs } from '../../src/engine/simulate.ts';

test('step time interpolates the profile: prefill by tokens, decode by batch and context', () => {
  const p = H200_LLAMA3_8B;
  assert.equal(stepMs(p, 0, 0, 8192), 234.2);
  assert.equal(stepMs(p, 0, 0, 3072), (52.3 + 106.0) / 2);
  assert.equal(stepMs(p, 32, 1024, 0), 8.6);
  assert.equal(stepMs(p, 128, 4096, 0), 22.3);
  assert.ok(Math.abs(stepMs(p, 128, 2560, 0) - (10.8 + 22.3) / 2) < 1e-9);
  assert.equal(stepMs(p, 32, 1024, 512), 8.6 + 13.3, 'a mixed step pays for both');
});

async function run(engine: TandemEngine, ids: number[], maxTokens: number, kvTransferParams?: Record<string, unknown>) {
  const t0 = performance.now();
  let ttft = 0;
  const out: number[] = [];
  let finish: Extract<GenerateEvent, { type: 'finish' }> | undefined;
  for await (const e of engine.submit({ requestId: 'same-id', promptIds: ids, sampling: GREEDY, maxTokens, kvTransferParams })) {
    if (e.type === 'delta') {
      if (!out.length) ttft = performance.now() - t0;
      out.push(...e.ids);
    } else finish = e;
  }
  return { out, ttft, finish: finish! };
}

test('a simulated engine takes the profile time, accepts GPU-scale prompts and gives the same tokens with P/D', async () => {
  const opts = { model: 'stories260K', simulate: 'h200-llama3-8b', maxNumBatchedTokens: 512 } as EngineOptions;
  const { engine: both } = await createEngine(opts);
  const { engine: p } = await createEngine({ ...opts, role: 'prefill' });
  const { engine: d } = await createEngine({ ...opts, role: 'decode' });
  try {
    assert.equal(both.info.maxModelLen, 32768);
    const prompt = Array.from({ length: 4096 }, (_, i) => 3 + ((i * 31) % 500));
    const local = await run(both, prompt, 8);
    assert.equal(local.out.length, 8, 'a simulated model never stops early');
    assert.ok(local.ttft >= 8 * 13.3 * 0.95, `4096 tokens in 8 chunks of 512 take ≥ 8×13.3 ms on the profile (took ${local.ttft.toFixed(1)})`);
    const leg1 = await run(p, prompt, 1, { do_remote_decode: true });
    const split = await run(d, prompt, 8, leg1.finish.kvTransferParams);
    assert.deepEqual(split.out, local.out);
    assert.ok(split.finish.usage.cachedTokens >= 4095);
  } finally {
    await Promise.all([both.close(), p.close(), d.close()]);
  }
});
