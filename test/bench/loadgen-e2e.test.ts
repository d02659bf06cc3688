// The load generator end to end: against a real `tandem serve --model synthetic:tiny` process
// (completed counts, exact output lengths, usage-based totals, failures counted when a prompt is
// refused and when the server is killed mid-run), against the SSE stub for each way a stream can
// fail, and through the CLI.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startServe, repoRoot, type Served } from '../../src/bench/serve-util.ts';
import { runLoad, parseSlo, main as cliMain, type BenchResult } from '../../src/bench/loadgen/index.ts';
import { startSseStub } from '../../src/bench/loadgen/sse-stub.ts';

const T = { timeout: 120_000 };
const live = new Set<Served>();
process.on('exit', () => {
  for (const s of live) s.child.kill('SIGKILL');
});
async function serve(...args: string[]): Promise<Served> {
  const s = await startServe(['--model', 'synthetic:tiny', ...args]);
  live.add(s);
  s.child.once('exit', () => live.delete(s));
  return s;
}
const dir = mkdtempSync(join(tmpdir(), 'loadgen-e2e-'));
after(async () => {
  for (const s of live) await s.stop();
  rmSync(dir, { recursive: true, force: true });
});

test('a real engine: every request completes with exactly the requested output length', T, async () => {
  const s = await serve();
  const r = await runLoad({
    url: s.url,
    dataset: { kind: 'random', inputLen: 32, outputLen: 8 },
    numPrompts: 12,
    concurrency: 4,
    vocabSize: 512,
    saveDetailed: true,
    slo: { ttftMs: 60_000 },
  });
  assert.equal(r.completed, 12);
  assert.equal(r.failed, 0);
  assert.equal(r.model_id, 'synthetic-tiny', 'model from GET /v1/models');
  assert.deepEqual(r.output_lens, Array(12).fill(8), 'ignore_eos: output_len exact');
  assert.deepEqual(r.input_lens, Array(12).fill(32), 'usage.prompt_tokens = tokens sent');
  assert.equal(r.total_output_tokens, 96);
  assert.equal(r.total_input_tokens, 384);
  assert.ok(r.max_concurrent_requests as number <= 4, 'the concurrency cap holds');
  assert.equal(r.request_goodput, r.request_throughput, 'every request meets a 60 s TTFT');
  for (const itl of r.itls as number[][]) assert.ok(itl.length >= 1 && itl.length <= 7, 'at most one gap per token after the first');
  assert.ok(r.mean_ttft_ms > 0 && r.mean_tpot_ms > 0 && r.mean_e2el_ms >= r.mean_ttft_ms);
  assert.ok(r.duration as number > 0);
  assert.ok(Math.abs(r.request_throughput - 12 / (r.duration as number)) < 1e-9);

  const chat = await runLoad({ url: `${s.url}/v1`, endpoint: 'chat', dataset: { kind: 'shared-prefix', groups: 2, prefixLen: 10, suffixLen: 3, outputLen: 5 }, numPrompts: 4, saveDetailed: true });
  assert.equal(chat.completed, 4);
  assert.deepEqual(chat.output_lens, [5, 5, 5, 5]);
  assert.ok((chat.input_lens as number[]).every((n) => n > 13), 'chat input lengths come from usage (template included)');

  // a refused prompt (a token id past the vocabulary) is a failure, counted and reported
  const file = join(dir, 'mixed.jsonl');
  writeFileSync(file, ['{"prompt": [100, 101, 102]}', '{"prompt": [100, 99999]}', '{"prompt": "Once upon a time"}'].join('\n'));
  const mixed = await runLoad({ url: s.url, dataset: { kind: 'jsonl', path: file, outputLen: 4 }, saveDetailed: true });
  assert.equal(mixed.num_prompts, 3);
  assert.equal(mixed.completed, 2);
  assert.equal(mixed.failed, 1);
  assert.deepEqual(mixed.output_lens, [4, 0, 4]);
  assert.match((mixed.errors as string[])[1]!, /^HTTP 400: .*99999/);
  assert.equal((mixed.errors as string[])[0], '');
  await s.stop();
});

test('a server killed mid-run: the lost requests are counted as failed, not dropped', T, async () => {
  const s = await serve();
  let killed = false;
  const r = await runLoad({
    url: s.url,
    dataset: { kind: 'random', inputLen: 16, outputLen: 48 },
    numPrompts: 20,
    concurrency: 2,
    vocabSize: 512,
    saveDetailed: true,
    progress: (done) => {
      if (done >= 2 && !killed) {
        killed = true;
        s.child.kill('SIGKILL');
      }
    },
  });
  assert.ok(killed);
  assert.equal(r.num_prompts, 20);
  assert.equal(r.completed + r.failed, 20, 'every request is accounted for');
  assert.ok(r.completed >= 2 && r.failed >= 1, `completed ${r.completed}, failed ${r.failed}`);
  const errors = (r.errors as string[]).filter(Boolean);
  assert.equal(errors.length, r.failed);
  assert.ok(errors.every((e) => /ECONNREFUSED|ECONNRESET|socket hang up|stream/.test(e)), errors.join('\n'));
});

test('each way a stream can fail is a failed request with its reason', T, async () => {
  const stub = await startSseStub();
  try {
    const file = join(dir, 'faults.jsonl');
    const prompts = ['ok', '!status=503', '!error-after=3', '!cut-after=2', '!no-done', 'ok again'];
    writeFileSync(file, prompts.map((p) => JSON.stringify({ prompt: p })).join('\n'));
    const r = await runLoad({ url: stub.url, dataset: { kind: 'jsonl', path: file, outputLen: 6 }, saveDetailed: true });
    const errors = r.errors as string[];
    assert.equal(r.completed, 2);
    assert.equal(r.failed, 4);
    assert.equal(errors[0], '');
    assert.equal(errors[1], 'HTTP 503: scripted status 503');
    assert.equal(errors[2], 'stream error: scripted failure after 3 chunks');
    assert.match(errors[3]!, /after 2 chunks|ECONNRESET|socket hang up/);
    assert.match(errors[4]!, /stream ended before \[DONE\]/);
    assert.equal(errors[5], '');
    assert.deepEqual(r.output_lens, [6, 0, 0, 0, 0, 6]);
    assert.deepEqual((r.routes as unknown[])[0], { route: 'decode-only', decode: 'stub' }, 'gateway routing headers are recorded');
  } finally {
    await stub.close();
  }
});

test('schedules: concurrency cap, duration-bounded open loop, warm-up excluded', T, async () => {
  const stub = await startSseStub();
  try {
    const dataset = { kind: 'jsonl' as const, path: join(dir, 'slow.jsonl'), outputLen: 5 };
    writeFileSync(dataset.path, '{"prompt": "!gap-ms=10"}\n');
    const capped = await runLoad({ url: stub.url, dataset, numPrompts: 9, concurrency: 3 });
    assert.equal(capped.completed, 9);
    assert.equal(capped.max_concurrent_requests, 3, 'three in flight at once, never more');
    assert.ok(capped.mean_itl_ms >= 9, 'the 10 ms gaps are measured');

    const before = stub.requests();
    const timed = await runLoad({ url: stub.url, dataset: { kind: 'random', inputLen: 4, outputLen: 2 }, durationS: 0.5, qps: 40, arrival: 'constant', warmup: 3 });
    // arrivals at 25, 50, …, 475 ms: 19 (20 if float rounding puts one just under 500 ms)
    assert.ok(timed.num_prompts === 19 || timed.num_prompts === 20, `${timed.num_prompts}`);
    assert.equal(timed.completed, timed.num_prompts);
    assert.equal(stub.requests() - before, (timed.num_prompts as number) + 3, 'warm-up requests were sent but not counted');

    await assert.rejects(runLoad({ url: stub.url, dataset, durationS: 1 }), /needs a finite qps or a concurrency cap/);
    await assert.rejects(runLoad({ url: 'localhost:8000', dataset }), /not a URL|only http/);
  } finally {
    await stub.close();
  }
});

test('CLI: several QPS values make an array of results, a summary table, and precise usage errors', T, async () => {
  const stub = await startSseStub();
  try {
    const out = join(dir, 'sweep.json');
    const args = ['bin/tandem.js', 'bench', '--url', stub.url, '--num-prompts', '6', '--output-len', '4', '--qps', '50,inf', '--slo', 'ttft=10000,tpot=1000', '--out', out];
    // spawnSync would block the stub's event loop in this process: run the CLI asynchronously
    const { spawn } = await import('node:child_process');
    const code = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
      const c = spawn(process.execPath, args, { cwd: repoRoot });
      let stdout = '';
      let stderr = '';
      c.stdout.on('data', (d) => (stdout += d));
      c.stderr.on('data', (d) => (stderr += d));
      c.on('exit', (code) => resolve({ code, stdout, stderr }));
    });
    assert.equal(code.code, 0, code.stderr);
    assert.match(code.stdout, /=+ Serving Benchmark Result =+/);
    assert.match(code.stdout, /Request goodput \(req\/s\):/);
    assert.match(code.stdout, /Mean TPOT \(ms\):/);
    const results = JSON.parse(readFileSync(out, 'utf8')) as BenchResult[];
    assert.ok(Array.isArray(results));
    assert.deepEqual(results.map((r) => r.request_rate), [50, 'inf']);
    assert.deepEqual(results.map((r) => r.completed), [6, 6]);
    assert.equal(results[0]!.total_output_tokens, 24);
  } finally {
    await stub.close();
  }
  // a usage error exits with status 2 and a one-line message
  const r = spawnSync(process.execPath, ['bin/tandem.js', 'bench', '--num-prompts', '3'], { cwd: repoRoot, encoding: 'utf8' });
  assert.equal(r.status, 2, r.stderr);
  assert.match(r.stderr, /tandem bench: --url is required/);
  const bad = (args: string[], re: RegExp) => assert.rejects(cliMain(['--url', 'http://127.0.0.1:1', ...args]), (e: Error) => e.name === 'UsageError' && re.test(e.message));
  await bad(['--slo', 'ttft=abc'], /--slo: ttft must be a number of milliseconds ≥ 0, got 'abc'/);
  await bad(['--slo', 'latency=5'], /--slo: unknown metric 'latency'/);
  await bad(['--qps', '0'], /--qps: '0' is not a positive number or inf/);
  await bad(['--concurrency', '2.5'], /--concurrency: '2.5' is not a whole number/);
  await bad(['--dataset', 'sharegpt'], /--dataset must be random, shared-prefix or a \.jsonl file/);
  await bad(['--endpoint', 'embeddings'], /--endpoint must be completions or chat/);
  assert.deepEqual(parseSlo('ttft=500, tpot:50,itl=20ms,e2el=3000'), { ttftMs: 500, tpotMs: 50, itlMs: 20, e2elMs: 3000 });
});
