// A port that is taken is a user error with a one-line message and exit code 2, not a stack trace;
// `tandem up` finds out before it starts any engine.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createServer, type Server } from 'node:net';
import { test } from 'node:test';

const ROOT = new URL('../..', import.meta.url).pathname;

function run(args: string[]): Promise<{ code: number | null; out: string; ms: number }> {
  const t0 = Date.now();
  const proc = spawn(process.execPath, ['bin/tandem.js', ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const timer = setTimeout(() => proc.kill('SIGKILL'), 60_000);
  return new Promise((resolve) =>
    proc.once('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, out, ms: Date.now() - t0 });
    }),
  );
}

async function occupied(): Promise<{ server: Server; port: number }> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return { server, port: (server.address() as { port: number }).port };
}

test('tandem up and tandem gateway on a port in use: one line, exit 2, no engine started', { timeout: 120_000 }, async () => {
  const { server, port } = await occupied();
  try {
    const up = await run(['up', '--port', String(port)]);
    assert.equal(up.code, 2);
    assert.match(up.out, new RegExp(`tandem up: cannot listen on 127\\.0\\.0\\.1:${port}: the address is in use`));
    assert.doesNotMatch(up.out, /\[decode-0\]|\[prefill-0\]/, 'no engine was started');

    const gw = await run(['gateway', '--port', String(port), '--endpoint', 'http://127.0.0.1:1,role=decode']);
    assert.equal(gw.code, 2);
    assert.match(gw.out, new RegExp(`tandem gateway: cannot listen on 127\\.0\\.0\\.1:${port}: the address is in use`));
    assert.doesNotMatch(gw.out, /at Server\.|errno/, 'no stack trace');
  } finally {
    server.close();
  }
});
