// Graceful stop: on SIGTERM the gateway takes no new connections, lets the requests in progress
// finish (streams included), closes idle keep-alive connections, and exits 0; a second signal or the
// drain timeout cuts what is left.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { connect } from 'node:net';
import { FakeEngine, waitFor } from './fake-engine.ts';
import { H1Server } from '../../src/gateway/h1-server.ts';
import { RawConn, header } from './raw-http.ts';

const ROOT = new URL('../..', import.meta.url).pathname;
const open: FakeEngine[] = [];
after(async () => {
  for (const f of open) await f.stop();
});

test('H1Server.drain: idle connections close at once, an answer in progress completes with connection: close, no new connections', async () => {
  const srv = new H1Server((req, res) => {
    const delay = req.url === '/slow' ? 400 : 0;
    setTimeout(() => {
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': 2 });
      res.end('ok');
    }, delay);
  });
  await srv.listen(0, '127.0.0.1');
  const port = srv.address().port;
  const idle = await RawConn.open(port);
  idle.socket.write('GET /fast HTTP/1.1\r\nHost: a\r\n\r\n');
  assert.equal((await idle.readFinal()).status, 200); // now idle, kept alive
  const busy = await RawConn.open(port);
  busy.socket.write('GET /slow HTTP/1.1\r\nHost: a\r\n\r\n');
  await new Promise((r) => setTimeout(r, 50));

  const t0 = Date.now();
  const drained = srv.drain(5000);
  await waitFor(() => idle.peerEnded, 2000, 'the idle connection to be closed');
  const refused = await new Promise<boolean>((resolve) => {
    const s = connect(port, '127.0.0.1');
    s.once('connect', () => (s.destroy(), resolve(false)));
    s.once('error', () => resolve(true));
  });
  assert.ok(refused, 'a new connection is refused while draining');
  const slow = await busy.readFinal();
  assert.equal(slow.status, 200);
  assert.equal(slow.body.toString(), 'ok');
  assert.equal(header(slow, 'connection'), 'close');
  await drained;
  assert.ok(Date.now() - t0 < 3000, 'drain ended when the last answer did');
  assert.equal(srv.connections, 0);
  idle.close();
  busy.close();
});

test('H1Server.drain: an answer still running at the timeout is cut', async () => {
  const srv = new H1Server(() => {
    // never answers
  });
  await srv.listen(0, '127.0.0.1');
  const c = await RawConn.open(srv.address().port);
  c.socket.write('GET /never HTTP/1.1\r\nHost: a\r\n\r\n');
  await new Promise((r) => setTimeout(r, 50));
  const t0 = Date.now();
  await srv.drain(300);
  assert.ok(Date.now() - t0 < 2000);
  await waitFor(() => c.closed, 2000, 'the connection to be dropped');
  c.close();
});

test('tandem gateway on SIGTERM: a stream in progress finishes with [DONE], then the process exits 0', { timeout: 60_000 }, async () => {
  const d = await new FakeEngine({ role: 'decode', chunks: 20, chunkDelayMs: 50 }).start();
  open.push(d);
  const proc = spawn(process.execPath, ['bin/tandem.js', 'gateway', '--port', '0', '--endpoint', `${d.url},role=decode`], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  proc.stdout!.on('data', (b: Buffer) => (log += b.toString()));
  proc.stderr!.on('data', (b: Buffer) => (log += b.toString()));
  const exited = new Promise<number | null>((r) => proc.once('exit', (code) => r(code)));
  try {
    await waitFor(() => /listening on http:\/\/\S+/.test(log), 30_000, 'the gateway to listen');
    const url = /listening on (http:\/\/\S+)/.exec(log)![1]!;
    await waitFor(async () => (await fetch(`${url}/ready`).then((r) => r.status).catch(() => 0)) === 200, 10_000, 'ready');
    const r = await fetch(`${url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model: 'fake', prompt: 'x', stream: true }) });
    const reader = r.body!.getReader();
    await reader.read(); // the stream has started
    proc.kill('SIGTERM');
    let text = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      text += Buffer.from(value).toString();
    }
    assert.match(text, /data: \[DONE\]\n\n$/);
    assert.doesNotMatch(text, /upstream_stream_broken/);
    assert.equal(await exited, 0);
    assert.match(log, /draining: 1 requests in flight/);
  } finally {
    proc.kill('SIGKILL');
  }
});
