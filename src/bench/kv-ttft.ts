// TTFT of prefill → decode (two engine processes, vLLM's two legs) against one `both` engine, for one
// long prompt: what disaggregation costs a single request on this machine (the KV transfer plus a leg).
import { request } from 'undici';
import { percentile, startServe, streamCompletion, type Served } from './serve-util.ts';

async function post(url: string, body: unknown): Promise<Record<string, unknown>> {
  const r = await request(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  const j = (await r.body.json()) as Record<string, unknown>;
  if (r.statusCode !== 200) throw new Error(`HTTP ${r.statusCode}: ${JSON.stringify(j)}`);
  return j;
}

export async function measurePdTtft(model: string, promptTokens: number, repeats: number, vocab: number): Promise<string> {
  const servers: Served[] = [];
  try {
    const args = ['--model', model, '--max-num-batched-tokens', '512'];
    const [both, prefill, decode] = await Promise.all([
      startServe([...args, '--role', 'both']),
      startServe([...args, '--role', 'prefill']),
      startServe([...args, '--role', 'decode']),
    ]);
    servers.push(both, prefill, decode);
    // A fresh prompt each time (distinct first token), so no prefix cache helps either side.
    const prompt = (s: number) => Array.from({ length: promptTokens }, (_, i) => 3 + ((i * 7919 + s * 104729 + s) % (vocab - 3)));
    const local: number[] = [];
    const split: number[] = [];
    const transfer: number[] = [];
    for (let r = 0; r < repeats; r++) {
      const a = await streamCompletion(both.url, { prompt: prompt(2 * r), max_tokens: 4, temperature: 0, ignore_eos: true });
      local.push(a.ttftMs);
      const t0 = performance.now();
      const leg1 = await post(`${prefill.url}/v1/completions`, {
        prompt: prompt(2 * r + 1),
        max_tokens: 1,
        stream: false,
        kv_transfer_params: { do_remote_decode: true, do_remote_prefill: false, remote_engine_id: null, remote_block_ids: null, remote_host: null, remote_port: null },
      });
      const t1 = performance.now();
      const b = await streamCompletion(decode.url, {
        prompt: prompt(2 * r + 1),
        max_tokens: 4,
        temperature: 0,
        ignore_eos: true,
        kv_transfer_params: leg1['kv_transfer_params'],
      });
      split.push(t1 - t0 + b.ttftMs);
      transfer.push(b.ttftMs);
    }
    const med = (xs: number[]) => percentile(xs, 50);
    return [
      `TTFT for a ${promptTokens}-token prompt on \`${model}\` (median of ${repeats}; each run a fresh prompt):`,
      '',
      '| setup | TTFT ms | of which decode leg (pull KV + last token) ms |',
      '|---|---|---|',
      `| one \`both\` engine | ${med(local).toFixed(0)} | – |`,
      `| prefill → decode (two engines) | ${med(split).toFixed(0)} | ${med(transfer).toFixed(0)} |`,
      '',
      `Split/local TTFT ratio: ${(med(split) / med(local)).toFixed(2)}×.`,
    ].join('\n');
  } finally {
    await Promise.all(servers.map((s) => s.stop()));
  }
}
