// End to end against REAL tandem engines started by `tandem up`: the official openai client, the
// seed's 5-token / 59-token routing, and prefix-aware routing (approximate and precise).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI from 'openai';

const ROOT = new URL('../..', import.meta.url).pathname;
const engineMissing = existsSync(join(ROOT, 'src/server/cli.ts')) ? false : 'the tandem engine (src/server/cli.ts, `tandem serve`) is missing';
const MODEL = 'stories260K';

interface Cluster {
  proc: ChildProcess;
  url: string;
  engines: { name: string; url: string }[];
  log: string[];
  stop(): Promise<number | null>;
}

const clusters: Cluster[] = [];
after(async () => {
  for (const c of clusters) await c.stop();
});

async function up(args: string[]): Promise<Cluster> {
  const proc = spawn(process.execPath, ['bin/tandem.js', 'up', '--port', '0', ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  const log: string[] = [];
  let exited: number | null | undefined;
  const exit = new Promise<number | null>((r) => proc.once('exit', (code) => ((exited = code), r(code))));
  let buf = '';
  let gatewayUrl = '';
  const engines: { name: string; url: string }[] = [];
  const ready = new Promise<void>((resolve, reject) => {
    proc.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      const lines = buf.split('\n');
      buf = lines.pop()!;
      for (const l of lines) {
        log.push(l);
        const g = /^tandem up: gateway (\S+)/.exec(l);
        if (g) gatewayUrl = g[1]!;
        const e = /^ {2}((?:prefill|decode|both)-\d+)\s+(http:\/\/\S+)/.exec(l);
        if (e) engines.push({ name: e[1]!, url: e[2]! });
        if (/^ {2}try: curl/.test(l)) resolve();
      }
    });
    proc.stderr!.on('data', (d: Buffer) => log.push(d.toString()));
    void exit.then((code) => reject(new Error(`tandem up exited ${code} before it was ready:\n${log.slice(-30).join('\n')}`)));
    setTimeout(() => reject(new Error(`tandem up not ready after 120 s:\n${log.slice(-30).join('\n')}`)), 120_000).unref();
  });
  await ready;
  const c: Cluster = {
    proc,
    url: gatewayUrl,
    engines,
    log,
    async stop() {
      if (exited !== undefined) return exited;
      proc.kill('SIGTERM');
      return exit;
    },
  };
  clusters.push(c);
  return c;
}

async function complete(url: string, prompt: string, extra: Record<string, unknown> = {}) {
  const r = await fetch(`${url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model: MODEL, prompt, max_tokens: 4, temperature: 0, ...extra }) });
  const body = (await r.json()) as { usage?: { prompt_tokens: number }; choices?: { text: string }[]; error?: unknown };
  return { status: r.status, headers: r.headers, body };
}

async function tokenCount(engineUrl: string, prompt: string): Promise<number> {
  const r = await fetch(`${engineUrl}/tokenize`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model: MODEL, prompt }) });
  return ((await r.json()) as { count: number }).count;
}

const STORY =
  'Once upon a time, there was a little girl named Lily. She loved to play outside in the park with her friends. One day, she saw a big red ball near the tall tree. ' +
  'She ran to the ball and kicked it very hard. The ball flew up into the sky and landed on the roof of a small house. Lily was sad because she could not reach it. ' +
  'Then her friend Tom came with a long stick and helped her get the ball down. They played together all day and were very happy.';

/** A prefix of STORY that the engine tokenizes to exactly `n` tokens (the engine's count includes BOS). */
async function promptOf(engineUrl: string, n: number): Promise<string> {
  const words = STORY.split(' ');
  for (let k = 1; k <= words.length; k++) {
    const p = words.slice(0, k).join(' ');
    const c = await tokenCount(engineUrl, p);
    if (c === n) return p;
    if (c > n) {
      // trim characters off the last word until the count fits
      for (let cut = p.length - 1; cut > 0; cut--) if ((await tokenCount(engineUrl, p.slice(0, cut))) === n) return p.slice(0, cut);
      break;
    }
  }
  throw new Error(`no prefix of the story tokenizes to ${n} tokens`);
}

async function metric(url: string, name: string, labels: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const m = new RegExp(`^${name}\\{${labels}\\} (\\S+)$`, 'm').exec(text);
  return m ? Number(m[1]) : 0;
}

test('tandem up (1 prefill + 1 decode): openai client, the seed\'s 5- and 59-token routing, clean stop', { skip: engineMissing, timeout: 240_000 }, async () => {
  const c = await up([]);
  const client = new OpenAI({ baseURL: `${c.url}/v1`, apiKey: 'unused' });

  const chat = await client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'Once upon a time' }], max_tokens: 8 });
  assert.equal(chat.object, 'chat.completion');
  assert.ok(chat.choices[0]!.message.content!.length > 0);
  const comp = await client.completions.create({ model: MODEL, prompt: 'Once upon a time', max_tokens: 8 });
  assert.ok(comp.choices[0]!.text.length > 0);
  let streamed = '';
  for await (const chunk of await client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'Once upon a time' }], max_tokens: 8, stream: true })) {
    streamed += chunk.choices[0]?.delta?.content ?? '';
  }
  assert.ok(streamed.length > 0);
  let streamedText = '';
  for await (const chunk of await client.completions.create({ model: MODEL, prompt: 'Once upon a time', max_tokens: 8, stream: true, stream_options: { include_usage: true } })) {
    streamedText += chunk.choices[0]?.text ?? '';
  }
  assert.ok(streamedText.length > 0);
  const models = await client.models.list();
  assert.deepEqual(models.data.map((m) => m.id), [MODEL]);

  // the seed: a 5-token prompt runs on one decode node; a 59-token prompt is split to prefill + decode
  const decodeUrl = c.engines.find((e) => e.name.startsWith('decode'))!.url;
  const p5 = await promptOf(decodeUrl, 5);
  const p59 = await promptOf(decodeUrl, 59);
  const before = { local: await metric(c.url, 'tandem_gateway_disagg_decision_total', 'decision="decode-only"'), split: await metric(c.url, 'tandem_gateway_disagg_decision_total', 'decision="prefill-decode"') };
  const r5 = await complete(c.url, p5);
  assert.equal(r5.status, 200);
  assert.equal(r5.body.usage!.prompt_tokens, 5);
  assert.equal(r5.headers.get('x-tandem-route'), 'decode-only', r5.headers.get('x-tandem-decision') ?? '');
  const r59 = await complete(c.url, p59);
  assert.equal(r59.status, 200);
  assert.equal(r59.body.usage!.prompt_tokens, 59);
  assert.equal(r59.headers.get('x-tandem-route'), 'prefill-decode', `${r59.headers.get('x-tandem-decision')} (fallback: ${r59.headers.get('x-tandem-fallback')})`);
  assert.ok(r59.headers.get('x-tandem-prefill-endpoint'));
  assert.equal(await metric(c.url, 'tandem_gateway_disagg_decision_total', 'decision="decode-only"'), before.local + 1);
  assert.equal(await metric(c.url, 'tandem_gateway_disagg_decision_total', 'decision="prefill-decode"'), before.split + 1);

  // Ctrl-C/SIGTERM: everything stops, exit 0, no engine left listening
  assert.equal(await c.stop(), 0);
  for (const e of c.engines) await assert.rejects(fetch(`${e.url}/health`, { signal: AbortSignal.timeout(2000) }));
  await assert.rejects(fetch(`${c.url}/health`, { signal: AbortSignal.timeout(2000) }));
});

function prefixCase(c: Cluster, label: string, producer: string) {
  return async () => {
    const shared = STORY.slice(0, 330);
    const first = await complete(c.url, `${shared} Question zero: what happened?`);
    assert.equal(first.status, 200);
    const holder = first.headers.get('x-tandem-decode-endpoint');
    assert.ok(holder);
    // the index learnt the prefix for that engine (approximate: at routing time; precise: from its KV events)
    const deadline = Date.now() + 10_000;
    let blocks = 0;
    while (Date.now() < deadline && (blocks = await metric(c.url, 'tandem_gateway_prefix_index_blocks', `producer="${producer}",endpoint="${holder}"`)) === 0) {
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.ok(blocks > 0, `${label}: ${producer} has no blocks for ${holder}`);
    for (let i = 1; i <= 6; i++) {
      const r = await complete(c.url, `${shared} Question ${i}: who helped ${['Lily', 'Tom', 'the dog', 'her mom', 'a bird', 'the king'][i - 1]}?`);
      assert.equal(r.status, 200);
      assert.equal(r.headers.get('x-tandem-decode-endpoint'), holder, `${label}: request ${i} left the engine holding the prefix (${r.headers.get('x-tandem-decision')})`);
    }
  };
}

test('prefix-aware routing, approximate index: repeated prefixes go to the engine that holds them', { skip: engineMissing, timeout: 240_000 }, async () => {
  const c = await up(['--prefill', '0', '--decode', '2', '--no-kv-events']);
  await prefixCase(c, 'approximate', 'approx-prefix-cache-producer')();
  assert.equal(await c.stop(), 0);
});

test('prefix-aware routing, precise index (KV events): repeated prefixes go to the engine that holds them', { skip: engineMissing, timeout: 240_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'tandem-precise-'));
  const cfg = join(dir, 'precise.yaml');
  writeFileSync(
    cfg,
    `apiVersion: llm-d.ai/v1alpha1
kind: EndpointPickerConfig
plugins:
- type: token-producer
  parameters: {backend: vllm}
- type: precise-prefix-cache-producer
- type: decode-filter
- type: prefix-cache-scorer
  parameters: {prefixMatchInfoProducerName: precise-prefix-cache-producer}
- type: queue-scorer
- type: max-score-picker
schedulingProfiles:
- name: default
  plugins:
  - {pluginRef: decode-filter}
  - {pluginRef: prefix-cache-scorer, weight: 3}
  - {pluginRef: queue-scorer, weight: 1}
  - {pluginRef: max-score-picker}
`,
  );
  const c = await up(['--prefill', '0', '--decode', '2', '--config', cfg]);
  await prefixCase(c, 'precise', 'precise-prefix-cache-producer')();
  assert.equal(await c.stop(), 0);
});
