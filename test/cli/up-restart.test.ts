// `tandem up` keeps a cluster alive: an engine killed with SIGKILL is started again on its port while
// the gateway serves from the others, and `--restart never` ends the cluster instead (exit 1).
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { startUp } from '../../src/bench/experiments/cluster.ts';
import { servePid } from '../../src/bench/chaos.ts';

const ROOT = new URL('../..', import.meta.url).pathname;

async function waitFor<T>(what: string, timeoutMs: number, probe: () => Promise<T | undefined>): Promise<T> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    const v = await probe().catch(() => undefined);
    if (v !== undefined) return v;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out waiting for ${what}`);
}

async function complete(url: string): Promise<{ status: number; decode: string | null }> {
  const r = await fetch(`${url}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'stories260K', prompt: 'Once upon a time', max_tokens: 4, temperature: 0 }),
  });
  await r.arrayBuffer();
  return { status: r.status, decode: r.headers.get('x-tandem-decode-endpoint') };
}

test('tandem up restarts a killed engine on its port; the gateway serves meanwhile and uses it again', { timeout: 120_000 }, async () => {
  const logFile = join(mkdtempSync(join(tmpdir(), 'tandem-up-restart-')), 'up.log');
  const cluster = await startUp(['--prefill', '0', '--decode', '2', '--port', '0', '--no-kv-events'], { logFile });
  try {
    const victim = cluster.engines.find((e) => e.name === 'decode-1')!;
    const port = Number(new URL(victim.url).port);
    const id = `127.0.0.1:${port}`;
    const oldPid = servePid(port);
    process.kill(oldPid, 'SIGKILL');

    // while it is down (and after): every request is answered, by the survivor or the restarted engine
    for (let i = 0; i < 10; i++) assert.equal((await complete(cluster.url)).status, 200);

    await waitFor('the restart to be logged', 15_000, async () => (/decode-1 exited \(signal SIGKILL\) after [\d.]+ s; restarting it in 1 s/.test(readFileSync(logFile, 'utf8')) ? true : undefined));
    await waitFor('decode-1 to answer on its port again', 30_000, async () => ((await fetch(`${victim.url}/health`)).ok ? true : undefined));
    assert.notEqual(servePid(port), oldPid, 'a new process serves the port');
    // the gateway's health checks bring it back: some request lands on it
    await waitFor('the gateway to route to the restarted engine', 30_000, async () => {
      const r = await complete(cluster.url);
      assert.equal(r.status, 200);
      return r.decode === id ? true : undefined;
    });
  } finally {
    await cluster.stop();
  }
});

test('tandem up --restart never: a dead engine stops the cluster and up exits 1', { timeout: 120_000 }, async () => {
  const proc = spawn(process.execPath, ['bin/tandem.js', 'up', '--prefill', '0', '--decode', '1', '--port', '0', '--no-kv-events', '--restart', 'never'], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  proc.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((r) => proc.once('exit', (code) => r(code)));
  try {
    const url = await waitFor('the cluster', 90_000, async () => /decode-0\s+(http:\/\/\S+)/.exec(out)?.[1]);
    await waitFor('the try line', 10_000, async () => (/try: curl/.test(out) ? true : undefined));
    process.kill(servePid(Number(new URL(url).port)), 'SIGKILL');
    assert.equal(await exited, 1);
    assert.match(out, /decode-0 exited \(signal SIGKILL\); stopping the cluster \(--restart never\)/);
  } finally {
    proc.kill('SIGKILL');
  }
});

test('tandem up refuses an unknown --restart policy', async () => {
  const proc = spawn(process.execPath, ['bin/tandem.js', 'up', '--restart', 'sometimes'], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  proc.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const code = await new Promise<number | null>((r) => proc.once('exit', (c) => r(c)));
  assert.notEqual(code, 0);
  assert.match(err, /--restart must be on-failure, always or never \(got 'sometimes'\)/);
});
