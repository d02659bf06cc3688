// `tandem serve` flag handling: every bad flag or model is one line on stderr and a non-zero exit.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';

import { main } from '../../src/server/cli.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

function run(...args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, ['bin/tandem.js', 'serve', ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d) => (stdout += d));
    p.stderr.on('data', (d) => (stderr += d));
    const kill = setTimeout(() => p.kill('SIGKILL'), 60_000);
    p.on('exit', (code) => {
      clearTimeout(kill);
      resolve({ code, stdout, stderr });
    });
  });
}

test('--help lists every engine option flag', async () => {
  const r = await run('--help');
  assert.equal(r.code, 0);
  for (const flag of [
    '--model', '--tokenizer', '--served-model-name', '--role', '--kernels', '--block-size', '--num-blocks', '--kv-cache-memory',
    '--kv-cache-dtype', '--prefix-caching', '--max-num-seqs', '--max-num-batched-tokens', '--max-model-len', '--max-waiting',
    '--kv-host', '--kv-port', '--kv-advertise-host', '--kv-lease-seconds', '--kv-load-failure-policy', '--kv-secret',
    '--kv-events-endpoint', '--kv-store', '--kv-chunk-tokens', '--simulate', '--host', '--port', '--max-body-bytes', '--api-key',
    '--register', '--drain-timeout',
  ]) {
    assert.ok(r.stdout.includes(flag), `${flag} in --help`);
  }
});

test('bad flags are UsageErrors naming the flag, raised before any model loads', async () => {
  const cases: [string[], RegExp][] = [
    [[], /--model is required/],
    [['--model', 'stories260K', '--role', 'middle'], /--role must be one of prefill, decode, both/],
    [['--model', 'stories260K', '--port', '70000'], /--port must be a port number/],
    [['--model', 'stories260K', '--block-size', '0'], /--block-size must be an integer ≥ 1/],
    [['--model', 'stories260K', '--kv-cache-memory', 'lots'], /bad size 'lots'/],
    [['--model', 'stories260K', '--kv-cache-dtype', 'bf16'], /--kv-cache-dtype must be one of f32, f16/],
    [['--model', 'stories260K', '--max-body-bytes', '12'], /--max-body-bytes must be at least 1KiB/],
    [['--model', 'stories260K', '--register', 'gateway:9000'], /--register must be an http\(s\) URL/],
    [['--model', 'stories260K', '--frobnicate'], /unknown option --frobnicate/],
    [['--model', 'stories260K', '--max-num-seqs', '1.5'], /--max-num-seqs must be an integer ≥ 1/],
    [['--model', 'stories260K', '--kv-load-failure-policy', 'retry'], /--kv-load-failure-policy must be one of recompute, fail/],
  ];
  for (const [args, want] of cases) {
    await assert.rejects(main(args), (e: Error) => e.name === 'UsageError' && want.test(e.message), args.join(' '));
  }
});

test('through the CLI: one line on stderr, exit ≠ 0 (bad flag, unknown model)', async () => {
  const [flag, model] = await Promise.all([run('--model', 'stories260K', '--role', 'middle'), run('--model', 'no-such-model')]);
  for (const r of [flag, model]) {
    assert.equal(r.code, 2);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
  }
  assert.match(flag.stderr, /^tandem serve: --role must be one of/);
  assert.match(model.stderr, /^tandem serve: .*no-such-model/);
});

test('a port already in use is a one-line error', async () => {
  const blocker = createServer();
  await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', r));
  try {
    const port = (blocker.address() as AddressInfo).port;
    const r = await run('--model', 'stories260K', '--port', String(port));
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /cannot listen on 127\.0\.0\.1:\d+: .*EADDRINUSE/);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
  } finally {
    blocker.close();
  }
});
