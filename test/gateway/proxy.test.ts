// Proxy mechanics against fake vLLM-shaped servers: leg shapes, relaying, failover, limits, errors.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { FakeEngine, waitFor } from './fake-engine.ts';
import { startGateway, PD_PROXY_CONFIG_YAML, type Gateway, type GatewayOptions } from '../../src/gateway/index.ts';
import { startRegistration } from '../../src/server/register.ts';
import type { Engine } from '../../src/engine/api.ts';

const NEVER_SPLIT = `plugins:
- {type: token-producer, parameters: {backend: estimate}}
- type: decode-filter
- type: active-request-scorer
`;

const open: (Gateway | FakeEngine)[] = [];
after(async () => {
  for (const x of open.reverse()) await (x instanceof FakeEngine ? x.stop() : x.close());
});

async function fake(opts: ConstructorParameters<typeof FakeEngine>[0] = {}): Promise<FakeEngine> {
  const f = await new FakeEngine(opts).start();
  open.push(f);
  return f;
}

async function gateway(opts: GatewayOptions): Promise<Gateway> {
  const gw = await startGateway({ port: 0, log: () => {}, pool: { healthIntervalMs: 100, scrapeIntervalMs: 50 }, ...opts });
  open.push(gw);
  const n = opts.endpoints?.length ?? 0;
  await waitFor(() => gw.pool.all().filter((e) => e.healthy).length === n, 5000, 'endpoints healthy');
  return gw;
}

function post(gw: Gateway, path: string, body: unknown, headers: Record<string, string> = {}, signal?: AbortSignal) {
  return fetch(`${gw.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: typeof body === 'string' ? body : JSON.stringify(body), signal });
}

/** The rest of a streamed body, as text. */
async function readRest(reader: ReadableStreamDefaultReader<Uint8Array>): Promise<string> {
  let text = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return text;
    text += Buffer.from(value).toString();
  }
}

function sseEvents(text: string): string[] {
  return text.split('\n\n').filter(Boolean).map((e) => e.replace(/^data: /, ''));
}

test('decode-only: relays the JSON answer and plumbs x-request-id through', async () => {
  const d = await fake({ role: 'decode' });
  const gw = await gateway({ endpoints: [{ url: d.url, role: 'decode' }], configText: NEVER_SPLIT });
  const r = await post(gw, '/v1/completions', { model: 'fake', prompt: 'hi', max_tokens: 3 }, { 'x-request-id': 'req-abc' });
  assert.equal(r.status, 200);
  assert.equal(r.headers.get('x-tandem-route'), 'decode-only');
  assert.equal(r.headers.get('x-tandem-decode-endpoint'), `127.0.0.1:${d.port}`);
  assert.equal(r.headers.get('x-request-id'), 'req-abc');
  const j = (await r.json()) as { choices: { text: string }[] };
  assert.equal(j.choices[0]!.text, 'hello world');
  const rec = d.inference().at(-1)!;
  assert.equal(rec.headers['x-request-id'], 'req-abc');
  assert.equal(rec.body.max_tokens, 3);
  assert.equal(rec.body.kv_transfer_params, undefined);
});

test('P/D: leg 1 and leg 2 bodies follow the NIXL protocol; cached_tokens come from the prefill', async () => {
  const p = await fake({ role: 'prefill' });
  const d = await fake({ role: 'decode', chunks: 3 });
  const gw = await gateway({ endpoints: [{ url: p.url, role: 'prefill' }, { url: d.url, role: 'decode' }], configText: PD_PROXY_CONFIG_YAML });
  const client = { model: 'fake', messages: [{ role: 'user', content: 'hello there' }], stream: true, stream_options: { include_usage: true }, max_tokens: 5, max_completion_tokens: 5, min_tokens: 2, temperature: 0 };
  const r = await post(gw, '/v1/chat/completions', client, { 'x-request-id': 'pd-1' });
  assert.equal(r.status, 200);
  assert.equal(r.headers.get('x-tandem-route'), 'prefill-decode');
  assert.equal(r.headers.get('x-tandem-prefill-endpoint'), `127.0.0.1:${p.port}`);
  assert.equal(r.headers.get('x-tandem-decode-endpoint'), `127.0.0.1:${d.port}`);
  const events = sseEvents(await r.text());
  assert.equal(events.at(-1), '[DONE]');
  const usage = JSON.parse(events.at(-2)!) as { usage: { prompt_tokens_details: { cached_tokens: number } } };
  assert.equal(usage.usage.prompt_tokens_details.cached_tokens, 7);

  const leg1 = p.inference().at(-1)!;
  assert.deepEqual(leg1.body.kv_transfer_params, { do_remote_decode: true, do_remote_prefill: false, remote_engine_id: null, remote_block_ids: null, remote_host: null, remote_port: null });
  assert.equal(leg1.body.stream, false);
  assert.equal('stream_options' in leg1.body, false);
  assert.equal(leg1.body.max_tokens, 1);
  assert.equal(leg1.body.max_completion_tokens, 1);
  assert.equal(leg1.body.min_tokens, 1);
  assert.equal(leg1.body.temperature, 0);
  assert.equal(leg1.headers['x-request-id'], 'pd-1');

  const leg2 = d.inference().at(-1)!;
  assert.equal(leg2.headers['x-request-id'], 'pd-1');
  assert.equal(leg2.body.stream, true);
  assert.deepEqual(leg2.body.stream_options, { include_usage: true });
  assert.equal(leg2.body.max_tokens, 5);
  assert.equal(leg2.body.min_tokens, 2);
  assert.deepEqual(leg2.body.kv_transfer_params, { do_remote_prefill: true, do_remote_decode: false, remote_block_ids: [1, 2], remote_engine_id: `engine-${p.port}`, remote_request_id: 'pd-1', remote_host: '127.0.0.1', remote_port: p.port, tp_size: 1 });

  // non-streaming: the usage block of the JSON answer is rewritten too
  const r2 = await post(gw, '/v1/completions', { model: 'fake', prompt: 'abc', max_tokens: 2 });
  const j2 = (await r2.json()) as { usage: { prompt_tokens_details: { cached_tokens: number } } };
  assert.equal(j2.usage.prompt_tokens_details.cached_tokens, 7);
  const metrics = await (await fetch(`${gw.url}/metrics`)).text();
  assert.match(metrics, /tandem_gateway_disagg_decision_total\{decision="prefill-decode"\} 2/);
});

test('streaming is relayed chunk by chunk, not buffered', async () => {
  const d = await fake({ role: 'decode', chunks: 4, chunkDelayMs: 150 });
  const gw = await gateway({ endpoints: [{ url: d.url, role: 'decode' }], configText: NEVER_SPLIT });
  const r = await post(gw, '/v1/completions', { model: 'fake', prompt: 'hi', stream: true });
  const reader = r.body!.getReader();
  const first = await reader.read();
  assert.match(new TextDecoder().decode(first.value), /t0/);
  // the engine is still generating when the first chunk reached the client
  assert.equal(d.inference().at(-1)!.finished, false);
  let rest = '';
  for (;;) {
    const n = await reader.read();
    if (n.done) break;
    rest += new TextDecoder().decode(n.value);
  }
  assert.match(rest, /t3/);
  assert.match(rest, /\[DONE\]/);
});

test('a dead endpoint is retried on another and taken out; health checks bring it back', async () => {
  const bad = await fake({ role: 'decode' });
  const good = await fake({ role: 'decode' });
  const gw = await gateway({ endpoints: [{ url: bad.url, role: 'decode' }, { url: good.url, role: 'decode' }], configText: NEVER_SPLIT, pool: { healthIntervalMs: 5000 } });
  const badPort = bad.port;
  // a socket dying after the request was sent, then the process gone (connection refused)
  bad.fail = 'refuse';
  for (let i = 0; i < 3; i++) {
    const r = await post(gw, '/v1/completions', { model: 'fake', prompt: `p${i}`, stream: i % 2 === 0 });
    assert.equal(r.status, 200);
    assert.equal(r.headers.get('x-tandem-decode-endpoint'), `127.0.0.1:${good.port}`);
    await r.text();
  }
  await bad.stop();
  gw.pool.get(`127.0.0.1:${badPort}`)!.healthy = true; // as if a probe had just passed
  // ties are broken at random: keep asking until one request has tried the dead endpoint (each is still answered)
  for (let i = 0; i < 30 && gw.pool.get(`127.0.0.1:${badPort}`)!.healthy; i++) {
    const r = await post(gw, '/v1/completions', { model: 'fake', prompt: `q${i}`, stream: i % 2 === 0 });
    assert.equal(r.status, 200);
    await r.text();
  }
  assert.equal(gw.pool.get(`127.0.0.1:${badPort}`)!.healthy, false);
  const revived = await new FakeEngine({ role: 'decode' }).start(badPort);
  open.push(revived);
  await gw.pool.probe(gw.pool.get(`127.0.0.1:${badPort}`)!);
  assert.equal(gw.pool.get(`127.0.0.1:${badPort}`)!.healthy, true);
});

test('a 5xx before the first byte is retried on another endpoint', async () => {
  const bad = await fake({ role: 'decode' });
  const good = await fake({ role: 'decode' });
  const gw = await gateway({ endpoints: [{ url: bad.url, role: 'decode' }, { url: good.url, role: 'decode' }], configText: NEVER_SPLIT });
  bad.fail = 'status500';
  for (let i = 0; i < 4; i++) {
    const r = await post(gw, '/v1/completions', { model: 'fake', prompt: 'x' });
    assert.equal(r.status, 200);
    await r.text();
  }
  // with nowhere else to go, the engine's error reaches the client
  good.fail = 'status500';
  const r = await post(gw, '/v1/completions', { model: 'fake', prompt: 'x' });
  assert.equal(r.status, 500);
  const j = (await r.json()) as { error: { message: string } };
  assert.ok(j.error.message);
});

test('a stream dying before its first byte is retried', async () => {
  const bad = await fake({ role: 'decode' });
  const good = await fake({ role: 'decode' });
  const gw = await gateway({ endpoints: [{ url: bad.url, role: 'decode' }, { url: good.url, role: 'decode' }], configText: `plugins:\n- {type: token-producer, parameters: {backend: estimate}}\n- type: decode-filter\n- type: round-robin\n` });
  bad.fail = 'dieBeforeBody';
  for (let i = 0; i < 4; i++) {
    const r = await post(gw, '/v1/completions', { model: 'fake', prompt: 'x', stream: i % 2 === 1 });
    assert.equal(r.status, 200);
    const t = await r.text();
    assert.doesNotMatch(t, /error/);
  }
});

test('prefill leg failure falls back to decode-local', async () => {
  const p = await fake({ role: 'prefill' });
  const d = await fake({ role: 'decode' });
  const gw = await gateway({ endpoints: [{ url: p.url, role: 'prefill' }, { url: d.url, role: 'decode' }], configText: PD_PROXY_CONFIG_YAML });
  p.fail = 'status500';
  const r = await post(gw, '/v1/completions', { model: 'fake', prompt: 'hello', max_tokens: 4 });
  assert.equal(r.status, 200);
  assert.equal(r.headers.get('x-tandem-route'), 'decode-only');
  assert.equal(r.headers.get('x-tandem-fallback'), 'prefill-failed');
  await r.json();
  const leg = d.inference().at(-1)!;
  assert.equal(leg.body.kv_transfer_params, undefined);
  assert.equal(leg.body.max_tokens, 4);
  p.fail = 'refuse';
  const r2 = await post(gw, '/v1/completions', { model: 'fake', prompt: 'hello', stream: true });
  assert.equal(r2.headers.get('x-tandem-route'), 'decode-only');
  assert.match(await r2.text(), /\[DONE\]/);
  const metrics = await (await fetch(`${gw.url}/metrics`)).text();
  assert.match(metrics, /tandem_gateway_errors_total\{reason="prefill_failed"\} [1-9]/);
});

test('decode dying mid-stream ends the stream with an error event and [DONE]', async () => {
  const d = await fake({ role: 'decode', chunks: 5 });
  const gw = await gateway({ endpoints: [{ url: d.url, role: 'decode' }], configText: NEVER_SPLIT });
  d.fail = 'dieMidStream';
  const r = await post(gw, '/v1/chat/completions', { model: 'fake', messages: [{ role: 'user', content: 'x' }], stream: true });
  assert.equal(r.status, 200);
  const events = sseEvents(await r.text());
  assert.equal(events.at(-1), '[DONE]');
  const err = JSON.parse(events.at(-2)!) as { error: { message: string; type: string; code: string } };
  assert.equal(err.error.code, 'upstream_stream_broken');
  assert.equal(events.filter((e) => e.includes('chat.completion.chunk')).length, 2);
});

test('an endpoint that stops answering (stalled process): its legs in flight are cancelled and take the usual failure paths', async () => {
  const p = await fake({ role: 'prefill' });
  const d1 = await fake({ role: 'decode', chunks: 200, chunkDelayMs: 20 });
  const gw = await startGateway({
    port: 0,
    log: () => {},
    pool: { healthIntervalMs: 100, scrapeIntervalMs: 50, healthTimeoutMs: 300 },
    endpoints: [{ url: p.url, role: 'prefill' }, { url: d1.url, role: 'decode' }],
    configText: PD_PROXY_CONFIG_YAML,
  });
  open.push(gw);
  await waitFor(() => gw.pool.all().filter((e) => e.healthy).length === 2, 5000, 'endpoints healthy');
  const ep = (f: FakeEngine) => gw.pool.all().find((e) => e.url === f.url)!;

  // a stream is running on d1 when d1 stalls: it ends with an error event instead of hanging
  const r = await post(gw, '/v1/completions', { model: 'fake', prompt: 'x', stream: true });
  const reader = r.body!.getReader();
  await reader.read();
  d1.stalled = true;
  const text = await readRest(reader);
  const events = sseEvents(text);
  assert.equal(events.at(-1), '[DONE]');
  assert.match(events.at(-2)!, /upstream_stream_broken/);
  assert.match(events.at(-2)!, /stopped answering/);
  await waitFor(() => !ep(d1).healthy, 3000, 'd1 out');
  d1.stalled = false;
  await waitFor(() => ep(d1).healthy, 3000, 'd1 back');

  // the prefill engine stalls with a prefill leg in flight: the request decodes locally, in about the
  // probe timeout × threshold, not the 600 s request timeout
  p.stalled = true;
  const t0 = Date.now();
  const r2 = await post(gw, '/v1/completions', { model: 'fake', prompt: 'hello', max_tokens: 4 });
  assert.equal(r2.status, 200);
  assert.equal(r2.headers.get('x-tandem-route'), 'decode-only');
  assert.equal(r2.headers.get('x-tandem-fallback'), 'prefill-failed');
  await r2.json();
  assert.ok(Date.now() - t0 < 5000, `took ${Date.now() - t0} ms`);
  assert.equal(ep(p).inflight, 0);
  assert.equal(ep(d1).inflight, 0);
});

test('tokenization passes over a hung engine: new requests do not wait on it', async () => {
  const d1 = await fake({ role: 'decode', tokenize: true });
  const d2 = await fake({ role: 'decode', tokenize: true });
  // default config: the engines tokenize; quick probes, so a decode leg sent to d1 is failed over fast
  const gw = await gateway({ endpoints: [{ url: d1.url, role: 'decode' }, { url: d2.url, role: 'decode' }], pool: { healthIntervalMs: 100, scrapeIntervalMs: 50, healthTimeoutMs: 300 } });
  const ask = async (i: number) => {
    const t0 = Date.now();
    const r = await post(gw, '/v1/completions', { model: 'fake', prompt: `distinct prompt number ${i} with a few words` });
    assert.equal(r.status, 200);
    await r.text();
    return Date.now() - t0;
  };
  await ask(0);
  d1.stalled = true;
  // before the gateway knows (health probes take seconds), a request costs at most the tokenize timeout
  // on d1 — and only while d1 is tried first — then d2 tokenizes and decodes
  const times: number[] = [];
  for (let i = 1; i <= 6; i++) times.push(await ask(i));
  assert.ok(times.every((t) => t < 2500), `request times ${times.join(', ')} ms`);
  d1.stalled = false;
});

test('an endpoint whose scrapes stop succeeding: its prefill legs are cancelled and it is passed over — a hung prefill engine leaves requests decode-local', async () => {
  const p = await fake({ role: 'prefill' });
  const d = await fake({ role: 'decode' });
  // probes that would take 20 s to give up: only the scrapes (every 50 ms, stale after 2 s) notice
  const gw = await gateway({ endpoints: [{ url: p.url, role: 'prefill' }, { url: d.url, role: 'decode' }], configText: PD_PROXY_CONFIG_YAML, pool: { healthIntervalMs: 100, scrapeIntervalMs: 50, healthTimeoutMs: 10_000 } });
  const pep = gw.pool.all().find((e) => e.url === p.url)!;
  await waitFor(() => pep.metricsFresh, 3000, 'a first scrape');
  p.stalled = true;
  // a request already on its prefill leg: cancelled when the scrapes go stale, then decoded locally
  const t1 = Date.now();
  const first = await post(gw, '/v1/completions', { model: 'fake', prompt: 'hello there', max_tokens: 4 });
  assert.equal(first.status, 200);
  assert.equal(first.headers.get('x-tandem-fallback'), 'prefill-failed');
  await first.text();
  assert.ok(Date.now() - t1 < 4000, `the stuck prefill leg took ${Date.now() - t1} ms to give up`);
  await waitFor(() => pep.stalled, 4000, 'the prefill engine marked stalled');
  assert.equal(pep.healthy, true, 'the probes have not given up yet');
  const t0 = Date.now();
  const r = await post(gw, '/v1/completions', { model: 'fake', prompt: 'hello there', max_tokens: 4 });
  assert.equal(r.status, 200);
  assert.equal(r.headers.get('x-tandem-route'), 'decode-only');
  assert.match(r.headers.get('x-tandem-decision') ?? '', /no prefill endpoint/);
  await r.text();
  assert.ok(Date.now() - t0 < 1000, `took ${Date.now() - t0} ms`);
  p.stalled = false;
  await waitFor(() => !pep.stalled, 4000, 'the prefill engine answering again');
  const r2 = await post(gw, '/v1/completions', { model: 'fake', prompt: 'hello there', max_tokens: 4 });
  assert.equal(r2.headers.get('x-tandem-route'), 'prefill-decode');
  await r2.text();
});

test('a decode leg on an endpoint whose scrapes stop succeeding, with nothing relayed yet, is retried on another', async () => {
  const d1 = await fake({ role: 'decode' });
  const d2 = await fake({ role: 'decode', waiting: 10 }); // the queue scorer prefers d1
  const config = `plugins:
- {type: token-producer, parameters: {backend: estimate}}
- type: decode-filter
- type: queue-scorer
`;
  const gw = await gateway({ endpoints: [{ url: d1.url, role: 'decode' }, { url: d2.url, role: 'decode' }], configText: config, pool: { healthIntervalMs: 100, scrapeIntervalMs: 50, healthTimeoutMs: 10_000 } });
  const e1 = gw.pool.all().find((e) => e.url === d1.url)!;
  await waitFor(() => gw.pool.all().every((e) => e.metricsFresh), 3000, 'first scrapes');
  d1.stalled = true;
  const t0 = Date.now();
  const r = await post(gw, '/v1/completions', { model: 'fake', prompt: 'x', stream: true });
  assert.equal(r.status, 200);
  assert.equal(r.headers.get('x-tandem-decode-endpoint'), `127.0.0.1:${d2.port}`);
  assert.match(await r.text(), /\[DONE\]/);
  assert.ok(Date.now() - t0 < 4000, `took ${Date.now() - t0} ms`);
  assert.ok(e1.stalled && e1.healthy, 'found by the scrapes, before the probes gave up');
  d1.stalled = false;
  await waitFor(() => !e1.stalled, 4000, 'd1 answering again');

  // a stream already relaying from d1 when it hangs, silent since: it ends with an error event once
  // the scrapes give up (2 s), not when the probes do (20 s here)
  d1.opts.chunks = 1000;
  d1.opts.chunkDelayMs = 20;
  const s = await post(gw, '/v1/completions', { model: 'fake', prompt: 'y', stream: true });
  assert.equal(s.headers.get('x-tandem-decode-endpoint'), `127.0.0.1:${d1.port}`);
  const reader = s.body!.getReader();
  await reader.read();
  const t1 = Date.now();
  d1.stalled = true;
  const text = await readRest(reader);
  assert.match(text, /upstream_stream_broken/);
  assert.match(text, /data: \[DONE\]\n\n$/);
  assert.ok(Date.now() - t1 < 5000, `the silent stream ended after ${Date.now() - t1} ms`);
  d1.stalled = false;
});

test('the only decode engine going quiet is left to the health probes: its stream resumes and completes', async () => {
  const d = await fake({ role: 'decode', chunks: 60, chunkDelayMs: 20 });
  const gw = await gateway({ endpoints: [{ url: d.url, role: 'decode' }], configText: NEVER_SPLIT, pool: { healthIntervalMs: 100, scrapeIntervalMs: 50, healthTimeoutMs: 10_000 } });
  const e = gw.pool.all()[0]!;
  await waitFor(() => e.metricsFresh, 3000, 'a first scrape');
  const r = await post(gw, '/v1/completions', { model: 'fake', prompt: 'x', stream: true });
  const reader = r.body!.getReader();
  await reader.read();
  d.stalled = true;
  await waitFor(() => e.stalled, 4000, 'the engine marked stalled');
  await new Promise((res) => setTimeout(res, 1500)); // silent well past half the staleness
  d.stalled = false;
  const text = await readRest(reader);
  assert.doesNotMatch(text, /upstream_stream_broken/, 'nowhere else to go: a false alarm must not cut it');
  assert.match(text, /data: \[DONE\]\n\n$/);
});

test('a client disconnect cancels the prefill leg (and no decode leg starts)', async () => {
  const p = await fake({ role: 'prefill' });
  const d = await fake({ role: 'decode' });
  const gw = await gateway({ endpoints: [{ url: p.url, role: 'prefill' }, { url: d.url, role: 'decode' }], configText: PD_PROXY_CONFIG_YAML });
  p.fail = 'hang';
  const ac = new AbortController();
  const pending = post(gw, '/v1/completions', { model: 'fake', prompt: 'x' }, {}, ac.signal).catch((e: Error) => e);
  await waitFor(() => p.inference().length === 1, 3000, 'prefill leg to start');
  ac.abort();
  await pending;
  await waitFor(() => p.inference()[0]!.aborted, 3000, 'prefill leg aborted');
  assert.equal(d.inference().length, 0);
});

test('a client disconnect mid-stream cancels the decode leg', async () => {
  const p = await fake({ role: 'prefill' });
  const d = await fake({ role: 'decode', chunks: 100, chunkDelayMs: 50 });
  const gw = await gateway({ endpoints: [{ url: p.url, role: 'prefill' }, { url: d.url, role: 'decode' }], configText: PD_PROXY_CONFIG_YAML });
  const ac = new AbortController();
  const r = await post(gw, '/v1/completions', { model: 'fake', prompt: 'x', stream: true }, {}, ac.signal);
  const reader = r.body!.getReader();
  await reader.read();
  ac.abort();
  await waitFor(() => d.inference()[0]?.aborted === true, 3000, 'decode leg aborted');
  assert.equal(d.inference()[0]!.finished, false);
});

test('no healthy endpoint → 503; overload → 429; errors are OpenAI-shaped', async () => {
  const empty = await gateway({ endpoints: [] });
  const r = await post(empty, '/v1/completions', { model: 'fake', prompt: 'x' });
  assert.equal(r.status, 503);
  const j = (await r.json()) as { error: Record<string, unknown> };
  assert.deepEqual(Object.keys(j.error).sort(), ['code', 'message', 'param', 'type']);

  const d = await fake({ role: 'decode' });
  const gw = await gateway({ endpoints: [{ url: d.url, role: 'decode' }], configText: NEVER_SPLIT, maxInflight: 1 });
  d.fail = 'hang';
  const ac = new AbortController();
  const first = post(gw, '/v1/completions', { model: 'fake', prompt: 'x' }, {}, ac.signal).catch(() => undefined);
  await waitFor(() => d.inference().length === 1, 3000, 'first request in flight');
  const second = await post(gw, '/v1/completions', { model: 'fake', prompt: 'y' });
  assert.equal(second.status, 429);
  assert.equal(((await second.json()) as { error: { code: string } }).error.code, 'gateway_overloaded');
  ac.abort();
  await first;
});

test('API keys, body limit, bad JSON, unknown model and unknown routes', async () => {
  const d = await fake({ role: 'decode', model: 'm1' });
  const gw = await gateway({ endpoints: [{ url: d.url, role: 'decode' }], configText: NEVER_SPLIT, apiKeys: ['sekret'], maxBodyBytes: 1000 });
  const auth = { authorization: 'Bearer sekret' };
  assert.equal((await post(gw, '/v1/completions', { model: 'm1', prompt: 'x' })).status, 401);
  assert.equal((await post(gw, '/v1/completions', { model: 'm1', prompt: 'x' }, { authorization: 'Bearer wrong' })).status, 401);
  assert.equal((await fetch(`${gw.url}/v1/models`)).status, 401);
  const ok = await post(gw, '/v1/completions', { model: 'm1', prompt: 'x' }, auth);
  assert.equal(ok.status, 200);
  await ok.text();
  // the gateway's key is not leaked to the engine
  assert.equal(d.inference().at(-1)!.headers.authorization, undefined);
  const big = await post(gw, '/v1/completions', { model: 'm1', prompt: 'x'.repeat(2000) }, auth);
  assert.equal(big.status, 413);
  const bad = await post(gw, '/v1/completions', '{"model": ', auth);
  assert.equal(bad.status, 400);
  const noPrompt = await post(gw, '/v1/completions', { model: 'm1' }, auth);
  assert.equal(noPrompt.status, 400);
  assert.equal(((await noPrompt.json()) as { error: { param: string } }).error.param, 'prompt');
  const unknown = await post(gw, '/v1/completions', { model: 'nope', prompt: 'x' }, auth);
  assert.equal(unknown.status, 404);
  const models = (await (await fetch(`${gw.url}/v1/models`, { headers: auth })).json()) as { data: { id: string }[] };
  assert.deepEqual(models.data.map((m) => m.id), ['m1']);
  assert.equal((await fetch(`${gw.url}/nothing`)).status, 404);
});

test('self-registration: register, heartbeat, dropped after missed heartbeats', async () => {
  const d = await fake({ role: 'decode', model: 'reg' });
  const gw = await gateway({ endpoints: [], configText: NEVER_SPLIT, pool: { healthIntervalMs: 50, heartbeatTtlMs: 400 } });
  const reg = { url: d.url, role: 'decode', labels: { zone: 'a' } };
  const r = await post(gw, '/v1/endpoints/register', reg);
  assert.equal(r.status, 200);
  const info = (await r.json()) as { id: string; ttl_ms: number };
  assert.equal(info.id, `127.0.0.1:${d.port}`);
  await waitFor(() => gw.pool.get(info.id)?.healthy === true, 3000, 'registered endpoint healthy');
  const ok = await post(gw, '/v1/completions', { model: 'reg', prompt: 'x' });
  assert.equal(ok.status, 200);
  await ok.text();
  // heartbeats (re-registration) keep it
  for (let i = 0; i < 6; i++) {
    await new Promise((res) => setTimeout(res, 150));
    await (await post(gw, '/v1/endpoints/register', reg)).text();
  }
  assert.ok(gw.pool.get(info.id));
  await waitFor(() => gw.pool.get(info.id) === undefined, 3000, 'endpoint dropped');
  // bad registrations are refused precisely
  const bad = await post(gw, '/v1/endpoints/register', { url: d.url, role: 'middle' });
  assert.equal(bad.status, 400);
  assert.match(((await bad.json()) as { error: { message: string } }).error.message, /role/);
});

test('the control plane needs the registration key (or, without one, an API key); tandem serve --register-key sends it', async () => {
  const d = await fake({ role: 'decode', model: 'reg' });
  const reg = { url: d.url, role: 'decode' };
  /** body null: a GET */
  const call = (gw: Gateway, path: string, key?: string, body: unknown = reg) =>
    fetch(`${gw.url}${path}`, {
      method: body === null ? 'GET' : 'POST',
      headers: { 'content-type': 'application/json', ...(key ? { authorization: `Bearer ${key}` } : {}) },
      body: body === null ? undefined : JSON.stringify(body),
    }).then(async (r) => ((await r.arrayBuffer()), r.status));

  const both = await gateway({ endpoints: [], configText: NEVER_SPLIT, apiKeys: ['client-key'], registrationKey: 'reg-key' });
  assert.equal(await call(both, '/v1/endpoints/register'), 401);
  assert.equal(await call(both, '/v1/endpoints/register', 'client-key'), 401, 'a client API key cannot register an endpoint');
  assert.equal(await call(both, '/admin/endpoints', 'client-key'), 401);
  assert.equal(await call(both, '/v1/endpoints', undefined, null), 401, 'listing endpoints shows internal addresses');
  assert.equal(both.pool.all().length, 0);
  assert.equal(await call(both, '/v1/endpoints/register', 'reg-key'), 200);
  assert.equal(await call(both, '/v1/endpoints', 'reg-key', null), 200);
  assert.equal(await call(both, '/v1/endpoints/deregister', 'client-key', { url: d.url }), 401);
  assert.equal(await call(both, '/v1/endpoints/deregister', 'reg-key', { url: d.url }), 200);

  // no registration key: the API keys guard the control plane too
  const apiOnly = await gateway({ endpoints: [], configText: NEVER_SPLIT, apiKeys: ['client-key'] });
  assert.equal(await call(apiOnly, '/v1/endpoints/register'), 401);
  assert.equal(await call(apiOnly, '/v1/endpoints/register', 'client-key'), 200);

  // the engine side: --register-key is sent with every heartbeat and the deregistration
  const engine = { info: { role: 'decode', modelName: 'reg' } } as unknown as Engine;
  const logs: string[] = [];
  const denied = startRegistration(both.url, { url: d.url, engine, log: (l) => logs.push(l) });
  await denied.ready;
  await denied.stop();
  assert.match(logs.join('\n'), /registration with .* failed \(HTTP 401/);
  const allowed = startRegistration(both.url, { url: d.url, engine, key: 'reg-key', log: () => {} });
  await allowed.ready;
  assert.ok(both.pool.get(`127.0.0.1:${d.port}`), 'registered with the key');
  await allowed.stop();
  assert.equal(both.pool.get(`127.0.0.1:${d.port}`), undefined, 'deregistered with the key');
});

test('health checks take a failing endpoint out and bring it back', async () => {
  const a = await fake({ role: 'decode' });
  const gw = await gateway({ endpoints: [{ url: a.url, role: 'decode' }], configText: NEVER_SPLIT, pool: { healthIntervalMs: 50 } });
  a.healthy = false;
  await waitFor(() => !gw.pool.get(`127.0.0.1:${a.port}`)!.healthy, 3000, 'taken out');
  assert.equal((await post(gw, '/v1/completions', { model: 'fake', prompt: 'x' })).status, 503);
  a.healthy = true;
  await waitFor(() => gw.pool.get(`127.0.0.1:${a.port}`)!.healthy, 3000, 'back');
  // metrics were scraped from the engine
  await waitFor(() => gw.pool.get(`127.0.0.1:${a.port}`)!.metricsFresh, 3000, 'metrics fresh');
});
