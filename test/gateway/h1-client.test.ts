// The gateway's upstream HTTP/1.1 client against raw TCP servers that answer byte for byte what a test
// scripts (framings, splits at every byte, keep-alive races, malformed answers), and against node:http.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer as createTcpServer, type Server as TcpServer, type Socket } from 'node:net';
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { H1Pool, type ResponseHandler } from '../../src/gateway/h1-client.ts';

const servers: (TcpServer | HttpServer)[] = [];
const pools: H1Pool[] = [];
after(() => {
  for (const p of pools) p.destroy();
  for (const s of servers) {
    (s as HttpServer).closeAllConnections?.();
    s.close();
  }
});

interface Result {
  status: number;
  contentType: string;
  body: string;
  pieces: number;
  error?: Error & { code?: string };
}

/** Collects one answer; `pauseFirst` returns false from the first onData and resumes later. */
function collect(pool: H1Pool, body = '{"x":1}', opts: { pauseFirst?: boolean; headers?: string } = {}): { done: Promise<Result>; handle: ReturnType<H1Pool['request']> } {
  const r: Result = { status: 0, contentType: '', body: '', pieces: 0 };
  let resolve!: (r: Result) => void;
  const done = new Promise<Result>((res) => (resolve = res));
  let finished = false;
  const h: ResponseHandler = {
    onHeaders(status, contentType) {
      r.status = status;
      r.contentType = contentType;
    },
    onData(chunk) {
      assert.equal(finished, false, 'data after the end');
      r.body += chunk.toString('latin1');
      r.pieces++;
      if (opts.pauseFirst && r.pieces === 1) {
        setTimeout(() => handle.resume(), 30);
        return false;
      }
      return true;
    },
    onComplete() {
      assert.equal(finished, false, 'completed twice');
      finished = true;
      resolve(r);
    },
    onError(err) {
      assert.equal(finished, false, 'error after the end');
      finished = true;
      r.error = err;
      resolve(r);
    },
  };
  const handle = pool.request('POST', '/v1/completions', opts.headers ?? 'content-type: application/json\r\n', Buffer.from(body), h);
  return { done, handle };
}

/** A TCP server that hands each parsed request (head + body by content-length) to `answer`. */
async function rawServer(answer: (sock: Socket, req: { head: string; body: string; n: number }) => void): Promise<{ pool: H1Pool; requests: { head: string; body: string }[]; sockets: Socket[] }> {
  const requests: { head: string; body: string }[] = [];
  const sockets: Socket[] = [];
  const srv = createTcpServer((sock) => {
    sockets.push(sock);
    let buf = Buffer.alloc(0);
    sock.on('error', () => {});
    sock.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      for (;;) {
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) return;
        const head = buf.toString('latin1', 0, end);
        const len = Number(/content-length: (\d+)/i.exec(head)?.[1] ?? 0);
        if (buf.length < end + 4 + len) return;
        const body = buf.toString('utf8', end + 4, end + 4 + len);
        buf = buf.subarray(end + 4 + len);
        requests.push({ head, body });
        answer(sock, { head, body, n: requests.length });
      }
    });
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  servers.push(srv);
  const pool = new H1Pool(new URL(`http://127.0.0.1:${(srv.address() as AddressInfo).port}`), { connectTimeoutMs: 2000 });
  pools.push(pool);
  return { pool, requests, sockets };
}

const JSON_ANSWER = '{"id":"cmpl-1","choices":[{"text":"hi"}]}';
const CL = `HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: ${JSON_ANSWER.length}\r\nKeep-Alive: timeout=5\r\n\r\n${JSON_ANSWER}`;
const CHUNKED = 'HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n' + '6\r\ndata: \r\n' + '9;ext=1\r\n{"a":1}\n\n\r\n' + '0\r\nx-trailer: 1\r\n\r\n';

test('writes one well-formed request and reuses the keep-alive connection', async () => {
  const { pool, requests, sockets } = await rawServer((sock) => sock.write(CL));
  for (let i = 0; i < 3; i++) {
    const r = await collect(pool, `{"i":${i}}`).done;
    assert.equal(r.error, undefined);
    assert.equal(r.status, 200);
    assert.equal(r.contentType, 'application/json');
    assert.equal(r.body, JSON_ANSWER);
  }
  assert.equal(sockets.length, 1, 'one connection for sequential requests');
  assert.equal(requests.length, 3);
  const head = requests[0]!.head;
  assert.match(head, /^POST \/v1\/completions HTTP\/1\.1\r\nhost: 127\.0\.0\.1:\d+\r\ncontent-type: application\/json\r\ncontent-length: 7$/);
  assert.equal(requests[2]!.body, '{"i":2}');
  assert.deepEqual(pool.connections, { idle: 1, busy: 0 });
});

test('parses every answer framing when it arrives split at each byte boundary', async () => {
  const answers = [
    CL,
    CHUNKED,
    'HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok',
    'HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n',
    'HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n',
  ];
  const expected = [JSON_ANSWER, 'data: {"a":1}\n\n', 'ok', '', ''];
  for (let a = 0; a < answers.length; a++) {
    const wire = answers[a]!;
    for (let split = 1; split < wire.length; split++) {
      const { pool } = await rawServer((sock) => {
        sock.write(wire.slice(0, split));
        setImmediate(() => sock.write(wire.slice(split)));
      });
      const r = await collect(pool).done;
      assert.equal(r.error, undefined, `answer ${a} split at ${split}: ${r.error?.message}`);
      assert.equal(r.body, expected[a], `answer ${a} split at ${split}`);
      pool.destroy();
    }
  }
});

test('a body without length ends at close; Connection: close is honoured', async () => {
  const { pool, sockets } = await rawServer((sock, req) => {
    if (req.n === 1) sock.end('HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil the end');
    else sock.end(`HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok`);
  });
  const a = await collect(pool).done;
  assert.equal(a.error, undefined);
  assert.equal(a.body, 'until the end');
  const b = await collect(pool).done;
  assert.equal(b.body, 'ok');
  assert.equal(sockets.length, 2);
  assert.deepEqual(pool.connections, { idle: 0, busy: 0 });
});

test('a stale keep-alive connection closed by the server is retried once on a fresh one', async () => {
  // the server closes every connection right after reading a second request on it, without answering:
  // the race a keep-alive client hits when the server's idle timeout fires as it sends
  const { pool, sockets, requests } = await rawServer((sock) => {
    const served = (sock as Socket & { served?: number }).served ?? 0;
    (sock as Socket & { served?: number }).served = served + 1;
    if (served === 0) sock.write(CL);
    else sock.destroy();
  });
  assert.equal((await collect(pool).done).body, JSON_ANSWER);
  const r = await collect(pool, '{"again":true}').done;
  assert.equal(r.error, undefined);
  assert.equal(r.body, JSON_ANSWER);
  assert.equal(sockets.length, 2);
  assert.equal(requests.at(-1)!.body, '{"again":true}');
});

test('a fresh connection that fails is not retried: refused, closed mid-answer, malformed', async () => {
  const refused = new H1Pool(new URL('http://127.0.0.1:1'), { connectTimeoutMs: 2000 });
  pools.push(refused);
  const a = await collect(refused).done;
  assert.equal(a.error?.code, 'ECONNREFUSED');

  const { pool: mid, requests } = await rawServer((sock) => sock.end('HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial'));
  const b = await collect(mid).done;
  assert.equal(b.error?.code, 'UPSTREAM_CLOSED');
  assert.equal(b.body, 'partial');
  assert.equal(requests.length, 1);

  for (const wire of ['HTTP/2 200\r\n\r\n', 'HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n', 'HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n', 'HTTP/1.1 200 OK\r\nbad header\r\n\r\n', 'garbage\r\n\r\n']) {
    const { pool } = await rawServer((sock) => sock.write(wire));
    const r = await collect(pool).done;
    assert.equal(r.error?.code, 'UPSTREAM_PROTOCOL', JSON.stringify(wire));
    assert.deepEqual(pool.connections, { idle: 0, busy: 0 });
  }
});

test('an oversized response head is refused', async () => {
  const { pool } = await rawServer((sock) => sock.write(`HTTP/1.1 200 OK\r\nx-big: ${'a'.repeat(70 * 1024)}\r\n\r\n`));
  const r = await collect(pool).done;
  assert.equal(r.error?.code, 'UPSTREAM_PROTOCOL');
  assert.match(r.error!.message, /larger than/);
});

test('abort closes the connection; the engine sees it', async () => {
  let closed!: () => void;
  const sawClose = new Promise<void>((r) => (closed = r));
  const { pool } = await rawServer((sock) => {
    sock.write('HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-type: text/event-stream\r\n\r\n5\r\nfirst\r\n');
    sock.on('close', closed);
  });
  const { done, handle } = collect(pool);
  setTimeout(() => handle.abort(Object.assign(new Error('client went away'), { code: 'CLIENT_GONE' })), 50);
  const r = await done;
  assert.equal(r.body, 'first');
  assert.equal(r.error?.message, 'client went away');
  await sawClose;
  assert.deepEqual(pool.connections, { idle: 0, busy: 0 });
});

test('onData returning false pauses the socket until resume(); a big request body goes out intact', async () => {
  const big = 'x'.repeat(200_000);
  const srv = createHttpServer((req, res) => {
    let n = 0;
    req.on('data', (c: Buffer) => (n += c.length));
    req.on('end', () => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write(`got ${n}\n`);
      setTimeout(() => res.end('second\n'), 10);
    });
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  servers.push(srv);
  const pool = new H1Pool(new URL(`http://127.0.0.1:${(srv.address() as AddressInfo).port}`));
  pools.push(pool);
  const r = await collect(pool, big, { pauseFirst: true }).done;
  assert.equal(r.error, undefined);
  assert.equal(r.body, `got ${big.length}\nsecond\n`);
  // node:http's keep-alive hint (5 s) lowers the reuse limit, and the connection is reused
  const again = await collect(pool).done;
  assert.equal(again.status, 200);
  assert.deepEqual(pool.connections, { idle: 1, busy: 0 });
});

test('a closed pool refuses new requests; destroy fails those in flight', async () => {
  const { pool } = await rawServer(() => {});
  const inflight = collect(pool);
  await new Promise((r) => setTimeout(r, 20));
  pool.destroy();
  assert.equal((await inflight.done).error?.code, 'UPSTREAM_CLOSED');
  assert.equal((await collect(pool).done).error?.code, 'UPSTREAM_CLOSED');
});

test('a handler that throws fails its request, not the process', async () => {
  const { pool } = await rawServer((sock) => sock.write(CL));
  const got = await new Promise<Error>((resolve) => {
    pool.request('POST', '/v1/completions', '', Buffer.from('{}'), {
      onHeaders() {},
      onData() {
        throw new Error('sink broke');
      },
      onComplete() {
        resolve(new Error('completed'));
      },
      onError: resolve,
    });
  });
  assert.equal(got.message, 'sink broke');
  assert.deepEqual(pool.connections, { idle: 0, busy: 0 });
});
