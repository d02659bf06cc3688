// The HTTP layer against a deterministic fake engine: vLLM's shapes, SSE framing, every error path,
// disconnect → abort. Real sockets, the official openai client.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { request as httpRequest } from 'node:http';
import type { AddressInfo } from 'node:net';
import OpenAI from 'openai';
import { Registry, Gauge } from 'prom-client';
import { createHttpServer, type OpenAIServer } from '../../src/server/index.ts';
import { FakeEngine, type FakeEngineOptions } from './fake-engine.ts';

interface Running {
  engine: FakeEngine;
  server: OpenAIServer;
  url: string;
  client: OpenAI;
  close(): Promise<void>;
}

async function start(engineOpts: FakeEngineOptions = {}, serverOpts: { apiKey?: string; maxBodyBytes?: number } = {}): Promise<Running> {
  const engine = new FakeEngine(engineOpts);
  const registry = new Registry();
  new Gauge({ name: 'vllm:num_requests_running', help: 'running', labelNames: ['model_name'], registers: [registry] }).set({ model_name: 'fake-echo' }, 0);
  const server = createHttpServer(engine, { maxBodyBytes: serverOpts.maxBodyBytes ?? 64 * 1024, apiKey: serverOpts.apiKey, metricsRegistry: registry, log: () => {} });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: serverOpts.apiKey ?? 'none', maxRetries: 0 });
  return {
    engine,
    server,
    url,
    client,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

async function post(url: string, body: unknown, headers: Record<string, string> = {}): Promise<{ status: number; headers: Headers; json: any; text: string }> {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await res.text();
  let json: any;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: res.status, headers: res.headers, json, text };
}

function assertError(r: { status: number; json: any }, status: number, param?: string | null, match?: RegExp): void {
  assert.equal(r.status, status, JSON.stringify(r.json));
  assert.equal(typeof r.json?.error?.message, 'string');
  assert.equal(typeof r.json.error.type, 'string');
  assert.ok('param' in r.json.error && 'code' in r.json.error);
  if (param !== undefined) assert.equal(r.json.error.param, param);
  if (match) assert.match(r.json.error.message, match);
}

/** Parse an SSE body into its data payloads. */
function sseData(text: string): string[] {
  assert.ok(text.endsWith('\n\n'), 'SSE body ends with a blank line');
  return text
    .split('\n\n')
    .filter((f) => f !== '')
    .map((f) => {
      assert.ok(f.startsWith('data: '), `frame "${f}" starts with "data: "`);
      return f.slice(6);
    });
}

let s: Running;
before(async () => {
  s = await start();
});
after(async () => {
  await s.close();
});

test('completions through the openai client: vLLM response shape and usage', async () => {
  const r = await s.client.completions.create({ model: 'fake-echo', prompt: 'Hello world', max_tokens: 5, temperature: 0 });
  assert.match(r.id, /^cmpl-/);
  assert.equal(r.object, 'text_completion');
  assert.equal(r.model, 'fake-echo');
  assert.equal(typeof r.created, 'number');
  assert.equal(r.choices.length, 1);
  assert.equal(r.choices[0]!.text, 'Hello');
  assert.equal(r.choices[0]!.finish_reason, 'length');
  assert.equal((r.choices[0] as any).stop_reason, null);
  assert.deepEqual(r.usage, { prompt_tokens: 12, completion_tokens: 5, total_tokens: 17, prompt_tokens_details: { cached_tokens: 0 } });
  assert.ok('kv_transfer_params' in r);
  const sent = s.engine.submitted.at(-1)!;
  assert.deepEqual(sent.promptIds.slice(0, 3), [1, 'H'.charCodeAt(0) + 3, 'e'.charCodeAt(0) + 3]);
  assert.equal(sent.maxTokens, 5);
  assert.equal(sent.sampling.temperature, 0);
  assert.equal(sent.requestId, r.id, 'without x-request-id the engine runs under the response id');
});

test('completions default max_tokens is the remaining context; prompt may be token ids', async () => {
  const r = await s.client.completions.create({ model: 'fake-echo', prompt: [72, 73, 74], stream: false });
  assert.equal(s.engine.submitted.at(-1)!.maxTokens, 256 - 3);
  assert.equal(r.usage!.completion_tokens, 253);
  const single = await s.client.completions.create({ model: 'fake-echo', prompt: ['abc'], max_tokens: 2 });
  assert.equal(single.choices[0]!.text, 'ab');
});

test('completions streaming: SSE chunks, [DONE], include_usage', async () => {
  const stream = await s.client.completions.create({ model: 'fake-echo', prompt: 'abcdef', max_tokens: 4, stream: true, stream_options: { include_usage: true } });
  let text = '';
  const chunks: any[] = [];
  for await (const c of stream) {
    chunks.push(c);
    for (const ch of c.choices) text += ch.text;
  }
  assert.equal(text, 'abcd');
  const last = chunks.at(-1);
  assert.deepEqual(last.choices, []);
  assert.deepEqual({ ...last.usage, prompt_tokens_details: undefined }, { prompt_tokens: 7, completion_tokens: 4, total_tokens: 11, prompt_tokens_details: undefined });
  assert.equal(typeof last.usage.prompt_tokens_details.cached_tokens, 'number');
  const fin = chunks.at(-2);
  assert.equal(fin.choices[0].finish_reason, 'length');
  for (const c of chunks) {
    assert.equal(c.object, 'text_completion');
    assert.equal(c.id, chunks[0].id);
  }
  // raw framing
  const raw = await fetch(`${s.url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ prompt: 'xy', max_tokens: 2, stream: true }) });
  assert.match(raw.headers.get('content-type')!, /^text\/event-stream/);
  const data = sseData(await raw.text());
  assert.equal(data.at(-1), '[DONE]');
  assert.ok(data.slice(0, -1).every((d) => JSON.parse(d).usage === undefined), 'no usage chunk unless asked');
});

test('chat completions: default template, message shape, streaming role chunk', async () => {
  const r = await s.client.chat.completions.create({ model: 'fake-echo', messages: [{ role: 'user', content: 'Hi' }], max_completion_tokens: 8 });
  assert.match(r.id, /^chatcmpl-/);
  assert.equal(r.object, 'chat.completion');
  assert.equal(r.choices[0]!.message.role, 'assistant');
  assert.equal(r.choices[0]!.message.content, 'user: Hi');
  assert.equal(s.engine.tokenizer.decode(s.engine.submitted.at(-1)!.promptIds), 'user: Hi\nassistant:');

  const stream = await s.client.chat.completions.create({ model: 'fake-echo', messages: [{ role: 'user', content: 'Hi' }], max_tokens: 8, stream: true, stream_options: { include_usage: true } });
  const chunks: any[] = [];
  for await (const c of stream) chunks.push(c);
  assert.deepEqual(chunks[0].choices[0].delta, { role: 'assistant', content: '' });
  assert.equal(chunks[0].object, 'chat.completion.chunk');
  const text = chunks.flatMap((c) => c.choices.map((ch: any) => ch.delta.content ?? '')).join('');
  assert.equal(text, 'user: Hi');
  assert.equal(chunks.at(-2).choices[0].finish_reason, 'length');
  assert.equal(chunks.at(-1).usage.completion_tokens, 8);
});

test('chat with a model template: bos_token/eos_token, add_generation_prompt, BOS added once', async () => {
  const t = await start({ chatTemplate: "{{ bos_token }}{% for m in messages %}[{{ m.role }}]{{ m.content }}{{ eos_token }}{% endfor %}{% if add_generation_prompt %}[assistant]{% endif %}" });
  try {
    await t.client.chat.completions.create({ model: 'fake-echo', messages: [{ role: 'system', content: 'S' }, { role: 'user', content: [{ type: 'text', text: 'U' }] }], max_tokens: 1 });
    const ids = t.engine.submitted.at(-1)!.promptIds;
    assert.equal(ids[0], 1);
    assert.notEqual(ids[1], 1, 'one BOS');
    assert.equal(t.engine.tokenizer.decode(ids, { keepSpecial: true }), '<s>[system]S</s>[user]U</s>[assistant]');
    const tk = await post(`${t.url}/tokenize`, { messages: [{ role: 'user', content: 'U' }], add_generation_prompt: false });
    assert.equal(t.engine.tokenizer.decode(tk.json.tokens, { keepSpecial: true }), '<s>[user]U</s>');
  } finally {
    await t.close();
  }
});

test('x-request-id is honoured: engine id, response id and header', async () => {
  const r = await post(`${s.url}/v1/completions`, { prompt: 'abc', max_tokens: 1 }, { 'x-request-id': 'req-42' });
  assert.equal(r.status, 200);
  assert.equal(r.headers.get('x-request-id'), 'req-42');
  assert.equal(r.json.id, 'cmpl-req-42');
  assert.equal(s.engine.submitted.at(-1)!.requestId, 'req-42');
  const c = await post(`${s.url}/v1/chat/completions`, { messages: [{ role: 'user', content: 'x' }], max_tokens: 1, stream: true }, { 'x-request-id': 'req-43' });
  assert.equal(c.headers.get('x-request-id'), 'req-43');
  assert.equal(JSON.parse(sseData(c.text)[0]!).id, 'chatcmpl-req-43');
  assertError(await post(`${s.url}/v1/completions`, { prompt: 'a' }, { 'x-request-id': 'x'.repeat(300) }), 400, 'x-request-id');
  const e = await post(`${s.url}/v1/completions`, { prompt: 'a', temperature: -1 }, { 'x-request-id': 'req-44' });
  assert.equal(e.status, 400);
  assert.equal(e.headers.get('x-request-id'), 'req-44', 'errors echo the id too');
  const g = await post(`${s.url}/v1/completions`, { prompt: 'a', max_tokens: 1 });
  assert.equal(g.headers.get('x-request-id'), g.json.id, 'a generated id is sent back');
});

test('sampling and control fields reach the engine', async () => {
  await post(`${s.url}/v1/completions`, {
    prompt: 'abc',
    max_tokens: 3,
    temperature: 0.7,
    top_p: 0.9,
    top_k: 40,
    min_p: 0.05,
    seed: 7,
    repetition_penalty: 1.1,
    presence_penalty: 0.5,
    frequency_penalty: -0.5,
    stop: 'zz',
    stop_token_ids: [5],
    ignore_eos: true,
    min_tokens: 1,
    cache_salt: 'tenant-a',
    kv_transfer_params: { do_remote_decode: true },
    include_stop_str_in_output: true,
  });
  const r = s.engine.submitted.at(-1)!;
  assert.deepEqual(r.sampling, { temperature: 0.7, topP: 0.9, topK: 40, minP: 0.05, repetitionPenalty: 1.1, presencePenalty: 0.5, frequencyPenalty: -0.5, seed: 7 });
  assert.deepEqual(r.stop, ['zz']);
  assert.deepEqual(r.stopTokenIds, [5]);
  assert.equal(r.ignoreEos, true);
  assert.equal(r.minTokens, 1);
  assert.equal(r.cacheSalt, 'tenant-a');
  assert.deepEqual(r.kvTransferParams, { do_remote_decode: true });
  assert.equal(r.includeStopStrInOutput, true);
  assert.equal(typeof r.arrivalTime, 'number');
  await post(`${s.url}/v1/completions`, { prompt: 'abc', max_tokens: 1, top_k: -1 });
  assert.equal(s.engine.submitted.at(-1)!.sampling.topK, 0, 'top_k -1 means off');
});

test('stop strings and stop token ids: finish_reason stop with vLLM stop_reason; EOS gives null', async () => {
  const a = await post(`${s.url}/v1/completions`, { prompt: 'one two three', max_tokens: 20, stop: ['two'] });
  assert.equal(a.json.choices[0].text, 'one ');
  assert.equal(a.json.choices[0].finish_reason, 'stop');
  assert.equal(a.json.choices[0].stop_reason, 'two');
  const b = await post(`${s.url}/v1/completions`, { prompt: 'abc', max_tokens: 20, stop_token_ids: ['c'.charCodeAt(0) + 3] });
  assert.equal(b.json.choices[0].text, 'ab');
  assert.equal(b.json.choices[0].stop_reason, 'c'.charCodeAt(0) + 3);
  // The fake echoes a BOS inside the prompt as EOS.
  const c = await post(`${s.url}/v1/completions`, { prompt: [65, 66, 1, 67], max_tokens: 20 });
  assert.equal(c.json.choices[0].finish_reason, 'stop');
  assert.equal(c.json.choices[0].stop_reason, null);
  // Streaming: the held-back stop string never leaks.
  const d = await post(`${s.url}/v1/completions`, { prompt: 'one two three', max_tokens: 20, stop: ['two'], stream: true });
  const chunks = sseData(d.text).slice(0, -1).map((x) => JSON.parse(x));
  assert.equal(chunks.map((c) => c.choices[0].text).join(''), 'one ');
  assert.equal(chunks.at(-1).choices[0].stop_reason, 'two');
});

test('logprobs: completions {tokens, token_logprobs, top_logprobs, text_offset}; chat content[]', async () => {
  const a = await post(`${s.url}/v1/completions`, { prompt: 'abc', max_tokens: 3, logprobs: 2 });
  const lp = a.json.choices[0].logprobs;
  assert.deepEqual(lp.tokens, ['a', 'b', 'c']);
  assert.deepEqual(lp.token_logprobs, [-0.5, -0.5, -0.5]);
  assert.deepEqual(lp.text_offset, [0, 1, 2]);
  assert.deepEqual(lp.top_logprobs[0], { a: -0.5, b: -2 }, 'sampled token plus top-2 (a, b; a already present)');
  const b = await s.client.chat.completions.create({ model: 'fake-echo', messages: [{ role: 'user', content: 'q' }], max_tokens: 2, logprobs: true, top_logprobs: 1 });
  const content = b.choices[0]!.logprobs!.content!;
  assert.equal(content.length, 2);
  assert.equal(content[0]!.token, 'u');
  assert.deepEqual(content[0]!.bytes, [117]);
  assert.deepEqual(content[0]!.top_logprobs, [{ token: 'a', logprob: -1, bytes: [97] }]);
  const c = await post(`${s.url}/v1/completions`, { prompt: 'abc', max_tokens: 3, logprobs: 0, stream: true });
  const offs = sseData(c.text).slice(0, -1).map((x) => JSON.parse(x)).flatMap((x) => x.choices[0].logprobs?.text_offset ?? []);
  assert.deepEqual(offs, [0, 1, 2], 'stream offsets continue across chunks');
});

test('n > 1: one engine request per choice, indexed choices, usage counts the prompt once', async () => {
  const before = s.engine.submitted.length;
  const r = await post(`${s.url}/v1/completions`, { prompt: 'abc', max_tokens: 2, n: 3, seed: 10, temperature: 1 }, { 'x-request-id': 'multi' });
  assert.equal(r.status, 200);
  assert.deepEqual(r.json.choices.map((c: any) => [c.index, c.text, c.finish_reason]), [[0, 'ab', 'length'], [1, 'ab', 'length'], [2, 'ab', 'length']]);
  assert.deepEqual({ ...r.json.usage, prompt_tokens_details: undefined }, { prompt_tokens: 4, completion_tokens: 6, total_tokens: 10, prompt_tokens_details: undefined });
  const subs = s.engine.submitted.slice(before);
  assert.deepEqual(subs.map((x) => x.requestId), ['multi-0', 'multi-1', 'multi-2']);
  assert.deepEqual(subs.map((x) => x.sampling.seed), [10, 11, 12], 'distinct but reproducible seeds');

  const st = await post(`${s.url}/v1/chat/completions`, { messages: [{ role: 'user', content: 'q' }], max_tokens: 3, n: 2, stream: true, stream_options: { include_usage: true } });
  const chunks = sseData(st.text).slice(0, -1).map((x) => JSON.parse(x));
  for (const i of [0, 1]) {
    const mine = chunks.filter((c) => c.choices[0]?.index === i);
    assert.deepEqual(mine[0].choices[0].delta, { role: 'assistant', content: '' });
    assert.equal(mine.map((c) => c.choices[0].delta.content ?? '').join(''), 'use');
    assert.equal(mine.at(-1).choices[0].finish_reason, 'length');
  }
  assert.equal(chunks.at(-1).usage.completion_tokens, 6);
});

test('echo prepends the prompt text', async () => {
  const r = await post(`${s.url}/v1/completions`, { prompt: 'xyz', max_tokens: 2, echo: true });
  assert.equal(r.json.choices[0].text, 'xyzxy');
});

test('kv_transfer_params from the finish event are returned at the top level', async () => {
  const t = await start({ kvTransferParams: { do_remote_prefill: true, remote_block_ids: [1, 2] } });
  try {
    const r = await post(`${t.url}/v1/completions`, { prompt: 'abc', max_tokens: 1, kv_transfer_params: { do_remote_decode: true } });
    assert.deepEqual(r.json.kv_transfer_params, { do_remote_prefill: true, remote_block_ids: [1, 2] });
  } finally {
    await t.close();
  }
});

test('bad input: malformed JSON, wrong types, unsupported values → 400 naming the field', async () => {
  const u = `${s.url}/v1/completions`;
  assertError(await post(u, '{"prompt": "a",'), 400, null, /malformed JSON/);
  assertError(await post(u, '[1,2]'), 400, null, /JSON object/);
  assertError(await post(u, ''), 400);
  assertError(await post(u, { prompt: 'a', temperature: 'hot' }), 400, 'temperature', /temperature must be a number ≥ 0/);
  assertError(await post(u, { prompt: 'a', temperature: -1 }), 400, 'temperature');
  assertError(await post(u, { prompt: 'a', top_p: 0 }), 400, 'top_p');
  assertError(await post(u, { prompt: 'a', top_k: 1.5 }), 400, 'top_k');
  assertError(await post(u, { prompt: 'a', max_tokens: 0 }), 400, 'max_tokens');
  assertError(await post(u, { prompt: 'a', max_tokens: '5' }), 400, 'max_tokens');
  assertError(await post(u, { prompt: 'a', stream: 'yes' }), 400, 'stream');
  assertError(await post(u, { prompt: 'a', stop: [1] }), 400, 'stop');
  assertError(await post(u, { prompt: 'a', stop_token_ids: [99999] }), 400, 'stop_token_ids');
  assertError(await post(u, { prompt: 'a', n: 0 }), 400, 'n');
  assertError(await post(u, { prompt: 'a', n: 65 }), 400, 'n');
  assertError(await post(u, { prompt: 'a', n: 2, kv_transfer_params: { do_remote_decode: true } }), 400, 'n');
  assertError(await post(u, { prompt: 'a', best_of: 2 }), 400, 'best_of');
  assertError(await post(u, { prompt: 'a', logprobs: 21 }), 400, 'logprobs');
  assertError(await post(u, { prompt: 'a', stream_options: { include_usage: true } }), 400, 'stream_options');
  assertError(await post(u, { prompt: 'a', cache_salt: '' }), 400, 'cache_salt');
  assertError(await post(u, { prompt: 'a', kv_transfer_params: 'x' }), 400, 'kv_transfer_params');
  assertError(await post(u, { prompt: 'a', max_tokens: 5, min_tokens: 6 }), 400, 'min_tokens');
  assertError(await post(u, {}), 400, 'prompt');
  assertError(await post(u, { prompt: 12 }), 400, 'prompt');
  assertError(await post(u, { prompt: ['a', 'b'] }), 400, 'prompt');
  assertError(await post(u, { prompt: [] }), 400, 'prompt');
  assertError(await post(u, { prompt: [1, -1] }), 400, 'prompt');
  const c = `${s.url}/v1/chat/completions`;
  assertError(await post(c, { messages: 'hi' }), 400, 'messages');
  assertError(await post(c, { messages: [] }), 400, 'messages');
  assertError(await post(c, { messages: [{ content: 'x' }] }), 400, 'messages[0].role');
  assertError(await post(c, { messages: [{ role: 'user', content: [{ type: 'image_url', image_url: {} }] }] }), 400, 'messages[0].content[0].type');
  assertError(await post(c, { messages: [{ role: 'user', content: 'x' }], top_logprobs: 2 }), 400, 'top_logprobs');
  assertError(await post(c, { messages: [{ role: 'user', content: 'x' }], logprobs: 1 }), 400, 'logprobs');
  // the openai client surfaces them as BadRequestError
  await assert.rejects(s.client.completions.create({ model: 'fake-echo', prompt: 'a', temperature: -3 }), (e: any) => e.status === 400);
});

test('context too long → 400 with vLLM-like message; unknown model → 404', async () => {
  const u = `${s.url}/v1/completions`;
  assertError(await post(u, { prompt: 'x'.repeat(300) }), 400, 'prompt', /maximum context length is 256 tokens/);
  assertError(await post(u, { prompt: 'abc', max_tokens: 253 }), 400, 'max_tokens', /maximum context length is 256 tokens.*you requested 257 tokens/);
  assert.equal((await post(u, { prompt: 'abc', max_tokens: 252 })).status, 200);
  assertError(await post(`${s.url}/v1/chat/completions`, { messages: [{ role: 'user', content: 'x'.repeat(300) }] }), 400, 'messages', /maximum context length/);
  const nf = await post(u, { model: 'gpt-4', prompt: 'a' });
  assertError(nf, 404, 'model');
  assert.equal(nf.json.error.message, 'The model `gpt-4` does not exist.');
  await assert.rejects(s.client.chat.completions.create({ model: 'nope', messages: [{ role: 'user', content: 'x' }] }), (e: any) => e.status === 404);
});

test('oversized body → 413 and the connection is closed (declared and chunked)', async () => {
  const t = await start({}, { maxBodyBytes: 1024 });
  try {
    const big = JSON.stringify({ prompt: 'x'.repeat(200_000) });
    const r = await post(`${t.url}/v1/completions`, big);
    assertError(r, 413);
    // chunked: no content-length, the limit trips while reading
    const chunked = await new Promise<{ status: number; body: string; connection?: string }>((resolve, reject) => {
      const req = httpRequest(`${t.url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json', 'transfer-encoding': 'chunked' } }, (res) => {
        let body = '';
        res.on('data', (d) => (body += d));
        res.on('end', () => resolve({ status: res.statusCode!, body, connection: res.headers.connection }));
      });
      req.on('error', reject);
      req.write('{"prompt": "');
      for (let i = 0; i < 8; i++) req.write('y'.repeat(512));
      req.end('"}');
    });
    assert.equal(chunked.status, 413);
    assert.equal(chunked.connection, 'close');
    assert.equal(JSON.parse(chunked.body).error.code, 'request_too_large');
    // the server is still fine
    assert.equal((await post(`${t.url}/v1/completions`, { prompt: 'ok', max_tokens: 1 })).status, 200);
  } finally {
    await t.close();
  }
});

test('queue full → 429 with Retry-After (refused in submit() or lazily on first event)', async () => {
  for (const lazyRefusal of [false, true]) {
    const t = await start({ maxRunning: 1, maxWaiting: 0, tokenDelayMs: 20, lazyRefusal });
    try {
      const slow = post(`${t.url}/v1/completions`, { prompt: 'abcdefgh', max_tokens: 8 });
      while (t.engine.running === 0) await new Promise((r) => setTimeout(r, 2));
      const r = await post(`${t.url}/v1/completions`, { prompt: 'a', max_tokens: 1, stream: true });
      assertError(r, 429);
      assert.equal(r.headers.get('retry-after'), '2');
      assert.equal(r.json.error.type, 'rate_limit_exceeded');
      assert.equal((await slow).status, 200);
    } finally {
      await t.close();
    }
  }
});

test('engine failure mid-request: 500 JSON when not streaming, error event then [DONE] when streaming', async () => {
  const t = await start({ failOn: 'BOOM' });
  try {
    assertError(await post(`${t.url}/v1/completions`, { prompt: 'BOOM', max_tokens: 2 }), 500, undefined, /model runner failed/);
    const st = await post(`${t.url}/v1/completions`, { prompt: 'BOOM', max_tokens: 2, stream: true });
    assert.equal(st.status, 200);
    const data = sseData(st.text);
    assert.equal(data.at(-1), '[DONE]');
    assert.match(JSON.parse(data.at(-2)!).error.message, /model runner failed/);
  } finally {
    await t.close();
  }
});

test('routes: unknown → 404, wrong method → 405 with Allow; /health, /version, /metrics, /v1/models', async () => {
  const nf = await fetch(`${s.url}/v2/nothing`);
  assert.equal(nf.status, 404);
  assert.equal(((await nf.json()) as any).error.type, 'not_found_error');
  const wm = await fetch(`${s.url}/v1/completions`);
  assert.equal(wm.status, 405);
  assert.equal(wm.headers.get('allow'), 'POST');
  await wm.text();
  const h = await fetch(`${s.url}/health`);
  assert.equal(h.status, 200);
  assert.equal(await h.text(), '');
  const v = (await (await fetch(`${s.url}/version`)).json()) as any;
  assert.equal(typeof v.version, 'string');
  const m = await fetch(`${s.url}/metrics`);
  assert.match(m.headers.get('content-type')!, /text\/plain/);
  assert.match(await m.text(), /vllm:num_requests_running\{model_name="fake-echo"\} 0/);
  const models = await s.client.models.list();
  assert.equal(models.data.length, 1);
  const md = models.data[0] as any;
  assert.equal(md.id, 'fake-echo');
  assert.equal(md.object, 'model');
  assert.equal(md.owned_by, 'tandem');
  assert.equal(md.max_model_len, 256);
  assert.deepEqual(md.tandem, { role: 'both', block_size: 4, num_blocks: 64, kv_dtype: 'f32', engine_id: 'fake-engine-1', prefix_caching: true, kv_bytes_per_token: 1024 });
});

test('/tokenize and /detokenize in vLLM shapes', async () => {
  const t = await post(`${s.url}/tokenize`, { model: 'fake-echo', prompt: 'hi' });
  assert.deepEqual(t.json, { count: 3, max_model_len: 256, tokens: [1, 107, 108], token_strs: null });
  const t2 = await post(`${s.url}/tokenize`, { prompt: 'hi', add_special_tokens: false, return_token_strs: true });
  assert.deepEqual(t2.json.tokens, [107, 108]);
  assert.deepEqual(t2.json.token_strs, ['h', 'i']);
  const c = await post(`${s.url}/tokenize`, { messages: [{ role: 'user', content: 'hi' }] });
  assert.equal(s.engine.tokenizer.decode(c.json.tokens), 'user: hi\nassistant:');
  const d = await post(`${s.url}/detokenize`, { tokens: [1, 107, 108] });
  assert.deepEqual(d.json, { prompt: 'hi' });
  assertError(await post(`${s.url}/detokenize`, { tokens: [1, 5000] }), 400, 'tokens');
  assertError(await post(`${s.url}/detokenize`, { tokens: 'hi' }), 400, 'tokens');
  assertError(await post(`${s.url}/tokenize`, { model: 'other', prompt: 'x' }), 404, 'model');
  assertError(await post(`${s.url}/tokenize`, {}), 400, 'prompt');
});

test('client disconnect mid-stream aborts the engine request', async () => {
  const t = await start({ tokenDelayMs: 5 });
  try {
    const ac = new AbortController();
    const res = await fetch(`${t.url}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-request-id': 'gone-1' },
      body: JSON.stringify({ prompt: 'abc', max_tokens: 200, stream: true }),
      signal: ac.signal,
    });
    const reader = res.body!.getReader();
    await reader.read();
    ac.abort();
    const deadline = Date.now() + 5000;
    while (!t.engine.aborted.includes('gone-1') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
    assert.deepEqual(t.engine.aborted, ['gone-1']);
    while (t.engine.running > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
    assert.equal(t.engine.running, 0);

    // non-streaming too: the socket closes while the engine is still generating
    await new Promise<void>((resolve) => {
      const req = httpRequest(`${t.url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-request-id': 'gone-2' } });
      req.on('error', () => resolve());
      req.end(JSON.stringify({ prompt: 'abc', max_tokens: 200 }));
      const wait = () => (t.engine.running > 0 ? (req.destroy(), resolve()) : setTimeout(wait, 2));
      wait();
    });
    while (!t.engine.aborted.includes('gone-2') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
    assert.ok(t.engine.aborted.includes('gone-2'));
  } finally {
    await t.close();
  }
});

test('draining: /health 503, new generations 503, running ones finish', async () => {
  const t = await start({ tokenDelayMs: 10 });
  try {
    const inflight = post(`${t.url}/v1/completions`, { prompt: 'abcdef', max_tokens: 10 });
    while (t.engine.running === 0) await new Promise((r) => setTimeout(r, 2));
    t.server.startDraining();
    assert.equal(t.server.draining, true);
    assert.equal((await fetch(`${t.url}/health`)).status, 503);
    const r = await post(`${t.url}/v1/chat/completions`, { messages: [{ role: 'user', content: 'x' }] });
    assertError(r, 503);
    const done = await inflight;
    assert.equal(done.status, 200);
    assert.equal(done.json.usage.completion_tokens, 10);
  } finally {
    await t.close();
  }
});

test('api key guards /v1/* only', async () => {
  const t = await start({}, { apiKey: 'sekret' });
  try {
    const no = await post(`${t.url}/v1/completions`, { prompt: 'a', max_tokens: 1 });
    assertError(no, 401);
    const bad = await post(`${t.url}/v1/completions`, { prompt: 'a', max_tokens: 1 }, { authorization: 'Bearer nope' });
    assertError(bad, 401);
    const ok = await t.client.completions.create({ model: 'fake-echo', prompt: 'a', max_tokens: 1 });
    assert.equal(ok.choices[0]!.text, 'a');
    assert.equal((await fetch(`${t.url}/health`)).status, 200);
  } finally {
    await t.close();
  }
});

test('cached_tokens and cache_salt are reported from the engine', async () => {
  const t = await start();
  try {
    const prompt = 'the same long prompt';
    const a = await post(`${t.url}/v1/completions`, { prompt, max_tokens: 1 });
    const b = await post(`${t.url}/v1/completions`, { prompt, max_tokens: 1 });
    const c = await post(`${t.url}/v1/completions`, { prompt, max_tokens: 1, cache_salt: 'other' });
    assert.equal(a.json.usage.prompt_tokens_details.cached_tokens, 0);
    assert.ok(b.json.usage.prompt_tokens_details.cached_tokens > 0);
    assert.equal(c.json.usage.prompt_tokens_details.cached_tokens, 0);
  } finally {
    await t.close();
  }
});

test('keep-alive: several requests share one connection', async () => {
  const { Agent, request } = await import('undici');
  const agent = new Agent({ connections: 1 });
  try {
    let connections = 0;
    const count = () => connections++;
    s.server.on('connection', count);
    for (let i = 0; i < 3; i++) {
      const r = await request(`${s.url}/v1/completions`, { method: 'POST', dispatcher: agent, headers: { 'content-type': 'application/json' }, body: JSON.stringify({ prompt: 'k', max_tokens: 1 }) });
      assert.equal(r.statusCode, 200);
      await r.body.json();
    }
    s.server.off('connection', count);
    assert.equal(connections, 1);
  } finally {
    await agent.close();
  }
});
