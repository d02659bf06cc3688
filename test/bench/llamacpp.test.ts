// The llama.cpp baseline's plumbing: argument checks in the real worker process and parsing of its JSON line.
// Nothing here installs or downloads; the one end-to-end check runs only if a bench has already installed
// node-llama-cpp into .bench-cache/, with tiny sizes. Benchmark numbers are not asserted.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { defaultPackageDir, LlamaCppWorkerError, measureLlamaCppEngine, measureLlamaCppServe } from '../../src/bench/llamacpp/index.ts';
import { parseWorkerOutput, runWorker, workerPath } from '../../src/bench/llamacpp/worker-process.ts';

const gguf = resolve('models/stories260K-gguf/stories260K.gguf');

test('parseWorkerOutput takes the last JSON line and ignores stray output', () => {
  const r = parseWorkerOutput('loading…\n{"partial":\n{"ok":true,"decodeTokPerS1":12.5}\n\n', '', 0);
  assert.equal(r.decodeTokPerS1, 12.5);
});

test('parseWorkerOutput turns failures into errors that say why', () => {
  assert.throws(() => parseWorkerOutput('{"ok":false,"error":"GGUF file not found: /x"}\n', '', 1), /failed: GGUF file not found: \/x/);
  assert.throws(() => parseWorkerOutput('', 'Segmentation fault\n', null), (e: Error) =>
    e instanceof LlamaCppWorkerError && /code null without a result/.test(e.message) && /Segmentation fault/.test(e.message));
  assert.throws(() => parseWorkerOutput('[1,2]\n', '', 0), /without a result/);
  assert.throws(() => parseWorkerOutput('{"ok":true}\n', '', 3), /exited with code 3/);
});

function runRealWorker(args: unknown): Promise<Record<string, unknown>> {
  return runWorker(args as Record<string, unknown>);
}

test('the worker rejects bad arguments before loading llama.cpp, with exit code 2', async () => {
  const cases: Array<[unknown, RegExp]> = [
    [{ mode: 'train', packageDir: '/x', gguf }, /'mode' must be "engine", "serve" or "probe"/],
    [{ mode: 'engine', packageDir: 'relative/dir', gguf }, /'packageDir' must be an absolute path/],
    [{ mode: 'engine', packageDir: '/x', gguf: '/no/such/model.gguf' }, /GGUF file not found: \/no\/such\/model.gguf/],
    [{ mode: 'engine', packageDir: '/x', gguf, decodeTokens: 0 }, /'decodeTokens' must be an integer in \[1,/],
    [{ mode: 'engine', packageDir: '/x', gguf, flashAttention: 'auto' }, /'flashAttention' must be "best", true or false/],
    [{ mode: 'serve', packageDir: '/x', gguf, concurrency: 8, promptTokens: 16 }, /'maxTokens' is required/],
    [{ mode: 'serve', packageDir: '/x', gguf, concurrency: 8, promptTokens: 16, maxTokens: 4, prefillTokens: 3 }, /unknown argument 'prefillTokens'/],
  ];
  for (const [args, message] of cases) await assert.rejects(runRealWorker(args), message, JSON.stringify(args));
  // Not JSON at all, straight from the command line.
  const { spawnSync } = await import('node:child_process');
  const r = spawnSync(process.execPath, [workerPath, '{mode:'], { encoding: 'utf8' });
  assert.equal(r.status, 2);
  assert.match(JSON.parse(r.stdout).error, /not valid JSON/);
});

test('a missing node-llama-cpp install is reported, not crashed on', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'tandem-nlc-empty-'));
  try {
    await assert.rejects(measureLlamaCppEngine(gguf, { packageDir: dir }), /node-llama-cpp is not installed in/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('measure functions check their input before installing anything', async () => {
  await assert.rejects(measureLlamaCppEngine('/no/such.gguf'), /GGUF file not found/);
  await assert.rejects(measureLlamaCppServe(gguf, { concurrency: 0, promptTokens: 8, maxTokens: 8 }), /concurrency must be a positive integer/);
});

test('runWorker kills a worker that hangs', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'tandem-nlc-stub-'));
  try {
    const stub = join(dir, 'hang.mjs');
    writeFileSync(stub, 'setInterval(() => {}, 1000);\n');
    await assert.rejects(runWorker({}, { worker: stub, timeoutMs: 300 }), /timed out after 300 ms/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

const installed = existsSync(join(defaultPackageDir, 'node_modules', 'node-llama-cpp', 'package.json'));
test('end to end on stories260K with tiny sizes (only if already installed)', { skip: !installed && 'node-llama-cpp not installed in .bench-cache' }, async () => {
  const e = await measureLlamaCppEngine(gguf, {
    packageDir: defaultPackageDir, repeats: 1, flashAttention: false, prefillTokens: 32, decodeTokens: 4, batchSequences: 2, batchDecodeTokens: 2,
  });
  assert.ok(e.prefillTokPerS > 0 && e.decodeTokPerS1 > 0 && e.decodeTokPerS32 > 0);
  assert.equal(e.prefillTokens, 32);
  assert.equal(e.batchSequences, 2);
  assert.ok(e.peakRssMiB >= e.baseRssMiB);
  const s = await measureLlamaCppServe(gguf, { packageDir: defaultPackageDir, repeats: 1, flashAttention: false, concurrency: 2, promptTokens: 8, maxTokens: 3 });
  assert.ok(s.outputTokPerS > 0);
  assert.ok(s.itlP50Ms !== null && s.itlP99Ms !== null && s.itlP99Ms >= s.itlP50Ms);
  // 2 sequences × 2 gaps each: the pooled ITL sample the percentiles came from.
  assert.equal(s.concurrency, 2);
});
