// `tandem up --prefill-profile P --decode-profile D`: a heterogeneous simulated cluster behind the gateway.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import { startUp } from '../../src/bench/experiments/cluster.ts';

test('a heterogeneous simulated P/D cluster: profiles per role, the seed routing, KV bytes at the profile size', async () => {
  const cluster = await startUp(['--prefill', '1', '--decode', '1', '--prefill-profile', 'h200-llama8b', '--decode-profile', 'decode-accel-llama8b', '--port', '0']);
  try {
    const simulated: Record<string, string> = {};
    for (const e of cluster.engines) {
      const m = (await (await fetch(`${e.url}/v1/models`)).json()) as { data: { tandem: { simulated: string; kv_bytes_per_token: number } }[] };
      simulated[e.role] = m.data[0]!.tandem.simulated;
      assert.equal(m.data[0]!.tandem.kv_bytes_per_token, 131072);
    }
    assert.deepEqual(simulated, { prefill: 'h200-llama8b', decode: 'decode-accel-llama8b' });
    const ask = async (prompt: number[]) => {
      const r = await fetch(`${cluster.url}/v1/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'synthetic-tiny', prompt, max_tokens: 4, temperature: 0 }),
      });
      const body = (await r.json()) as { choices: { text: string }[]; usage: { completion_tokens: number } };
      assert.equal(r.status, 200, JSON.stringify(body));
      return { route: r.headers.get('x-tandem-route'), tokens: body.usage.completion_tokens };
    };
    // the seed's Figures 3–4: 5 tokens stay on one decode engine, 59 tokens are split
    assert.deepEqual(await ask([5, 6, 7, 8, 9]), { route: 'decode-only', tokens: 4 });
    const long = Array.from({ length: 59 }, (_, i) => 10 + i);
    assert.deepEqual(await ask(long), { route: 'prefill-decode', tokens: 4 });
    const decode = cluster.engines.find((e) => e.role === 'decode')!;
    const metrics = await (await fetch(`${decode.url}/metrics`)).text();
    const recv = Number(/tandem:kv_transfer_bytes_total\{[^}]*direction="recv"[^}]*\} (\d+)/.exec(metrics)?.[1]);
    assert.equal(recv, 58 * 131072, 'the decode engine pulled 58 tokens × 128 KiB (the last prompt token runs locally)');
  } finally {
    await cluster.stop();
  }
});

test('tandem up refuses a half-simulated cluster', () => {
  const r = spawnSync(process.execPath, ['bin/tandem.js', 'up', '--prefill', '1', '--decode', '0', '--both', '1', '--prefill-profile', 'h200-llama8b', '--port', '0'], { encoding: 'utf8' });
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /--simulate is needed for the both engines: a cluster is either all simulated or all real/);
});
