// Unit tests of the gateway's HTTP/1.1 server on its own (src/gateway/h1-server.ts), with handlers
// written here. The gateway-level behaviour is in http-conformance.test.ts; these reach what the
// gateway cannot be made to do on demand: short timeouts, a handler that streams tens of MiB against
// a slow reader, handlers that throw or answer late, clients that vanish mid-answer, and fuzzed input.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connect, type Server, type Socket } from 'node:net';
import { createHash, randomBytes } from 'node:crypto';
import { H1Server, type H1Handler, type H1Request, type H1Response, type H1ServerOptions } from '../../src/gateway/h1-server.ts';
import { RawConn, connectionTokens, header, request, sleep, type RawResponse } from './raw-http.ts';
import { rng } from '../tokenizer/helpers.ts';

// ---------------------------------------------------------------------------------------------
// helpers

interface Ctx {
  srv: H1Server;
  port: number;
  /** what onInternalError was told */
  errors: unknown[];
  /** the server side of every accepted connection, to check what the server buffers */
  serverSockets: Socket[];
  /** a raw connection to the server, closed when the test ends */
  open(): Promise<RawConn>;
}

async function withServer(
  handler: H1Handler,
  opts: Partial<H1ServerOptions>,
  fn: (c: Ctx) => Promise<void>,
  { internalErrorsExpected = false } = {},
): Promise<void> {
  const errors: unknown[] = [];
  const srv = new H1Server(handler, opts, (e) => errors.push(e));
  const serverSockets: Socket[] = [];
  // H1Server keeps its net.Server private; a second 'connection' listener only observes
  (srv as unknown as { server: Server }).server.on('connection', (s: Socket) => serverSockets.push(s));
  const conns: RawConn[] = [];
  await srv.listen(0, '127.0.0.1');
  const port = srv.address().port;
  try {
    await fn({
      srv,
      port,
      errors,
      serverSockets,
      open: async () => {
        const c = await RawConn.open(port);
        conns.push(c);
        return c;
      },
    });
    if (!internalErrorsExpected) assert.deepEqual(errors, [], 'onInternalError was called');
  } finally {
    for (const c of conns) c.close();
    await srv.close();
  }
}

async function waitFor(cond: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(10);
  }
}

/** A complete answer with a content-length. */
function text(res: H1Response, status: number, body: string | Buffer): void {
  const b = typeof body === 'string' ? Buffer.from(body) : body;
  res.writeHead(status, { 'content-type': 'text/plain', 'content-length': b.length });
  res.end(b);
}

/** seeded (mulberry32): the same cases on every run */
const prng = rng;

function randInt(rand: () => number, lo: number, hi: number): number {
  return lo + Math.floor(rand() * (hi - lo + 1));
}

function randomBuffer(rand: () => number, n: number): Buffer {
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) b[i] = (rand() * 256) | 0;
  return b;
}

function sha(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

/** Writes `data` in pieces of random size, each awaited, so the server sees it over many reads. */
async function writeInPieces(conn: RawConn, data: Buffer, rand: () => number, maxPiece: number): Promise<number> {
  let pieces = 0;
  for (let i = 0; i < data.length; ) {
    const n = randInt(rand, 1, maxPiece);
    await conn.write(data.subarray(i, i + n));
    i += n;
    pieces++;
    // let the server's reads interleave with ours instead of one big coalesced read
    if (pieces % 8 === 0) await new Promise((r) => setImmediate(r));
  }
  return pieces;
}

/**
 * Reads one chunked answer as it streams in, without keeping it: the head, then each chunk's bytes
 * into a hash. A strict reader: a malformed frame is an error, and nothing may follow the last chunk.
 */
class StreamingChunkedReader {
  head = '';
  bytes = 0;
  chunkSizes: number[] = [];
  readonly hash = createHash('sha256');
  done = false;
  error: string | undefined;
  private buf: Buffer = Buffer.alloc(0);
  private state: 'head' | 'size' | 'data' | 'crlf' | 'final' = 'head';
  private remaining = 0;

  feed = (d: Buffer): void => {
    if (this.error) return;
    if (this.done) {
      this.error = `bytes after the last chunk: ${JSON.stringify(d.toString('latin1', 0, 40))}`;
      return;
    }
    const buf = this.buf.length ? Buffer.concat([this.buf, d]) : d;
    let pos = 0;
    while (pos < buf.length && !this.error && !this.done) {
      if (this.state === 'head') {
        const end = buf.indexOf('\r\n\r\n', pos, 'latin1');
        if (end < 0) break;
        this.head = buf.toString('latin1', pos, end);
        pos = end + 4;
        if (!/\r\ntransfer-encoding: chunked(\r\n|$)/i.test(this.head)) this.error = `not chunked: ${this.head}`;
        this.state = 'size';
      } else if (this.state === 'size') {
        const eol = buf.indexOf('\r\n', pos, 'latin1');
        if (eol < 0) break;
        const line = buf.toString('latin1', pos, eol);
        pos = eol + 2;
        if (!/^[0-9a-f]+$/i.test(line)) this.error = `bad chunk size line ${JSON.stringify(line)}`;
        const size = parseInt(line, 16);
        if (size === 0) this.state = 'final';
        else {
          this.chunkSizes.push(size);
          this.remaining = size;
          this.state = 'data';
        }
      } else if (this.state === 'data') {
        const n = Math.min(this.remaining, buf.length - pos);
        this.hash.update(buf.subarray(pos, pos + n));
        this.bytes += n;
        this.remaining -= n;
        pos += n;
        if (this.remaining === 0) this.state = 'crlf';
      } else if (this.state === 'crlf' || this.state === 'final') {
        if (buf.length - pos < 2) break;
        if (buf[pos] !== 0x0d || buf[pos + 1] !== 0x0a) this.error = `expected CRLF after ${this.state === 'crlf' ? 'chunk data' : 'the last chunk'}`;
        pos += 2;
        if (this.state === 'final') this.done = true;
        else this.state = 'size';
      }
    }
    if (this.done && pos < buf.length) this.error = 'bytes after the last chunk';
    // a copy, so the leftover of a size line does not pin a whole 64 KiB read
    this.buf = pos >= buf.length ? Buffer.alloc(0) : Buffer.from(buf.subarray(pos));
  };
}

/** A plain net socket to the server whose reads the test controls (RawConn always reads). */
function rawSocket(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect({ port, host: '127.0.0.1' });
    s.once('connect', () => {
      s.off('error', reject);
      s.on('error', () => {});
      resolve(s);
    });
    s.once('error', reject);
  });
}

/**
 * Reads a socket slowly: one `data` event every `everyMs`, for `forMs`; then at full speed until
 * `wantBytes` arrived, the server closes, or `untilMs` (from the start) passes.
 */
async function slowThenFastRead(s: Socket, everyMs: number, forMs: number, untilMs: number, wantBytes: number): Promise<{ bytes: number; closed: boolean }> {
  let bytes = 0;
  let closed = false;
  const start = Date.now();
  s.on('end', () => (closed = true));
  s.on('close', () => (closed = true));
  const onData = (d: Buffer): void => {
    bytes += d.length;
    if (Date.now() - start < forMs) s.pause();
  };
  s.on('data', onData);
  s.pause();
  while (Date.now() - start < forMs && !closed) {
    await sleep(everyMs);
    s.resume();
  }
  s.resume();
  while (!closed && bytes < wantBytes && Date.now() - start < untilMs) await sleep(20);
  return { bytes, closed };
}

// ---------------------------------------------------------------------------------------------
// 1. timeouts

const SHORT = { keepAliveTimeoutMs: 1500, requestReadTimeoutMs: 1500 };

const timeoutHandler: H1Handler = (req, res) => {
  if (req.url === '/slow') setTimeout(() => text(res, 200, 'slow done'), 3000);
  else if (req.method === 'POST') text(res, 200, `got ${req.body.length}`);
  else text(res, 200, 'ok');
};

test('1. timeouts (keep-alive and request read timeouts of 1.5 s; housekeeping ticks each second)', { concurrency: true }, async (t) => {
  await Promise.all([
    t.test('an idle keep-alive connection is closed, and not before a second', () =>
      withServer(timeoutHandler, SHORT, async (c) => {
        const conn = await c.open();
        const silent = await c.open();
        await conn.write(request('GET', '/', undefined));
        const res = await conn.readFinal();
        assert.equal(res.status, 200);
        assert.ok(!connectionTokens(res).includes('close'));
        // the earliest close is two ticks (2 s) after the answer; timers only ever fire late
        assert.equal(await conn.waitEnded(1000), false, 'closed within a second of the answer');
        assert.equal(await conn.waitEnded(4000), true, 'idle keep-alive connection not closed');
        // a connection that never sent a byte is idle too
        assert.equal(await silent.waitEnded(3000), true, 'silent connection not closed');
        await waitFor(() => c.srv.connections === 0, 2000, 'connections to be forgotten');
      })),

    t.test('a head sent half-way and then stalled gets 408 and a close', () =>
      withServer(timeoutHandler, SHORT, async (c) => {
        const conn = await c.open();
        const t0 = Date.now();
        await conn.write('GET /x HTTP/1.1\r\nHost: a\r\nX-Par');
        const res = await conn.readFinal({ timeoutMs: 5000 });
        assert.equal(res.status, 408);
        assert.ok(Date.now() - t0 >= 1000, 'answered 408 too early');
        assert.ok(connectionTokens(res).includes('close'));
        assert.match(header(res, 'content-type') ?? '', /json/);
        assert.equal(await conn.waitEnded(2000), true);
      })),

    t.test('a head trickling in a byte at a time (slowloris) still gets 408', () =>
      withServer(timeoutHandler, SHORT, async (c) => {
        const conn = await c.open();
        const t0 = Date.now();
        await conn.write('GET /x HTTP/1.1\r\nHost: a\r\nX-Slow: ');
        let sent = 0;
        while (conn.pending.length === 0 && !conn.peerEnded && Date.now() - t0 < 6000) {
          await conn.write('a');
          sent++;
          await sleep(200);
        }
        const res = await conn.readFinal({ timeoutMs: 1000 });
        assert.equal(res.status, 408);
        assert.ok(sent >= 5, `the head was answered after only ${sent} trickled bytes`);
        assert.equal(await conn.waitEnded(2000), true);
      })),

    t.test('a body that stops making progress gets 408', () =>
      withServer(timeoutHandler, SHORT, async (c) => {
        const conn = await c.open();
        await conn.write('POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n0123456789');
        const res = await conn.readFinal({ timeoutMs: 5000 });
        assert.equal(res.status, 408);
        assert.ok(connectionTokens(res).includes('close'));
        assert.equal(await conn.waitEnded(2000), true);
      })),

    t.test('a body that keeps making progress is not timed out', () =>
      withServer(timeoutHandler, SHORT, async (c) => {
        const conn = await c.open();
        await conn.write('POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 16\r\n\r\n');
        // 16 bytes over about 4 s, well past the read timeout, but never 1.5 s without a byte
        await conn.writeSlowly('abcdefghijklmnop', 1, 250);
        const res = await conn.readFinal({ timeoutMs: 3000 });
        assert.equal(res.status, 200);
        assert.equal(res.body.toString(), 'got 16');
      })),

    t.test('a request being handled (answered after 3 s) is not timed out, and the connection is reusable', () =>
      withServer(timeoutHandler, SHORT, async (c) => {
        const conn = await c.open();
        const t0 = Date.now();
        await conn.write(request('GET', '/slow', undefined));
        const res = await conn.readFinal({ timeoutMs: 8000 });
        assert.equal(res.status, 200);
        assert.equal(res.body.toString(), 'slow done');
        assert.ok(Date.now() - t0 >= 2900);
        assert.ok(!connectionTokens(res).includes('close'));
        await conn.write(request('GET', '/', undefined));
        const again = await conn.readFinal();
        assert.equal(again.status, 200);
        assert.equal(again.body.toString(), 'ok');
      })),
  ]);
});

// ---------------------------------------------------------------------------------------------
// 2. backpressure

test('2. backpressure: 64 MiB streamed in 64 KiB writes to a slow reader stays bounded and arrives intact', async () => {
  const CHUNK = 64 * 1024;
  const CHUNKS = 1024;
  const base = randomBytes(CHUNK);
  const sent = createHash('sha256');
  let written = 0;
  let falseReturns = 0;
  let drains = 0;
  let maxBuffered = 0;
  let ended = false;
  let sock: Socket | undefined;

  await withServer(
    (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/octet-stream' });
      let k = 0;
      const pump = (): void => {
        while (k < CHUNKS) {
          // every chunk differs, so a reordering would change the hash
          const c = Buffer.from(base);
          c.writeUInt32BE(k, 0);
          c.writeUInt32BE(k ^ 0x5a5a5a5a, CHUNK - 4);
          k++;
          sent.update(c);
          written += c.length;
          const ok = res.write(c);
          maxBuffered = Math.max(maxBuffered, sock?.writableLength ?? 0);
          if (!ok) {
            falseReturns++;
            res.ondrain = () => {
              drains++;
              pump();
            };
            return;
          }
        }
        res.end();
        ended = true;
      };
      pump();
    },
    {},
    async (c) => {
      const s = await rawSocket(c.port);
      try {
        s.write('GET /big HTTP/1.1\r\nHost: a\r\n\r\n');
        // no 'data' listener yet: the client reads nothing for a while
        await waitFor(() => c.serverSockets.length === 1, 2000, 'the server socket');
        sock = c.serverSockets[0];
        await sleep(800);
        const writtenWhilePaused = written;
        assert.ok(falseReturns >= 1, 'write() never returned false against a client that does not read');
        assert.ok(!ended, 'the whole body was taken while the client read nothing');
        assert.ok(writtenWhilePaused < 24 * 1024 * 1024, `${writtenWhilePaused} bytes taken while the client read nothing`);

        const reader = new StreamingChunkedReader();
        s.on('data', reader.feed);
        await waitFor(() => reader.done || reader.error !== undefined || s.destroyed, 8000, 'the whole chunked body');
        assert.equal(reader.error, undefined);
        assert.ok(reader.done);
        assert.match(reader.head, /^HTTP\/1\.1 200 /);
        assert.ok(!/\r\ncontent-length:/i.test(reader.head));
        assert.equal(reader.bytes, CHUNK * CHUNKS);
        assert.equal(reader.hash.digest('hex'), sent.digest('hex'), 'bytes differ or came out of order');
        assert.ok(reader.chunkSizes.every((n) => n === CHUNK), 'one chunk per write');
        assert.ok(ended);
        assert.ok(drains >= 1 && drains === falseReturns, `${falseReturns} false returns but ${drains} ondrain calls`);
        // the socket's own buffer holds at most about one write beyond its high-water mark
        assert.ok(maxBuffered <= 4 * CHUNK, `the server buffered up to ${maxBuffered} bytes in user space`);
      } finally {
        s.destroy();
      }
    },
  );
});

test('2b. many small writes in one tick (a burst of SSE events): a false return is always followed by ondrain', async () => {
  // Small writes are held and merged until the end of the tick. If write() said "full" on account of
  // the held bytes while the socket itself never became full, no 'drain' would ever come and a
  // handler that obeys backpressure (the gateway's SSE relay pauses its engine) would stall forever.
  const EVENT = Buffer.alloc(1000, 'e');
  const BURSTS = 400;
  const PER_BURST = 64; // 64 KB per tick: well past the socket's 16 KiB high-water mark
  let falseReturns = 0;
  let drains = 0;
  let written = 0;
  const handler: H1Handler = (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/event-stream' });
    let burst = 0;
    let i = 0;
    const pump = (): void => {
      while (burst < BURSTS) {
        while (i < PER_BURST) {
          i++;
          written += EVENT.length;
          if (!res.write(EVENT)) {
            falseReturns++;
            res.ondrain = () => {
              drains++;
              pump();
            };
            return;
          }
        }
        i = 0;
        burst++;
        // the next burst comes in a later tick, as the next upstream read would
        setImmediate(pump);
        return;
      }
      res.end();
    };
    pump();
  };
  await withServer(handler, {}, async (c) => {
    const conn = await c.open();
    // the client reads nothing for a while (the socket's buffers fill), then everything
    conn.socket.pause();
    conn.socket.write('GET /burst HTTP/1.1\r\nHost: a\r\n\r\n');
    await sleep(600);
    assert.ok(falseReturns >= 1, 'write() never returned false against a client that does not read');
    assert.ok(written < 16 * 1024 * 1024, `${written} bytes taken while the client read nothing`);
    conn.socket.resume();
    const res = await Promise.race([
      conn.readFinal({ timeoutMs: 20_000 }),
      sleep(20_000).then(() => {
        throw new Error(`the answer stalled: ${falseReturns} false returns, ${drains} ondrain calls`);
      }),
    ]);
    assert.equal(res.status, 200);
    assert.equal(res.body.length, EVENT.length * PER_BURST * BURSTS);
    assert.equal(drains, falseReturns, `${falseReturns} false returns but ${drains} ondrain calls`);
  });
});

// ---------------------------------------------------------------------------------------------
// 3. onclose / aborted

test('3. onclose fires once when the client goes mid-answer; later writes are no-ops; not for completed answers', async () => {
  const held: H1Response[] = [];
  const closes = new Map<string, number>();
  const count = (k: string) => () => closes.set(k, (closes.get(k) ?? 0) + 1);

  await withServer(
    (req, res) => {
      res.onclose = count(req.url);
      if (req.url.startsWith('/stream')) {
        res.writeHead(200, { 'content-type': 'text/plain' });
        res.write('first');
        held.push(res);
      } else if (req.url.startsWith('/silent')) held.push(res);
      else text(res, 200, 'done');
    },
    {},
    async (c) => {
      // the client destroys its socket after the first chunk
      {
        const conn = await c.open();
        await conn.write(request('GET', '/stream-destroy', undefined));
        assert.ok(await conn.waitData(2000));
        conn.close();
        await waitFor(() => closes.get('/stream-destroy') === 1, 3000, 'onclose');
        const res = held.at(-1)!;
        assert.equal(res.aborted, true);
        assert.equal(res.write('more'), true, 'write after the client went reports no backpressure');
        assert.equal(res.write(Buffer.alloc(100_000)), true);
        res.end('the end');
        res.end();
        res.destroy();
      }
      // a FIN (half-close) with the answer pending is taken as the client going away
      {
        const conn = await c.open();
        await conn.write(request('GET', '/stream-fin', undefined));
        assert.ok(await conn.waitData(2000));
        conn.socket.end();
        await waitFor(() => closes.get('/stream-fin') === 1, 3000, 'onclose after FIN');
        assert.equal(held.at(-1)!.aborted, true);
        held.at(-1)!.end('x');
        assert.equal(await conn.waitEnded(2000), true);
      }
      // gone before the handler wrote anything: a late writeHead/write/end does nothing
      {
        const conn = await c.open();
        await conn.write(request('GET', '/silent', undefined));
        await waitFor(() => held.length === 3, 2000, 'the handler');
        conn.close();
        await waitFor(() => closes.get('/silent') === 1, 3000, 'onclose');
        const res = held.at(-1)!;
        assert.equal(res.aborted, true);
        res.writeHead(200, { 'content-length': 4 });
        assert.equal(res.write('late'), true);
        res.end();
        assert.equal(res.headersSent, false);
      }
      // completed answers: keep-alive then client close, connection: close, HTTP/1.0
      {
        const conn = await c.open();
        await conn.write(request('GET', '/done-ka', undefined));
        assert.equal((await conn.readFinal()).status, 200);
        conn.close();
        const conn2 = await c.open();
        await conn2.write(request('GET', '/done-close', undefined, [['Connection', 'close']]));
        assert.equal((await conn2.readFinal()).status, 200);
        assert.equal(await conn2.waitEnded(2000), true);
        const conn3 = await c.open();
        await conn3.write(request('GET', '/done-10', undefined, [], 'HTTP/1.0'));
        assert.equal((await conn3.readFinal()).status, 200);
        assert.equal(await conn3.waitEnded(2000), true);
      }
      await waitFor(() => c.srv.connections === 0, 2000, 'all connections closed');
      await sleep(100);
      assert.deepEqual(
        [...closes.entries()].sort(),
        [['/silent', 1], ['/stream-destroy', 1], ['/stream-fin', 1]],
        'onclose fired for the wrong answers, or more than once',
      );
    },
  );
});

// ---------------------------------------------------------------------------------------------
// 4. framing chosen by writeHead

const framingHandler: H1Handler = (req, res) => {
  switch (req.url) {
    case '/len':
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': 5 });
      res.end('hello');
      return;
    case '/chunked':
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.write('abc');
      res.write('');
      // above the size copied behind the frame, so the corked path is taken too
      res.write(Buffer.alloc(20_000, 'x'));
      res.end('tail');
      return;
    case '/chunked-empty':
      res.writeHead(200, {});
      res.end();
      return;
    case '/no-content':
      res.writeHead(204, { 'x-a': 'b' });
      res.end('must not be sent');
      return;
    case '/not-modified':
      res.writeHead(304, {});
      res.write('must not be sent');
      res.end('nor this');
      return;
    case '/hop-by-hop':
      // the server owns framing and connection management
      res.writeHead(200, { connection: 'close', 'transfer-encoding': 'gzip', 'keep-alive': 'timeout=1', 'content-length': 2 });
      res.end('ok');
      return;
    case '/inject-crlf':
      res.writeHead(200, { 'x-evil': 'a\r\nset-cookie: owned=1' });
      res.end('unreachable');
      return;
    case '/inject-lf':
      res.writeHead(200, { 'x-evil': 'a\nset-cookie: owned=1' });
      res.end('unreachable');
      return;
    case '/inject-cr':
      res.writeHead(200, { 'x-evil': 'a\rb' });
      res.end('unreachable');
      return;
    case '/inject-name':
      res.writeHead(200, { 'x-a\r\nx-injected': 'yes', 'content-length': 2 });
      res.end('ok');
      return;
    case '/inject-length':
      res.writeHead(200, { 'content-length': '2\r\nx-injected: yes' });
      res.end('ok');
      return;
    case '/throw-after-head':
      res.writeHead(200, { 'content-length': 2 });
      throw new Error('boom after writeHead');
    default:
      text(res, 404, 'no');
  }
};

test('4a. content-length given: no chunking; none on HTTP/1.1: chunked with a correct last chunk', async () => {
  await withServer(framingHandler, {}, async (c) => {
    const conn = await c.open();
    await conn.write(request('GET', '/len', undefined));
    const len = await conn.readFinal();
    assert.equal(len.framing, 'length');
    assert.equal(header(len, 'transfer-encoding'), undefined);
    assert.equal(header(len, 'content-length'), '5');
    assert.equal(len.body.toString(), 'hello');

    await conn.write(request('GET', '/chunked', undefined));
    const ch = await conn.readFinal();
    assert.equal(ch.framing, 'chunked');
    assert.equal(header(ch, 'content-length'), undefined);
    assert.deepEqual(ch.chunkLines, ['3', (20_000).toString(16), '4', '0'], 'an empty write must not send a (terminating) empty chunk');
    assert.equal(ch.body.toString(), `abc${'x'.repeat(20_000)}tail`);
    assert.equal(ch.trailers.size, 0);

    await conn.write(request('GET', '/chunked-empty', undefined));
    const empty = await conn.readFinal();
    assert.equal(empty.framing, 'chunked');
    assert.deepEqual(empty.chunkLines, ['0']);
    assert.equal(empty.body.length, 0);

    // the stream is still in sync: nothing stray after the last chunk
    assert.equal(await conn.waitData(100), false);
    await conn.write(request('GET', '/len', undefined));
    assert.equal((await conn.readFinal()).body.toString(), 'hello');
    assert.equal(conn.peerEnded, false);
  });
});

test('4b. HTTP/1.0: no length means body until close; with a length and keep-alive the connection stays', async () => {
  await withServer(framingHandler, {}, async (c) => {
    const conn = await c.open();
    await conn.write(request('GET', '/chunked', undefined, [], 'HTTP/1.0'));
    const res = await conn.readFinal();
    assert.equal(res.framing, 'close');
    assert.equal(header(res, 'transfer-encoding'), undefined);
    assert.ok(connectionTokens(res).includes('close'));
    assert.equal(res.body.toString(), `abc${'x'.repeat(20_000)}tail`);

    // even when the client asked for keep-alive: a close-delimited body needs the close
    const conn2 = await c.open();
    await conn2.write(request('GET', '/chunked', undefined, [['Connection', 'keep-alive']], 'HTTP/1.0'));
    const res2 = await conn2.readFinal();
    assert.equal(res2.framing, 'close');
    assert.ok(connectionTokens(res2).includes('close'));

    const conn3 = await c.open();
    await conn3.write(request('GET', '/len', undefined, [['Connection', 'keep-alive']], 'HTTP/1.0'));
    const ka = await conn3.readFinal();
    assert.equal(ka.framing, 'length');
    assert.ok(connectionTokens(ka).includes('keep-alive'));
    await conn3.write(request('GET', '/len', undefined, [['Connection', 'keep-alive']], 'HTTP/1.0'));
    assert.equal((await conn3.readFinal()).body.toString(), 'hello');
    assert.equal(conn3.peerEnded, false);

    // HTTP/1.0 without keep-alive: closed after a length-delimited answer too
    const conn4 = await c.open();
    await conn4.write(request('GET', '/len', undefined, [], 'HTTP/1.0'));
    const plain = await conn4.readFinal();
    assert.equal(plain.body.toString(), 'hello');
    assert.ok(connectionTokens(plain).includes('close'));
    assert.equal(await conn4.waitEnded(2000), true);
  });
});

test('4c. 204, 304 and HEAD send no body bytes even when the handler passes one', async () => {
  await withServer(framingHandler, {}, async (c) => {
    const conn = await c.open();
    for (const path of ['/no-content', '/not-modified']) {
      await conn.write(request('GET', path, undefined));
      const res = await conn.read();
      assert.equal(res.status, path === '/no-content' ? 204 : 304);
      assert.equal(header(res, 'transfer-encoding'), undefined);
      assert.equal(await conn.waitData(150), false, `body bytes after ${res.status}: ${JSON.stringify(conn.pending.toString())}`);
    }
    await conn.write(request('HEAD', '/len', undefined));
    const head = await conn.read({ method: 'HEAD' });
    assert.equal(head.status, 200);
    assert.equal(header(head, 'content-length'), '5');
    assert.equal(await conn.waitData(150), false, 'body bytes after a HEAD answer');

    await conn.write(request('HEAD', '/chunked', undefined));
    const headCh = await conn.read({ method: 'HEAD' });
    assert.equal(headCh.status, 200);
    assert.equal(header(headCh, 'transfer-encoding'), undefined);
    assert.equal(await conn.waitData(150), false, 'body bytes after a HEAD answer to a streamed body');

    // and the connection is still in sync
    await conn.write(request('GET', '/len', undefined));
    assert.equal((await conn.readFinal()).body.toString(), 'hello');
  });
});

test('4d. hop-by-hop headers from the handler are dropped: the server frames the answer', async () => {
  await withServer(framingHandler, {}, async (c) => {
    const conn = await c.open();
    await conn.write(request('GET', '/hop-by-hop', undefined));
    const res = await conn.readFinal();
    assert.equal(res.framing, 'length');
    assert.equal(header(res, 'transfer-encoding'), undefined);
    assert.equal(header(res, 'keep-alive'), undefined);
    assert.equal(header(res, 'connection'), undefined);
    assert.equal(res.body.toString(), 'ok');
    await conn.write(request('GET', '/len', undefined));
    assert.equal((await conn.readFinal()).body.toString(), 'hello');
  });
});

test('4e. a header value with CR or LF throws in writeHead; the handler throw becomes a 500 and a close', async () => {
  await withServer(
    framingHandler,
    {},
    async (c) => {
      for (const path of ['/inject-crlf', '/inject-lf', '/inject-cr']) {
        const conn = await c.open();
        await conn.write(request('GET', path, undefined));
        const res = await conn.readFinal();
        assert.equal(res.status, 500, path);
        assert.equal(header(res, 'set-cookie'), undefined);
        assert.equal(header(res, 'x-evil'), undefined);
        assert.ok(connectionTokens(res).includes('close'));
        assert.match(header(res, 'content-type') ?? '', /json/);
        assert.equal(await conn.waitEnded(2000), true, `${path}: connection not closed after the 500`);
      }
      assert.equal(c.errors.length, 3);
      for (const e of c.errors) assert.match((e as Error).message, /control character/);
    },
    { internalErrorsExpected: true },
  );
});

test(
  '4f. a header NAME with CRLF, or a content-length value with CRLF, must not reach the wire',
  async () => {
    await withServer(
      framingHandler,
      {},
      async (c) => {
        for (const path of ['/inject-name', '/inject-length']) {
          const conn = await c.open();
          await conn.write(request('GET', path, undefined, [['Connection', 'close']]));
          assert.equal(await conn.waitEnded(2000), true);
          // the raw bytes: an injected line may not even parse as a header
          const wire = conn.pending.toString('latin1');
          assert.ok(!/\r\nx-injected:/i.test(wire), `${path}: header injected: ${JSON.stringify(wire.slice(0, 120))}`);
          assert.match(wire, /^HTTP\/1\.1 500 /, path);
        }
      },
      { internalErrorsExpected: true },
    );
  },
);

test(
  '4g. a handler that throws after writeHead (nothing sent yet) gets a 500, and onInternalError is told once',
  async () => {
    await withServer(
      framingHandler,
      {},
      async (c) => {
        const conn = await c.open();
        await conn.write(request('GET', '/throw-after-head', undefined));
        assert.ok(await conn.waitEnded(2000));
        const got = conn.pending.toString('latin1');
        assert.match(got, /^HTTP\/1\.1 500 /, `got ${JSON.stringify(got.slice(0, 100))}`);
        assert.equal(c.errors.length, 1, `onInternalError told ${c.errors.length} times: ${c.errors.map((e) => (e as Error).message).join(' | ')}`);
      },
      { internalErrorsExpected: true },
    );
  },
);

// ---------------------------------------------------------------------------------------------
// 5. request bodies

test('5a. a 3 MB content-length body split over many TCP writes arrives intact', async () => {
  const rand = prng(5);
  const body = randomBuffer(rand, 3 * 1000 * 1000 + 7);
  let got: Buffer | undefined;
  await withServer(
    (req, res) => {
      got = Buffer.from(req.body);
      text(res, 200, `${req.body.length} ${sha(req.body)}`);
    },
    {},
    async (c) => {
      const conn = await c.open();
      const head = Buffer.from(`POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: ${body.length}\r\n\r\n`);
      const pieces = await writeInPieces(conn, Buffer.concat([head, body]), rand, 64 * 1024);
      assert.ok(pieces > 50);
      const res = await conn.readFinal({ timeoutMs: 8000 });
      assert.equal(res.body.toString(), `${body.length} ${sha(body)}`);
      assert.ok(got && got.equals(body));
      // and a small body in tiny pieces, head and all
      await writeInPieces(conn, Buffer.from(request('POST', '/small', 'a small body, split')), rand, 3);
      assert.equal((await conn.readFinal()).body.toString().split(' ')[0], '19');
    },
  );
});

test('5b. a chunked body with many chunks (extensions, trailers, split anywhere) arrives de-chunked', async () => {
  const rand = prng(55);
  const parts: Buffer[] = [];
  let wire = 'POST /chunks HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n';
  const frames: Buffer[] = [Buffer.from(wire, 'latin1')];
  for (let i = 0; i < 400; i++) {
    const p = randomBuffer(rand, randInt(rand, 1, 5000));
    parts.push(p);
    let size = p.length.toString(16);
    if (rand() < 0.3) size = size.toUpperCase();
    if (rand() < 0.2) size += `;ext${i}=v`;
    frames.push(Buffer.from(`${size}\r\n`, 'latin1'), p, Buffer.from('\r\n'));
  }
  frames.push(Buffer.from('0\r\nX-Trailer: 1\r\nX-Other: two\r\n\r\n'));
  const expected = Buffer.concat(parts);
  wire = '';
  let got: H1Request | undefined;
  await withServer(
    (req, res) => {
      got = req;
      text(res, 200, `${req.body.length}`);
    },
    {},
    async (c) => {
      const conn = await c.open();
      await writeInPieces(conn, Buffer.concat(frames), rand, 9000);
      const res = await conn.readFinal({ timeoutMs: 8000 });
      assert.equal(res.status, 200);
      assert.equal(res.body.toString(), String(expected.length));
      assert.ok(got!.body.equals(expected), 'the de-chunked body differs');
      assert.equal(got!.bodyTooLarge, false);
      // trailers are read and dropped, and the connection stays in sync
      await conn.write(request('POST', '/next', 'abc'));
      assert.equal((await conn.readFinal()).body.toString(), '3');
    },
  );
});

test('5c. bodyTooLarge for a declared length and for a chunked body; the connection closes after the answer', async () => {
  const seen: { url: string; tooLarge: boolean; len: number }[] = [];
  await withServer(
    (req, res) => {
      seen.push({ url: req.url, tooLarge: req.bodyTooLarge, len: req.body.length });
      if (req.bodyTooLarge) text(res, 413, 'too large');
      else text(res, 200, `got ${req.body.length}`);
    },
    { maxBodyBytes: 1000 },
    async (c) => {
      // exactly at the limit is fine
      const at = await c.open();
      await at.write(request('POST', '/at-limit', 'x'.repeat(1000)));
      const ok = await at.readFinal();
      assert.equal(ok.status, 200);
      assert.ok(!connectionTokens(ok).includes('close'));

      // a declared length over the limit: answered without the body ever being sent
      const declared = await c.open();
      await declared.write('POST /declared HTTP/1.1\r\nHost: a\r\nContent-Length: 5000\r\n\r\n');
      const r1 = await declared.readFinal();
      assert.equal(r1.status, 413);
      assert.ok(connectionTokens(r1).includes('close'));
      assert.equal(await declared.waitEnded(2000), true);

      // with Expect: 100-continue, no interim 100 for a body that will not be read
      const expect = await c.open();
      await expect.write('POST /expect HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5000\r\n\r\n');
      const r2 = await expect.read();
      assert.equal(r2.status, 413);
      assert.equal(await expect.waitEnded(2000), true);

      // chunked: the fourth chunk takes it over the limit; the client keeps sending
      const chunked = await c.open();
      let wire = 'POST /chunked HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n';
      for (let i = 0; i < 8; i++) wire += `12c\r\n${'y'.repeat(300)}\r\n`;
      await chunked.write(`${wire}0\r\n\r\n`);
      const r3 = await chunked.readFinal();
      assert.equal(r3.status, 413);
      assert.ok(connectionTokens(r3).includes('close'));
      assert.equal(await chunked.waitEnded(2000), true);

      assert.deepEqual(seen, [
        { url: '/at-limit', tooLarge: false, len: 1000 },
        { url: '/declared', tooLarge: true, len: 0 },
        { url: '/expect', tooLarge: true, len: 0 },
        { url: '/chunked', tooLarge: true, len: 0 },
      ]);
    },
  );
});

test(
  '5d. an empty line before the request line is ignored even when its CR and LF arrive in separate reads',
  async () => {
    await withServer(
      (_req, res) => text(res, 200, 'ok'),
      {},
      async (c) => {
        const conn = await c.open();
        await conn.write('\r');
        await sleep(50);
        await conn.write(`\n${request('GET', '/', undefined)}`);
        assert.equal((await conn.readFinal()).status, 200);
      },
    );
  },
);

// ---------------------------------------------------------------------------------------------
// 6. pipelining

async function pipelined(mode: 'async' | 'sync' | 'mixed', seed: number): Promise<void> {
  const rand = prng(seed);
  let inHandler = 0;
  let maxInHandler = 0;
  const order: string[] = [];
  await withServer(
    (req, res) => {
      order.push(req.url);
      inHandler++;
      maxInHandler = Math.max(maxInHandler, inHandler);
      const answer = (): void => {
        inHandler--;
        text(res, 200, `${req.method} ${req.url} ${req.body.toString()}`);
      };
      const sync = mode === 'sync' || (mode === 'mixed' && rand() < 0.5);
      if (sync) answer();
      else setTimeout(answer, Math.floor(rand() * 15));
    },
    {},
    async (c) => {
      const conn = await c.open();
      let wire = '';
      const expected: string[] = [];
      for (let i = 0; i < 50; i++) {
        if (i % 3 === 0) {
          wire += request('POST', `/r${i}`, `body-${i}`);
          expected.push(`POST /r${i} body-${i}`);
        } else {
          wire += request('GET', `/r${i}`, undefined);
          expected.push(`GET /r${i} `);
        }
      }
      await conn.write(wire);
      for (let i = 0; i < 50; i++) {
        const res = await conn.readFinal();
        assert.equal(res.status, 200);
        assert.equal(res.body.toString(), expected[i], `answer ${i} out of order`);
      }
      assert.equal(maxInHandler, 1, 'two requests were with the handler at once');
      assert.equal(order.length, 50);
      assert.equal(await conn.waitData(100), false);
      assert.equal(conn.peerEnded, false);
    },
  );
}

test('6a. 50 pipelined requests in one write, answered at random delays, come back in order', () => pipelined('async', 6));
test('6b. 50 pipelined requests answered synchronously come back in order', () => pipelined('sync', 66));
test('6c. 50 pipelined requests, some answered synchronously and some later, come back in order', () => pipelined('mixed', 666));

// ---------------------------------------------------------------------------------------------
// 7. pipelined bytes while a request is being handled

test('7. pipelined bytes beyond maxHeadBytes during a slow answer pause reading, then are all processed', async () => {
  const N = 256;
  const BODY = 64 * 1024;
  let release: (() => void) | undefined;
  const seen: string[] = [];
  await withServer(
    (req, res) => {
      seen.push(req.url);
      if (req.url === '/hold') release = () => text(res, 200, 'held');
      else text(res, 200, `${req.url} ${req.body.length} ${req.body[0] ?? '-'} ${req.body[req.body.length - 1] ?? '-'}`);
    },
    { maxHeadBytes: 4096 },
    async (c) => {
      const conn = await c.open();
      const parts: Buffer[] = [Buffer.from(request('GET', '/hold', undefined))];
      for (let i = 0; i < N; i++) {
        parts.push(Buffer.from(`POST /p${i} HTTP/1.1\r\nHost: a\r\nContent-Length: ${BODY}\r\n\r\n`), Buffer.alloc(BODY, i & 0xff));
      }
      parts.push(Buffer.from(request('GET', '/last', undefined)));
      const wire = Buffer.concat(parts);
      // not awaited: the server is expected to stop taking these bytes
      void conn.write(wire);
      await waitFor(() => release !== undefined, 3000, 'the held request');
      await waitFor(() => c.serverSockets.length === 1, 1000, 'the server socket');
      const sock = c.serverSockets[0]!;
      await sleep(300);
      const read1 = sock.bytesRead;
      await sleep(300);
      const read2 = sock.bytesRead;
      assert.equal(read2, read1, 'the server kept reading while its request was with the handler');
      assert.ok(read2 < 1024 * 1024, `the server read ${read2} of ${wire.length} bytes while the handler held its request`);
      assert.ok(conn.socket.writableLength > 0, 'the client could hand all its bytes to the kernel');
      assert.deepEqual(seen, ['/hold']);

      release!();
      const first = await conn.readFinal();
      assert.equal(first.body.toString(), 'held');
      for (let i = 0; i < N; i++) {
        const res = await conn.readFinal({ timeoutMs: 5000 });
        assert.equal(res.body.toString(), `/p${i} ${BODY} ${i & 0xff} ${i & 0xff}`);
      }
      assert.equal((await conn.readFinal()).body.toString(), '/last 0 - -');
      assert.equal(sock.bytesRead, wire.length);
      assert.equal(seen.length, N + 2);
    },
  );
});

// ---------------------------------------------------------------------------------------------
// 8. close() and connections

test('8. connections counts open connections; close() drops them all and resolves', async () => {
  const held: H1Response[] = [];
  let aborted = 0;
  await withServer(
    (req, res) => {
      if (req.url === '/hold') {
        held.push(res);
        res.onclose = () => aborted++;
      } else text(res, 200, 'ok');
    },
    {},
    async (c) => {
      assert.equal(c.srv.connections, 0);
      const idle = await c.open();
      await idle.write(request('GET', '/', undefined));
      assert.equal((await idle.readFinal()).status, 200);
      const partial = await c.open();
      await partial.write('GET / HTTP/1.1\r\nHo');
      const handling = await c.open();
      await handling.write(request('GET', '/hold', undefined));
      const silent = await c.open();
      const gone = await c.open();
      await waitFor(() => c.srv.connections === 5 && held.length === 1, 2000, 'five connections');
      gone.close();
      await waitFor(() => c.srv.connections === 4, 2000, 'a closed connection to be forgotten');

      let closed = false;
      await Promise.race([c.srv.close().then(() => (closed = true)), sleep(3000)]);
      assert.ok(closed, 'close() did not resolve');
      assert.equal(c.srv.connections, 0);
      for (const conn of [idle, partial, handling, silent]) assert.equal(await conn.waitEnded(2000), true);
      assert.equal(aborted, 1);
      assert.equal(held[0]!.aborted, true);
      await assert.rejects(RawConn.open(c.port), /ECONNREFUSED/);
    },
  );
});

// ---------------------------------------------------------------------------------------------
// 9. fuzz

const TEMPLATES: string[] = [
  'GET /v1/models HTTP/1.1\r\nHost: a\r\nAccept: */*\r\n\r\n',
  'POST /v1/completions HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: 26\r\n\r\n{"model":"m","prompt":"x"}',
  'POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n3;e=1\r\nabc\r\n0\r\nX-T: v\r\n\r\n',
  'GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n',
  'POST /e HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\nbody',
  'GET http://h.example/abs?q=1 HTTP/1.1\r\nHost: h.example\r\n\r\n',
  'OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n',
  'DELETE /x?y=%20 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n',
  'GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n',
  '\r\nPOST /big HTTP/1.1\r\nHost: a\r\nContent-Length: 300\r\n\r\n' + 'z'.repeat(300),
  // valid requests the server itself refuses, so corruptions start near those paths too
  'GET / HTTP/1.2\r\nHost: a\r\n\r\n',
  'POST /g HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n',
  `GET / HTTP/1.1\r\nHost: a\r\nX-Long: ${'l'.repeat(600)}\r\n\r\n`,
];
const INTERESTING = [0x00, 0x0d, 0x0a, 0x20, 0x3a, 0x09, 0x7f, 0xff, 0x30, 0x66, 0x3b, 0x2c, 0x2f, 0x41];

function fuzzCase(rand: () => number): { bytes: Buffer; how: 'end' | 'destroy' } {
  const pick = <T>(xs: T[]): T => xs[Math.floor(rand() * xs.length)]!;
  const kind = rand();
  if (kind < 0.3) {
    // random bytes, biased to the ones a parser cares about
    const n = randInt(rand, 1, 800);
    const b = Buffer.allocUnsafe(n);
    for (let i = 0; i < n; i++) b[i] = rand() < 0.5 ? pick(INTERESTING) : rand() < 0.5 ? 0x61 + randInt(rand, 0, 25) : randInt(rand, 0, 255);
    // half end like a head, so the parser judges them instead of waiting for more
    return { bytes: rand() < 0.5 ? Buffer.concat([b, Buffer.from('\r\n\r\n')]) : b, how: 'end' };
  }
  const valid = Buffer.from(pick(TEMPLATES), 'latin1');
  if (kind < 0.7) {
    // valid, then corrupted from a random offset
    let b = Buffer.from(valid);
    const edits = randInt(rand, 1, 3);
    for (let e = 0; e < edits; e++) {
      const at = randInt(rand, 0, b.length - 1);
      const op = rand();
      const byte = rand() < 0.6 ? pick(INTERESTING) : randInt(rand, 0, 255);
      if (op < 0.4) b[at] = byte;
      else if (op < 0.6) b = Buffer.concat([b.subarray(0, at), Buffer.from([byte]), b.subarray(at)]);
      else if (op < 0.8) b = Buffer.concat([b.subarray(0, at), b.subarray(at + 1)]);
      else b = Buffer.concat([b.subarray(0, at), randomBuffer(rand, randInt(rand, 1, 40))]);
      if (b.length === 0) b = Buffer.from([byte]);
    }
    return { bytes: b, how: 'end' };
  }
  // valid, cut at a random point, then the client goes (FIN or reset-style destroy)
  return { bytes: valid.subarray(0, randInt(rand, 1, valid.length - 1)), how: rand() < 0.5 ? 'end' : 'destroy' };
}

const SERVER_ERRORS = new Set([400, 408, 413, 417, 431, 501, 505]);

test('9. fuzz: 300 malformed, corrupted or cut requests never break the server', async (t) => {
  const rand = prng(9);
  const cases = Array.from({ length: 300 }, () => fuzzCase(rand));
  const statuses = new Map<number, number>();
  await withServer(
    (req, res) => {
      if (req.bodyTooLarge) return text(res, 413, 'too large');
      res.writeHead(200, { 'content-length': req.method === 'HEAD' ? 0 : 2 });
      res.end('ok');
    },
    { maxHeadBytes: 512, maxBodyBytes: 256 },
    async (c) => {
      const runOne = async (i: number): Promise<void> => {
        const { bytes, how } = cases[i]!;
        const conn = await c.open();
        try {
          await conn.write(bytes);
          if (how === 'end') conn.socket.end();
          else {
            conn.close();
            return;
          }
          assert.equal(await conn.waitEnded(3000), true, `case ${i}: connection never ended; sent ${JSON.stringify(bytes.toString('latin1').slice(0, 200))}`);
          let serverError = false;
          while (conn.pending.length > 0) {
            assert.ok(!serverError, `case ${i}: bytes after the server's error answer`);
            let res: RawResponse;
            try {
              res = await conn.read({ timeoutMs: 500 });
            } catch (e) {
              throw new Error(`case ${i}: unreadable answer to ${JSON.stringify(bytes.toString('latin1').slice(0, 200))}: ${(e as Error).message}`);
            }
            statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
            assert.ok(res.status === 100 || res.status === 200 || SERVER_ERRORS.has(res.status), `case ${i}: status ${res.status}`);
            if (SERVER_ERRORS.has(res.status) && res.status !== 413) {
              serverError = true;
              assert.ok(connectionTokens(res).includes('close'), `case ${i}: ${res.status} without connection: close`);
            }
          }
        } finally {
          conn.close();
        }
      };
      for (let i = 0; i < cases.length; i += 10) {
        await Promise.all(Array.from({ length: Math.min(10, cases.length - i) }, (_, j) => runOne(i + j)));
      }
      t.diagnostic(`answer statuses: ${JSON.stringify([...statuses].sort((a, b) => a[0] - b[0]))}`);
      await waitFor(() => c.srv.connections === 0, 3000, 'every fuzz connection to be forgotten');
      assert.deepEqual(c.errors, []);
      // the fuzz reached the parser's error paths, not just the handler
      for (const s of [200, 400, 413, 431]) assert.ok((statuses.get(s) ?? 0) >= 3, `too few ${s}s: ${JSON.stringify([...statuses])}`);

      const conn = await c.open();
      await conn.write(request('POST', '/after', 'still fine'));
      const res = await conn.readFinal();
      assert.equal(res.status, 200);
      assert.equal(res.body.toString(), 'ok');
    },
  );
});

// ---------------------------------------------------------------------------------------------
// answers still being flushed when the server decides a connection is done

test(
  '10a. a keep-alive connection whose answer is still being sent is not idle',
  async () => {
    const SIZE = 16 * 1024 * 1024;
    await withServer(
      (_req, res) => text(res, 200, Buffer.alloc(SIZE, 'b')),
      SHORT,
      async (c) => {
        const s = await rawSocket(c.port);
        try {
          s.write('GET /big HTTP/1.1\r\nHost: a\r\n\r\n');
          // the client reads all along, just slowly at first (about 64 KiB every 200 ms for 4 s)
          const got = await slowThenFastRead(s, 200, 4000, 8000, SIZE + 100);
          assert.ok(got.bytes > SIZE, `received ${got.bytes} bytes of a ${SIZE}-byte body (closed: ${got.closed})`);
        } finally {
          s.destroy();
        }
      },
    );
  },
);

test(
  '10b. a connection: close answer is not cut 5 s after end() while the client is still reading it',
  async () => {
    const SIZE = 16 * 1024 * 1024;
    await withServer(
      (_req, res) => text(res, 200, Buffer.alloc(SIZE, 'c')),
      {},
      async (c) => {
        const s = await rawSocket(c.port);
        try {
          s.write('GET /big HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n');
          const got = await slowThenFastRead(s, 200, 6000, 9000, SIZE + 100);
          assert.ok(got.bytes > SIZE, `received ${got.bytes} bytes of a ${SIZE}-byte body (closed: ${got.closed})`);
        } finally {
          s.destroy();
        }
      },
    );
  },
);

test('10c. a client that stops reading is dropped after sendTimeoutMs; onclose tells a streaming handler', async () => {
  let closed = 0;
  const handler: H1Handler = (_req, res) => {
    res.onclose = () => closed++;
    res.writeHead(200, { 'content-type': 'application/octet-stream' });
    // keep writing while the socket takes it: the stall comes from the client, not the handler
    const chunk = Buffer.alloc(256 * 1024, 'c');
    const pump = (): void => {
      while (!res.aborted && res.write(chunk));
      if (!res.aborted) res.ondrain = pump;
    };
    pump();
  };
  await withServer(handler, { sendTimeoutMs: 1500 }, async (c) => {
    const s = connect(c.port, '127.0.0.1');
    try {
      await new Promise<void>((r) => s.once('connect', () => r()));
      s.pause(); // never reads
      s.write('GET /stream HTTP/1.1\r\nHost: a\r\n\r\n');
      await waitFor(() => c.srv.connections === 0, 8000, 'the stalled connection to be dropped');
      assert.equal(closed, 1);
    } finally {
      s.destroy();
    }
  });
});
