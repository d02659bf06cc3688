// Issue 3's named tests: a real `tandem serve` process with the real engine and stories260K, over
// real HTTP, driven by the official openai client.

import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import OpenAI from 'openai';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const MODEL = 'stories260K';

interface Serve {
  url: string;
  /** the KV transfer port from the listening line ('none' when the engine runs none) */
  kvPort: string;
  proc: ChildProcess;
  client: OpenAI;
  output: () => string;
  stop(): Promise<number | null>;
}

/** servers still running; killed if the test process ends first (a failed test must not leak them) */
const live = new Set<ChildProcess>();
process.on('exit', () => {
  for (const p of live) p.kill('SIGKILL');
});

/** a test that would otherwise hang on an engine bug fails instead */
const T = { timeout: 120_000 };

async function serve(...args: string[]): Promise<Serve> {
  const proc = spawn(process.execPath, ['bin/tandem.js', 'serve', '--model', MODEL, '--port', '0', ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  live.add(proc);
  proc.once('exit', () => live.delete(proc));
  let out = '';
  proc.stdout!.on('data', (d) => (out += d));
  proc.stderr!.on('data', (d) => (out += d));
  let kvPort = 'none';
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no listening line within 60 s:\n${out}`)), 60_000);
    const check = () => {
      const m = /tandem serve: (\S+) on (http:\/\/\S+) \(role (\w+), kv port (\S+)\)/.exec(out);
      if (m) {
        clearTimeout(timer);
        assert.equal(m[1], MODEL);
        kvPort = m[4]!;
        resolve(m[2]!);
      }
    };
    proc.stdout!.on('data', check);
    proc.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`tandem serve exited with ${code} before listening:\n${out}`));
    });
  });
  const exited = once(proc, 'exit').then(([code]) => code as number | null);
  let terminated = false;
  return {
    url,
    kvPort,
    proc,
    client: new OpenAI({ baseURL: `${url}/v1`, apiKey: 'none', maxRetries: 0, timeout: 60_000 }),
    output: () => out,
    /** SIGTERM once (a second one would skip the drain), resolve with the exit code */
    async stop() {
      if (!terminated && proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM');
      terminated = true;
      return exited;
    },
  };
}

async function post(url: string, body: unknown, headers: Record<string, string> = {}): Promise<{ status: number; headers: Headers; json: any }> {
  const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: typeof body === 'string' ? body : JSON.stringify(body) });
  const text = await res.text();
  let json: any;
  try {
    json = JSON.parse(text);
  } catch {
    json = text;
  }
  return { status: res.status, headers: res.headers, json };
}

/** The value of one sample in Prometheus text format (the first series of that name). */
async function metric(url: string, name: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  for (const line of text.split('\n')) {
    const m = /^([^{\s]+)(\{[^}]*\})?\s+(\S+)$/.exec(line);
    if (m && m[1] === name) return Number(m[3]);
  }
  throw new Error(`metric ${name} not found`);
}

async function until(cond: () => Promise<boolean> | boolean, what: string, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const PROMPTS = [
  'Once upon a time',
  'The little dog',
  'Lily wanted to',
  'One day, a boy named Tom',
  'The sun was',
  'There was a big tree',
  'Sara and Ben',
  'The cat saw a bird',
  'Mom said',
  'In the park',
  'A little girl',
  'The bear was hungry',
  'Tim had a red ball',
  'The fish',
  'It was a sunny day',
  'The king',
];

describe('tandem serve with the real engine', T, () => {
  let s: Serve;
  before(async () => {
    s = await serve('--max-body-bytes', '64KiB');
  });
  after(async () => {
    assert.equal(await s.stop(), 0, s.output());
  });

  test('openai client: completions and chat, streaming and not, agree', T, async () => {
    const c = await s.client.completions.create({ model: MODEL, prompt: 'Once upon a time', max_tokens: 24, temperature: 0 });
    assert.equal(c.object, 'text_completion');
    assert.equal(c.choices[0]!.finish_reason, 'length');
    assert.ok(c.choices[0]!.text.length > 0);
    assert.equal(c.usage!.completion_tokens, 24);
    const stream = await s.client.completions.create({ model: MODEL, prompt: 'Once upon a time', max_tokens: 24, temperature: 0, stream: true, stream_options: { include_usage: true } });
    let text = '';
    let usage: any;
    for await (const ch of stream) {
      for (const x of ch.choices) text += x.text;
      if (ch.usage) usage = ch.usage;
    }
    assert.equal(text, c.choices[0]!.text);
    assert.equal(usage.completion_tokens, 24);

    const chat = await s.client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'Tell me a story.' }], max_tokens: 16, temperature: 0 });
    assert.equal(chat.object, 'chat.completion');
    assert.equal(chat.choices[0]!.message.role, 'assistant');
    const cs = await s.client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'Tell me a story.' }], max_tokens: 16, temperature: 0, stream: true });
    let chatText = '';
    let first = true;
    for await (const ch of cs) {
      if (first) assert.equal(ch.choices[0]!.delta.role, 'assistant');
      first = false;
      chatText += ch.choices[0]?.delta.content ?? '';
    }
    assert.equal(chatText, chat.choices[0]!.message.content);
  });

  test('16 concurrent greedy requests equal the same requests one at a time', T, async () => {
    const one = async (prompt: string) =>
      (await s.client.completions.create({ model: MODEL, prompt, max_tokens: 32, temperature: 0, ignore_eos: true } as any)).choices[0]!.text;
    const sequential: string[] = [];
    for (const p of PROMPTS) sequential.push(await one(p));
    const concurrent = await Promise.all(PROMPTS.map(one));
    assert.deepEqual(concurrent, sequential);
  });

  test('a repeated long prompt hits the prefix cache; cache_salt isolates', T, async () => {
    const prompt = PROMPTS.join('. ') + '. ' + PROMPTS.join(' and ');
    const ask = (salt?: string) => post(`${s.url}/v1/completions`, { model: MODEL, prompt, max_tokens: 16, temperature: 0, ...(salt ? { cache_salt: salt } : {}) });
    const a = await ask('tenant-a');
    assert.equal(a.status, 200, JSON.stringify(a.json));
    assert.ok(a.json.usage.prompt_tokens > 64);
    assert.equal(a.json.usage.prompt_tokens_details.cached_tokens, 0);
    const b = await ask('tenant-a');
    assert.ok(b.json.usage.prompt_tokens_details.cached_tokens > 0, 'second identical prompt reuses blocks');
    assert.equal(b.json.choices[0].text, a.json.choices[0].text);
    const c = await ask('tenant-b');
    assert.equal(c.json.usage.prompt_tokens_details.cached_tokens, 0, 'another salt shares nothing');
    assert.equal(c.json.choices[0].text, a.json.choices[0].text);
    const d = await ask();
    assert.equal(d.json.usage.prompt_tokens_details.cached_tokens, 0, 'no salt is its own namespace');
    assert.ok((await metric(s.url, 'vllm:prefix_cache_hits_total')) > 0);
  });

  test('bad input: malformed JSON, wrong types, too long, unknown model, oversized body', T, async () => {
    const u = `${s.url}/v1/completions`;
    const bad = await post(u, '{"prompt": ');
    assert.equal(bad.status, 400);
    assert.match(bad.json.error.message, /malformed JSON/);
    const t = await post(u, { prompt: 'a', temperature: 'warm' });
    assert.equal(t.status, 400);
    assert.equal(t.json.error.param, 'temperature');
    assert.equal((await post(u, { prompt: 'a', max_tokens: -1 })).status, 400);
    assert.equal((await post(`${s.url}/v1/chat/completions`, { messages: [{ role: 'user', content: 5 }] })).status, 400);
    const long = await post(u, { prompt: 'the dog ran and '.repeat(200) });
    assert.equal(long.status, 400);
    assert.match(long.json.error.message, /maximum context length is 512 tokens/);
    const tooMany = await post(u, { prompt: 'hi', max_tokens: 600 });
    assert.equal(tooMany.status, 400);
    assert.match(tooMany.json.error.message, /maximum context length is 512 tokens/);
    await assert.rejects(s.client.completions.create({ model: 'gpt-4', prompt: 'x' }), (e: any) => e.status === 404 && /does not exist/.test(e.message));
    const big = await post(u, { prompt: 'x'.repeat(100 * 1024) });
    assert.equal(big.status, 413);
    assert.equal(typeof big.json.error.message, 'string');
    const unknown = await fetch(`${s.url}/v1/embeddings`, { method: 'POST', body: '{}' });
    assert.equal(unknown.status, 404);
    await unknown.text();
    const method = await fetch(`${s.url}/v1/chat/completions`);
    assert.equal(method.status, 405);
    await method.text();
    // still healthy after all that
    assert.equal((await fetch(`${s.url}/health`)).status, 200);
  });

  test('a client disconnect aborts the request and frees its blocks', T, async () => {
    const ac = new AbortController();
    const res = await fetch(`${s.url}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ prompt: 'Once upon a time', max_tokens: 480, ignore_eos: true, stream: true }),
      signal: ac.signal,
    });
    const reader = res.body!.getReader();
    await reader.read();
    assert.ok((await metric(s.url, 'vllm:kv_cache_usage_perc')) > 0, 'the running request holds blocks');
    ac.abort();
    await until(async () => (await metric(s.url, 'vllm:num_requests_running')) === 0, 'the request to end');
    assert.equal(await metric(s.url, 'vllm:kv_cache_usage_perc'), 0);
  });

  test('tokenize, detokenize, models, health', T, async () => {
    const t = await post(`${s.url}/tokenize`, { model: MODEL, prompt: 'Once upon a time' });
    assert.equal(t.status, 200);
    assert.equal(t.json.count, t.json.tokens.length);
    assert.equal(t.json.max_model_len, 512);
    const d = await post(`${s.url}/detokenize`, { model: MODEL, tokens: t.json.tokens });
    assert.equal(d.json.prompt.trim(), 'Once upon a time');
    const models = await s.client.models.list();
    assert.equal(models.data[0]!.id, MODEL);
    const meta = (models.data[0] as any).tandem;
    assert.equal(meta.block_size, 16);
    assert.equal(meta.role, 'both');
    if (s.kvPort !== 'none') assert.equal(String(meta.kv_port), s.kvPort, 'the advertised KV port is the one printed');
    assert.equal((await fetch(`${s.url}/health`)).status, 200);
  });
});

test('a tiny KV pool forces preemption and still yields the same texts', T, async () => {
  const ref = await serve();
  let refTexts: string[];
  const ask = (c: OpenAI, p: string) => c.completions.create({ model: MODEL, prompt: p, max_tokens: 96, temperature: 0, ignore_eos: true } as any).then((r) => r.choices[0]!.text);
  try {
    refTexts = await Promise.all(PROMPTS.slice(0, 6).map((p) => ask(ref.client, p)));
  } finally {
    assert.equal(await ref.stop(), 0);
  }
  // 6 requests × ~7 blocks each do not fit in 16 blocks at once.
  const tiny = await serve('--num-blocks', '16');
  try {
    const texts = await Promise.all(PROMPTS.slice(0, 6).map((p) => ask(tiny.client, p)));
    assert.deepEqual(texts, refTexts);
    assert.ok((await metric(tiny.url, 'vllm:num_preemptions_total')) > 0, 'preemptions were counted');
  } finally {
    assert.equal(await tiny.stop(), 0, tiny.output());
  }
});

test('queue full → 429 with Retry-After; SIGTERM drains (503) and exits 0', T, async () => {
  const s = await serve('--max-num-seqs', '1', '--max-waiting', '1');
  try {
    const slow = (prompt: string) => post(`${s.url}/v1/completions`, { prompt, max_tokens: 480, ignore_eos: true });
    const first = slow('Once upon a time');
    await until(async () => (await metric(s.url, 'vllm:num_requests_running')) === 1, 'the first request to run');
    const second = slow('The little dog');
    await until(async () => (await metric(s.url, 'vllm:num_requests_waiting')) === 1, 'the second request to wait');
    const third = await post(`${s.url}/v1/completions`, { prompt: 'Mom said', max_tokens: 4 });
    assert.equal(third.status, 429, JSON.stringify(third.json));
    assert.match(third.headers.get('retry-after') ?? '', /^\d+$/);
    assert.equal(typeof third.json.error.message, 'string');

    const exit = s.stop();
    await until(async () => (await fetch(`${s.url}/health`)).status === 503, 'health to report draining');
    const refused = await post(`${s.url}/v1/completions`, { prompt: 'late', max_tokens: 4 });
    assert.equal(refused.status, 503);
    const [a, b] = await Promise.all([first, second]);
    assert.equal(a.status, 200);
    assert.equal(a.json.usage.completion_tokens, 480, 'the running request finished inside the drain bound');
    assert.equal(b.status, 200);
    assert.equal(await exit, 0, s.output());
  } finally {
    if (s.proc.exitCode === null) s.proc.kill('SIGKILL');
  }
});

test('P/D over HTTP: the prefill leg returns kv_transfer_params at the top level; the decode leg continues identically', T, async () => {
  const [p, d] = await Promise.all([serve('--role', 'prefill'), serve('--role', 'decode')]);
  try {
    const prompt = 'Once upon a time, there was a little dog who';
    const headers = { 'x-request-id': 'pd-http-1' };
    // vLLM's NIXL protocol, as llm-d's sidecar and vLLM's toy proxy drive it
    const leg1 = await post(`${p.url}/v1/completions`, {
      model: MODEL, prompt, temperature: 0, max_tokens: 1, stream: false,
      kv_transfer_params: { do_remote_decode: true, do_remote_prefill: false, remote_engine_id: null, remote_block_ids: null, remote_host: null, remote_port: null },
    }, headers);
    assert.equal(leg1.status, 200, JSON.stringify(leg1.json));
    const kv = leg1.json.kv_transfer_params;
    assert.equal(kv.do_remote_prefill, true);
    assert.equal(kv.do_remote_decode, false);
    assert.equal(kv.remote_request_id, 'pd-http-1');
    assert.ok(Array.isArray(kv.remote_block_ids));
    const leg2 = await post(`${d.url}/v1/completions`, { model: MODEL, prompt, temperature: 0, max_tokens: 24, kv_transfer_params: kv }, headers);
    assert.equal(leg2.status, 200, JSON.stringify(leg2.json));
    assert.ok(leg2.json.usage.prompt_tokens_details.cached_tokens > 0, 'the decode engine loaded the prompt KV');
    const local = await post(`${d.url}/v1/completions`, { model: MODEL, prompt, temperature: 0, max_tokens: 24, cache_salt: 'fresh' });
    assert.equal(leg2.json.choices[0].text, local.json.choices[0].text);
  } finally {
    assert.deepEqual(await Promise.all([p.stop(), d.stop()]), [0, 0], p.output() + d.output());
  }
});

test('P/D over HTTP: a decode leg refused before admission frees the prefill engine\'s lease at once, not at expiry', T, async () => {
  const [p, d] = await Promise.all([serve('--role', 'prefill'), serve('--role', 'decode')]);
  try {
    const prompt = 'Once upon a time, there was a little dog who liked to run in the park with his friends every day';
    const leg1 = await post(`${p.url}/v1/completions`, { model: MODEL, prompt, max_tokens: 1, kv_transfer_params: { do_remote_decode: true } });
    assert.equal(leg1.status, 200, JSON.stringify(leg1.json));
    assert.ok((await metric(p.url, 'tandem:kv_leased_blocks')) > 0, 'leg 1 leased its blocks');
    // the decode engine refuses the leg (context too long): nobody will pull, the lease (30 s) goes now
    const leg2 = await post(`${d.url}/v1/completions`, { model: MODEL, prompt, max_tokens: 100_000, kv_transfer_params: leg1.json.kv_transfer_params });
    assert.equal(leg2.status, 400);
    assert.equal(leg2.json.error.code, 'context_length_exceeded');
    await until(async () => (await metric(p.url, 'tandem:kv_leased_blocks')) === 0, 'the lease to be released', 5000);
  } finally {
    assert.deepEqual(await Promise.all([p.stop(), d.stop()]), [0, 0], p.output() + d.output());
  }
});

test('POST /v1/kv/lookup reports the prefix held per tier (block pool and KV store)', T, async () => {
  const s = await serve('--kv-store', 'memory:64MiB', '--kv-chunk-tokens', '32');
  try {
    const prompt = 'Once upon a time, there was a little girl named Lily. She loved to play outside in the park. '.repeat(3);
    const before = await post(`${s.url}/v1/kv/lookup`, { model: MODEL, prompt });
    assert.equal(before.status, 200, JSON.stringify(before.json));
    assert.equal(before.json.matched_tokens, 0);
    await post(`${s.url}/v1/completions`, { model: MODEL, prompt, max_tokens: 1 });
    const after = await post(`${s.url}/v1/kv/lookup`, { model: MODEL, prompt });
    assert.ok(after.json.per_tier.GPU >= 32, JSON.stringify(after.json));
    assert.ok(after.json.per_tier.memory >= 32, JSON.stringify(after.json));
    const bad = await post(`${s.url}/v1/kv/lookup`, { model: MODEL, tokens: 'nope' });
    assert.equal(bad.status, 400);
  } finally {
    assert.equal(await s.stop(), 0, s.output());
  }
});
