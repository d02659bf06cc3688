// `tandem profile --from-engine`: calibrate a profile on a real engine, then simulate with it.
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { main as profileMain } from '../../src/bench/profile.ts';
import { startServe } from '../../src/bench/serve-util.ts';
import { createEngine, GREEDY, type EngineOptions } from '../../src/engine/index.ts';
import { loadProfile, TimingModel } from '../../src/engine/simulate.ts';

test('a profile measured from a real engine loads and drives a simulated engine', async () => {
  const real = await startServe(['--model', 'stories260K', '--max-num-seqs', '8']);
  const out = join(mkdtempSync(join(tmpdir(), 'tandem-prof-')), 'cpu.json');
  try {
    const code = await profileMain([
      '--from-engine', real.url, '--out', out, '--prompts', '16,64', '--batches', '1,4',
      '--contexts', '16', '--decode-tokens', '12', '--repeats', '1', '--name', 'cpu-stories',
    ]);
    assert.equal(code, 0);
  } finally {
    await real.stop();
  }
  const p = loadProfile(out);
  assert.equal(p.name, 'cpu-stories');
  assert.deepEqual(p.prefill.map((r) => r[0]), [16, 64]);
  assert.deepEqual(p.decode.map((r) => [r[0], r[1]]), [[1, 22], [4, 22]]);
  for (const [, ms] of p.prefill) assert.ok(ms > 0 && ms < 10_000, `prefill ${ms} ms`);
  for (const [, , ms] of p.decode) assert.ok(ms > 0 && ms < 10_000, `decode ${ms} ms`);
  assert.equal(p.kvBytesPerToken, 5 * 2 * 4 * 8 * 4, 'stories260K: 5 layers × K,V × 4 KV heads × 8 dims × f32');
  assert.equal(p.maxModelLen, 512);
  assert.ok(p.kvCacheTokens > 0);
  // the profile replays: a simulated engine with it answers, in its table's time scale
  const { engine } = await createEngine({ model: 'stories260K', simulate: out, maxModelLen: 512 } as EngineOptions);
  try {
    let n = 0;
    for await (const e of engine.submit({ requestId: 'x', promptIds: [1, 2, 3, 4, 5], sampling: GREEDY, maxTokens: 4 })) if (e.type === 'delta') n += e.ids.length;
    assert.equal(n, 4);
    assert.ok(new TimingModel(p).stepMs(1, 22, []) > 0);
  } finally {
    await engine.close();
  }
});

test('tandem profile refuses a sweep longer than the model and a missing URL', async () => {
  await assert.rejects(profileMain([]), /--from-engine URL is required/);
  const real = await startServe(['--model', 'stories260K']);
  try {
    await assert.rejects(profileMain(['--from-engine', real.url, '--prompts', '4096']), /needs 4096 tokens of context but stories260K allows 512/);
  } finally {
    await real.stop();
  }
});

test('calibrating a simulated engine recovers its own profile (the measurement method is sound)', async () => {
  const sim = await startServe(['--simulate', 'h200-llama8b']);
  const out = join(mkdtempSync(join(tmpdir(), 'tandem-prof-')), 'h200-measured.json');
  try {
    assert.equal(await profileMain(['--from-engine', sim.url, '--out', out, '--prompts', '1024,4096', '--batches', '1,32', '--contexts', '1024', '--decode-tokens', '16', '--repeats', '2']), 0);
  } finally {
    await sim.stop();
  }
  const measured = loadProfile(out);
  const truth = new TimingModel(loadProfile('h200-llama8b'));
  // A simulated step never ends early; it may end late on a busy machine (the host work of 32 streams
  // shares two cores with whatever else runs), so the upper bounds are loose: a wrong method (per
  // request instead of per step, a batch counted as one) would be off by far more.
  for (const [tokens, ms] of measured.prefill) {
    const want = truth.prefillMs(tokens);
    assert.ok(ms >= want * 0.97 && ms <= want * 1.3, `prefill ${tokens}: measured ${ms} ms, profile ${want} ms`);
  }
  for (const [batch, ctx, ms] of measured.decode) {
    const want = truth.decodeMs(batch, ctx);
    assert.ok(ms >= want * 0.97 && ms <= want * 2.5, `decode batch ${batch} at ${ctx}: measured ${ms} ms, profile ${want.toFixed(2)} ms`);
  }
  assert.equal(measured.kvBytesPerToken, 131072);
  assert.equal(measured.kvCacheTokens, Math.floor(860000 / 16) * 16);
});
