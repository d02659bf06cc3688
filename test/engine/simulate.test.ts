// Simulated engines: the real engine with a GPU timing profile instead of arithmetic.
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { createEngine, GREEDY, type EngineOptions, type GenerateEvent, type TandemEngine } from '../../src/engine/index.ts';
import { loadProfile, TimingModel } from '../../src/engine/simulate.ts';

const H200 = loadProfile('h200-llama8b');

test('the timing model interpolates its table: prefill by tokens, decode by batch and context', () => {
  const t = new TimingModel(H200);
  for (const [tokens, ms] of H200.prefill) assert.equal(t.stepMs(0, 0, [{ tokens, context: 0 }]), ms);
  for (const [batch, ctx, ms] of H200.decode) assert.equal(t.stepMs(batch, ctx, []), ms);
  assert.equal(t.stepMs(0, 0, [{ tokens: 3072, context: 0 }]), (52.3 + 106.0) / 2);
  assert.ok(Math.abs(t.stepMs(128, 2560, []) - (10.8 + 22.3) / 2) < 1e-9);
  assert.equal(t.stepMs(32, 1024, [{ tokens: 512, context: 0 }]), 8.6 + 13.3, 'a mixed step pays for both');
  // chunked prefill of 8K in 512-token chunks costs at least one 8K pass: attention to the context is paid
  let chunked = 0;
  for (let c = 0; c < 8192; c += 512) chunked += t.stepMs(0, 0, [{ tokens: 512, context: c }]);
  assert.ok(chunked >= 234.2 - 1e-9, `8K in chunks: ${chunked}`);
  // two prompts in one step run as one batch: no double launch floor
  assert.equal(t.stepMs(0, 0, [{ tokens: 256, context: 0 }, { tokens: 256, context: 0 }]), 13.3);
});

test('profiles: aliases, shipped names, JSON files, and precise errors', () => {
  assert.equal(loadProfile('h200-llama3-8b').name, 'h200-llama8b');
  const slow = loadProfile('decode-accel-llama8b');
  assert.ok(Math.abs(slow.prefill.at(-1)![1] * 0.6 - 234.2) < 0.1, 'the illustrative decode accelerator prefills at 0.6× the H200');
  const dir = mkdtempSync(join(tmpdir(), 'tandem-profile-'));
  const good = join(dir, 'mine.json');
  writeFileSync(good, JSON.stringify({ ...H200, name: 'mine' }));
  assert.equal(loadProfile(good).name, 'mine');
  const bad = join(dir, 'bad.json');
  writeFileSync(bad, JSON.stringify({ ...H200, decode: [[1, 1024]] }));
  assert.throws(() => loadProfile(bad), /decode\[0\] must be 3 positive numbers/);
  writeFileSync(bad, JSON.stringify({ ...H200, kvTransfer: undefined }));
  assert.throws(() => loadProfile(bad), /kvTransfer/);
  assert.throws(() => loadProfile('no-such-profile'), /not a shipped profile \(decode-accel-llama8b, h200-llama8b\)/);
});

async function run(engine: TandemEngine, ids: number[], maxTokens: number, kvTransferParams?: Record<string, unknown>, requestId = 'same-id') {
  const t0 = performance.now();
  let ttft = 0;
  const out: number[] = [];
  let finish: Extract<GenerateEvent, { type: 'finish' }> | undefined;
  for await (const e of engine.submit({ requestId, promptIds: ids, sampling: GREEDY, maxTokens, kvTransferParams })) {
    if (e.type === 'delta') {
      if (!out.length) ttft = performance.now() - t0;
      out.push(...e.ids);
    } else finish = e;
  }
  return { out, ttft, finish: finish! };
}

const prompt = (n: number, salt: number) => Array.from({ length: n }, (_, i) => 3 + ((i * 31 + salt * 7) % 500));

test('a single 8K prefill takes the profile time (±5%) and the pool is the simulated GPU, not host memory', async () => {
  const { engine } = await createEngine({ model: 'stories260K', simulate: 'h200-llama8b', maxNumBatchedTokens: 8192 } as EngineOptions);
  try {
    assert.equal(engine.info.maxModelLen, 32768);
    assert.equal(engine.info.numBlocks, Math.floor(860000 / 16), 'KV capacity from the profile');
    assert.equal(engine.info.simulated, 'h200-llama8b');
    assert.equal(engine.internals.memory.buffer.byteLength, 65536, 'no KV memory behind a simulated pool');
    // min over distinct prompts: robust to a busy machine, where a wake-up can come late but never early
    const ttfts: number[] = [];
    for (let i = 0; i < 5; i++) ttfts.push((await run(engine, prompt(8192 - 1, i), 1, undefined, `p${i}`)).ttft);
    const best = Math.min(...ttfts);
    assert.ok(best >= 234.2 * 0.95 && best <= 234.2 * 1.05, `8K prefill took ${best.toFixed(1)} ms (profile: 234.2; runs ${ttfts.map((t) => t.toFixed(1)).join(", ")})`);
  } finally {
    await engine.close();
  }
});

test('simulated engines keep the scheduler invariants: batch limit, prefix hits, preemption', async () => {
  // 36 blocks of 16 tokens: two 256-token prompts (16 blocks each) fit, growing by 64 tokens (20 each) they do not → preemption
  const { engine } = await createEngine({ model: 'stories260K', simulate: 'h200-llama8b', numBlocks: 36, maxNumSeqs: 3, maxNumBatchedTokens: 2048 } as EngineOptions);
  try {
    let maxRunning = 0;
    const timer = setInterval(() => (maxRunning = Math.max(maxRunning, engine.internals.scheduler.running.length)), 1);
    const rs = await Promise.all([0, 1, 2, 3].map((i) => run(engine, prompt(256, 10 + i), 64, undefined, `r${i}`)));
    clearInterval(timer);
    for (const r of rs) assert.equal(r.out.length, 64);
    assert.ok(maxRunning <= 3, `max-num-seqs 3 respected (saw ${maxRunning})`);
    const metrics = await engine.metrics.registry.metrics();
    assert.ok(Number(/vllm:num_preemptions_total\{[^}]*\} (\d+)/.exec(metrics)?.[1]) > 0, 'a full pool preempts');
    // the last prompt again (its blocks are the most recently used): served from the prefix cache, same tokens
    const again = await run(engine, prompt(256, 13), 64, undefined, 'r3');
    assert.deepEqual(again.out, rs[3]!.out);
    assert.ok(again.finish.usage.cachedTokens >= 240, `prefix hit: ${again.finish.usage.cachedTokens} cached tokens`);
    assert.equal(engine.internals.blockPool.usage, 0);
  } finally {
    await engine.close();
  }
});

test('P/D between simulated engines: same tokens, KV bytes counted at the profile size, leases released', async () => {
  const opts = { model: 'stories260K', simulate: 'h200-llama8b', maxNumBatchedTokens: 512 } as EngineOptions;
  const { engine: both } = await createEngine(opts);
  const { engine: p } = await createEngine({ ...opts, role: 'prefill' });
  const { engine: d } = await createEngine({ ...opts, role: 'decode', simulate: 'decode-accel-llama8b' });
  try {
    const ids = prompt(4096, 99);
    const local = await run(both, ids, 8);
    assert.equal(local.out.length, 8, 'a simulated model never stops early');
    assert.ok(local.ttft >= 106 * 0.95, `4096 tokens in chunks of 512 cost at least one 4K pass (took ${local.ttft.toFixed(1)} ms)`);
    const leg1 = await run(p, ids, 1, { do_remote_decode: true });
    const t0 = performance.now();
    const split = await run(d, ids, 8, leg1.finish.kvTransferParams);
    assert.deepEqual(split.out, local.out);
    assert.ok(split.finish.usage.cachedTokens >= 4095);
    const recv = /tandem:kv_transfer_bytes_total\{[^}]*direction="recv"[^}]*\} (\d+)/.exec(await d.metrics.registry.metrics());
    assert.equal(Number(recv?.[1]), 4095 * 131072, 'declared KV bytes: 4095 tokens × 128 KiB');
    // 512 MiB over the prefill side's 25 GB/s link: ≥ 21 ms
    assert.ok(performance.now() - t0 >= (4095 * 131072) / 25e9 * 1000, 'the transfer takes the link time');
    assert.equal(p.internals.blockPool.usage, 0, 'lease released after the pull');
  } finally {
    await Promise.all([both.close(), p.close(), d.close()]);
  }
});

test('a simulated engine refuses a KV store (it has no KV bytes to store)', async () => {
  await assert.rejects(createEngine({ model: 'stories260K', simulate: 'h200-llama8b', kvStore: 'memory:64MiB' } as EngineOptions), /--kv-store needs real KV bytes/);
});
