// `tandem profile --from-engine URL`: calibrate a simulated-engine profile on real hardware. A short
// sweep against a running engine (tandem or vLLM — only the OpenAI API, /tokenize and vLLM's metric
// names are used) measures prefill time per prompt length and decode step time per batch size and
// context, and writes a profile JSON that `tandem serve --simulate FILE` replays.
//
// Prefill: one request at a time, max_tokens 1, distinct prompts (no prefix-cache hits); the time is
// the engine's own vllm:request_prefill_time_seconds (its _sum grows by exactly that request's
// prefill), so HTTP and queueing are not counted; TTFT is the fallback when the metric is absent.
// Decode: B streams started together on C-token prompts; once their prefills are done they decode in
// lock-step, so the median gap in the middle of the streams is one decode step of batch B at context
// ≈ C + half the output.

import { writeFileSync } from 'node:fs';
import { parseFlags, parseRate, UsageError } from '../cli/args.ts';
import { validateProfile, type GpuProfile } from '../engine/simulate.ts';
import { percentile } from './loadgen/index.ts';
import { streamCompletion } from './serve-util.ts';

const spec = {
  'from-engine': { type: 'string', help: 'base URL of the engine to measure (tandem serve or vLLM)' },
  model: { type: 'string', help: 'model id (default: the first of /v1/models)' },
  out: { type: 'string', default: 'profile.json', help: 'where to write the profile' },
  name: { type: 'string', help: 'profile name (default: derived from the model)' },
  prompts: { type: 'string', default: '128,256,512,1024,2048', help: 'prefill prompt lengths to measure' },
  batches: { type: 'string', default: '1,4,16', help: 'decode batch sizes to measure' },
  contexts: { type: 'string', default: '128,1024', help: 'decode prompt lengths (contexts) to measure' },
  'decode-tokens': { type: 'number', default: 32, help: 'output tokens per decode stream' },
  repeats: { type: 'number', default: 3, help: 'prefill measurements per length (median)' },
  'kv-bytes-per-token': { type: 'number', help: 'KV bytes per token (default: from a tandem engine; needed for vLLM)' },
  'kv-cache-tokens': { type: 'number', help: 'KV capacity in tokens (default: vllm:cache_config_info)' },
  'kv-bandwidth': { type: 'string', default: '3GB/s', help: 'KV link speed to record for P/D (default: loopback TCP)' },
  help: { type: 'boolean' },
} as const;

const list = (s: string, flag: string) =>
  s.split(',').map((x) => {
    const n = Number(x);
    if (!Number.isInteger(n) || n < 1) throw new UsageError(`--${flag}: '${x}' is not a positive integer`);
    return n;
  });

const median = (xs: readonly number[]) => percentile(xs, 50);

async function getJson(url: string, init?: RequestInit): Promise<any> {
  const r = await fetch(url, { ...init, signal: AbortSignal.timeout(30_000) });
  const text = await r.text();
  if (!r.ok) throw new Error(`${init?.method ?? 'GET'} ${url}: HTTP ${r.status}: ${text.slice(0, 300)}`);
  return JSON.parse(text);
}

async function prefillSecondsSum(base: string): Promise<number | undefined> {
  const text = await (await fetch(`${base}/metrics`)).text();
  let sum: number | undefined;
  for (const m of text.matchAll(/^vllm:request_prefill_time_seconds_sum(?:\{[^}]*\})? ([\d.e+-]+)$/gm)) sum = (sum ?? 0) + Number(m[1]);
  return sum;
}

const WORDS = 'time river stone light garden morning story little window yellow music paper forest animal ocean winter'.split(' ');

/** Token-id prompts of exactly `len` tokens in the engine's own vocabulary, each different from the others. */
async function promptFactory(base: string, model: string) {
  let n = 0;
  return async (len: number): Promise<number[]> => {
    const salt = ++n;
    const ids: number[] = [];
    while (ids.length < len) {
      const words = Array.from({ length: Math.max(64, len) }, (_, i) => WORDS[(i * 7 + salt * 13 + ids.length + ((i * salt) % 5)) % WORDS.length]);
      const r = await getJson(`${base}/tokenize`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ model, prompt: `${salt} ${ids.length} ${words.join(' ')}`, add_special_tokens: false }),
      });
      ids.push(...(r.tokens as number[]));
    }
    return ids.slice(0, len);
  };
}

export async function main(argv: string[]): Promise<number> {
  const f = parseFlags(argv, spec);
  if (f.help) {
    const lines = ['usage: tandem profile --from-engine URL [--out profile.json] [options]', ''];
    for (const [k, s] of Object.entries(spec)) if ('help' in s && s.help) lines.push(`  --${k.padEnd(20)} ${s.help}`);
    console.log(lines.join('\n'));
    return 0;
  }
  const base = f['from-engine']?.replace(/\/$/, '');
  if (!base || !/^https?:\/\//.test(base)) throw new UsageError('--from-engine URL is required (e.g. http://127.0.0.1:8100)');
  const prompts = list(f.prompts!, 'prompts');
  const batches = list(f.batches!, 'batches');
  const contexts = list(f.contexts!, 'contexts');
  const outTokens = f['decode-tokens']!;
  if (!Number.isInteger(outTokens) || outTokens < 8) throw new UsageError('--decode-tokens must be an integer ≥ 8 (the middle gaps are used)');

  const models = await getJson(`${base}/v1/models`);
  const card = (models.data as any[]).find((m) => f.model === undefined || m.id === f.model);
  if (!card) throw new UsageError(`model ${f.model} is not served by ${base}`);
  const model = card.id as string;
  const maxModelLen = Number(card.max_model_len);
  if (!(maxModelLen > 0)) throw new UsageError(`${base}/v1/models gives no max_model_len for ${model}`);
  const longest = Math.max(...prompts, ...contexts.map((c) => c + outTokens));
  if (longest > maxModelLen) throw new UsageError(`the sweep needs ${longest} tokens of context but ${model} allows ${maxModelLen}`);
  const kvBytesPerToken = f['kv-bytes-per-token'] ?? card.tandem?.kv_bytes_per_token;
  if (!(kvBytesPerToken > 0)) throw new UsageError('--kv-bytes-per-token is needed (layers × 2 × KV heads × head dim × bytes per element)');
  let kvCacheTokens = f['kv-cache-tokens'];
  if (kvCacheTokens === undefined) {
    const text = await (await fetch(`${base}/metrics`)).text();
    const info = /^vllm:cache_config_info\{([^}]*)\}/m.exec(text)?.[1] ?? '';
    const label = (k: string) => Number(new RegExp(`${k}="(\\d+)"`).exec(info)?.[1]);
    kvCacheTokens = label('num_gpu_blocks') * label('block_size');
    if (!(kvCacheTokens > 0)) throw new UsageError('--kv-cache-tokens is needed (no vllm:cache_config_info with num_gpu_blocks and block_size)');
  }

  const makePrompt = await promptFactory(base, model);
  // warm-up: first requests pay for JIT, kernel compilation and allocations that steady state does not
  for (let i = 0; i < 2; i++) await streamCompletion(base, { model, prompt: await makePrompt(Math.min(...prompts)), max_tokens: 4, temperature: 0 });
  const prefill: [number, number][] = [];
  for (const len of prompts) {
    const times: number[] = [];
    for (let r = 0; r < f.repeats!; r++) {
      const ids = await makePrompt(len);
      const before = await prefillSecondsSum(base);
      const res = await streamCompletion(base, { model, prompt: ids, max_tokens: 1, temperature: 0 });
      const after = await prefillSecondsSum(base);
      times.push(before !== undefined && after !== undefined && after > before ? (after - before) * 1000 : res.ttftMs);
    }
    prefill.push([len, round(median(times))]);
    process.stderr.write(`tandem profile: prefill ${len} tokens: ${median(times).toFixed(2)} ms\n`);
  }

  const decode: [number, number, number][] = [];
  for (const ctx of contexts) {
    for (const batch of batches) {
      const ps = await Promise.all(Array.from({ length: batch }, () => makePrompt(ctx)));
      const rs = await Promise.all(
        ps.map((ids) => streamCompletion(base, { model, prompt: ids, max_tokens: outTokens, temperature: 0, ignore_eos: true })),
      );
      const gaps = rs.flatMap((r) => r.gaps.slice(Math.floor(r.gaps.length / 4), Math.ceil((3 * r.gaps.length) / 4)));
      if (!gaps.length) throw new Error(`no decode gaps measured at batch ${batch}, context ${ctx}`);
      decode.push([batch, ctx + Math.round(outTokens / 2), round(median(gaps))]);
      process.stderr.write(`tandem profile: decode batch ${batch} at context ${ctx}: ${median(gaps).toFixed(2)} ms/step\n`);
    }
  }

  const profile: GpuProfile = validateProfile(
    {
      name: f.name ?? `${model.replace(/[^\w.-]+/g, '-')}-measured`,
      description: `${model} as served by ${base}, measured by tandem profile`,
      provenance:
        `Measured ${new Date().toISOString()} by \`tandem profile --from-engine ${base}\`: prefill = vllm:request_prefill_time_seconds per request ` +
        `(median of ${f.repeats}, distinct prompts), decode = median inter-token gap in the middle half of ${outTokens}-token streams started together; ` +
        `KV capacity from ${f['kv-cache-tokens'] === undefined ? 'vllm:cache_config_info' : '--kv-cache-tokens'}; link speed ${f['kv-bandwidth']} as given.`,
      kvBytesPerToken,
      kvCacheTokens,
      maxModelLen,
      stepOverheadMs: 0,
      prefill,
      decode,
      kvTransfer: { bandwidthGBps: parseRate(f['kv-bandwidth']!, 'kv-bandwidth') / 1e9, latencyMs: 0.1 },
    },
    'measured',
  );
  writeFileSync(f.out!, JSON.stringify(profile, null, 2) + '\n');
  console.log(`tandem profile: wrote ${f.out} (${prefill.length} prefill points, ${decode.length} decode points); use it with --simulate ${f.out}`);
  return 0;
}

const round = (x: number) => Math.round(x * 1000) / 1000;
