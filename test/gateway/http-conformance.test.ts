// Black-box HTTP/1.1 conformance of the gateway's client-facing server, driven over raw sockets so each
// case controls the exact bytes on the wire. These pin protocol semantics (status class, framing,
// connection handling, what the engine received), not node:http's wording or header order, so that a
// replacement server can be checked against them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FakeEngine, waitFor, type FakeEngineOptions } from './fake-engine.ts';
import { RawConn, connectionTokens, header, request, sleep, sseData, type RawResponse } from './raw-http.ts';
import { startGateway, type Gateway, type GatewayOptions } from '../../src/gateway/index.ts';

// decode-only routing over one fake engine: the cases are about the client-facing HTTP layer
const NEVER_SPLIT = `plugins:
- {type: token-producer, parameters: {backend: estimate}}
- type: decode-filter
- type: active-request-scorer
`;

interface Ctx {
  gw: Gateway;
  engine: FakeEngine;
  logs: string[];
  /** a raw connection to the gateway, closed when the test ends */
  open(): Promise<RawConn>;
}

async function withGateway(fn: (c: Ctx) => Promise<void>, opts: Partial<GatewayOptions> = {}, engineOpts: FakeEngineOptions = {}): Promise<void> {
  const engine = await new FakeEngine({ role: 'decode', ...engineOpts }).start();
  const conns: RawConn[] = [];
  const logs: string[] = [];
  let gw: Gateway | undefined;
  try {
    gw = await startGateway({
      port: 0,
      log: (l) => logs.push(l),
      pool: { healthIntervalMs: 100, scrapeIntervalMs: 50 },
      endpoints: [{ url: engine.url, role: 'decode' }],
      configText: NEVER_SPLIT,
      ...opts,
    });
    const g = gw;
    await waitFor(() => g.pool.all().length === 1 && g.pool.all().every((e) => e.healthy) && g.pool.knownModels().includes('fake'), 5000, 'engine healthy');
    await fn({
      gw: g,
      engine,
      logs,
      open: async () => {
        const c = await RawConn.open(g.port);
        conns.push(c);
        return c;
      },
    });
    assert.deepEqual(logs.filter((l) => l.includes('internal error')), [], 'the gateway logged an internal error');
  } finally {
    for (const c of conns) c.close();
    if (gw) await gw.close();
    await engine.stop();
  }
}

function completionBody(prompt = 'hi', extra: Record<string, unknown> = {}): string {
  return JSON.stringify({ model: 'fake', prompt, max_tokens: 3, ...extra });
}

function completion(id?: string, extra: { headers?: [string, string][]; body?: Record<string, unknown>; path?: string; version?: string } = {}): string {
  const h: [string, string][] = id ? [['X-Request-Id', id]] : [];
  return request('POST', extra.path ?? '/v1/completions', completionBody('hi', extra.body), [...h, ...(extra.headers ?? [])], extra.version);
}

function json(res: RawResponse): Record<string, unknown> {
  return JSON.parse(res.body.toString('utf8')) as Record<string, unknown>;
}

/** A non-streaming completion answered by the fake engine: 200, content-length framing, its JSON. */
function assertCompletion(res: RawResponse, id?: string): void {
  assert.equal(res.status, 200, `expected 200, got ${res.status}: ${res.body.toString('utf8').slice(0, 300)}`);
  assert.equal(res.framing, 'length');
  assert.match(header(res, 'content-type') ?? '', /^application\/json/);
  const j = json(res) as { object: string; id: string; choices: { text: string }[] };
  assert.equal(j.object, 'text_completion');
  assert.equal(j.choices[0]!.text, 'hello world');
  if (id) {
    assert.equal(header(res, 'x-request-id'), id);
    // the engine builds its answer's id from the x-request-id it received
    assert.equal(j.id, `cmpl-${id}`);
  }
}

function assertOpenAIError(res: RawResponse): void {
  assert.match(header(res, 'content-type') ?? '', /^application\/json/);
  const j = json(res) as { error?: Record<string, unknown> };
  assert.ok(j.error && typeof j.error === 'object', 'an OpenAI-shaped error body');
  assert.equal(typeof j.error.message, 'string');
  assert.equal(typeof j.error.type, 'string');
  assert.ok('code' in j.error && 'param' in j.error);
}

/** The gateway still serves: a normal completion on a fresh connection. */
async function assertServes(c: Ctx, id = `probe-${Math.random().toString(36).slice(2)}`): Promise<void> {
  const conn = await c.open();
  try {
    await conn.write(completion(id));
    assertCompletion(await conn.readFinal(), id);
  } finally {
    conn.close();
  }
}

function isClientError(status: number): boolean {
  return status >= 400 && status < 500;
}

test('1. keep-alive: three requests on one connection, answered in order, connection stays open', async () => {
  await withGateway(async (c) => {
    const conn = await c.open();
    for (const id of ['ka-1', 'ka-2', 'ka-3']) {
      await conn.write(completion(id));
      const res = await conn.readFinal();
      assertCompletion(res, id);
      assert.equal(res.version, 'HTTP/1.1');
      assert.ok(!connectionTokens(res).includes('close'), 'no connection: close on a keep-alive exchange');
    }
    assert.equal(conn.peerEnded, false);
    // nothing stray after the three answers, and the connection is not closed shortly after
    assert.equal(await conn.waitData(100), false);
    assert.equal(conn.peerEnded, false);
    assert.equal(c.engine.inference().length, 3);
  });
});

test('2. pipelining: requests in one write are answered in order, each with its own x-request-id', async () => {
  // the first answer is a slow stream, so a server that answered in completion order would put the
  // second (fast) answer first
  await withGateway(async (c) => {
    const conn = await c.open();
    await conn.write(completion('pipe-1') + completion('pipe-2'));
    assertCompletion(await conn.readFinal(), 'pipe-1');
    assertCompletion(await conn.readFinal(), 'pipe-2');

    await conn.write(completion('pipe-3', { body: { stream: true } }) + completion('pipe-4') + completion('pipe-5'));
    const first = await conn.readFinal();
    assert.equal(first.status, 200);
    assert.equal(header(first, 'x-request-id'), 'pipe-3');
    assert.equal(sseData(first.body.toString('utf8')).at(-1), '[DONE]');
    assertCompletion(await conn.readFinal(), 'pipe-4');
    assertCompletion(await conn.readFinal(), 'pipe-5');
    assert.equal(conn.peerEnded, false);
  }, {}, { chunks: 4, chunkDelayMs: 60 });
});

test('3. a request split into tiny writes still works', async () => {
  await withGateway(async (c) => {
    const conn = await c.open();
    await conn.writeSlowly(completion('tiny-1'), 1, 1);
    assertCompletion(await conn.readFinal(), 'tiny-1');
    // odd-sized pieces, so splits land inside CRLFs, header names and the body
    await conn.writeSlowly(completion('tiny-2'), 7, 2);
    assertCompletion(await conn.readFinal(), 'tiny-2');
    assert.equal(c.engine.inference().at(-1)!.body.prompt, 'hi');
  });
});

test('4. chunked request body (extension, trailer) reaches the engine de-chunked', async () => {
  await withGateway(async (c) => {
    const conn = await c.open();
    const body = completionBody('chunked prompt text');
    const parts = [body.slice(0, 5), body.slice(5, 17), body.slice(17, 18), body.slice(18)];
    let wire = 'POST /v1/completions HTTP/1.1\r\nHost: gateway.test\r\nX-Request-Id: chunk-1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n';
    parts.forEach((p, i) => {
      wire += `${Buffer.byteLength(p).toString(16)}${i === 1 ? ';foo=bar' : ''}\r\n${p}\r\n`;
    });
    wire += '0\r\nX-Checksum: abc123\r\n\r\n';
    await conn.write(wire);
    assertCompletion(await conn.readFinal(), 'chunk-1');
    const rec = c.engine.inference().at(-1)!;
    assert.deepEqual(rec.body, JSON.parse(body));
    assert.equal(rec.headers['transfer-encoding'], undefined);
    assert.equal(rec.headers['content-length'], String(Buffer.byteLength(body)));

    // uppercase hex sizes and a chunked body written in pieces; the connection is still in sync after
    const body2 = completionBody('x'.repeat(300));
    const wire2 = `POST /v1/completions HTTP/1.1\r\nHost: gateway.test\r\nX-Request-Id: chunk-2\r\nTransfer-Encoding: chunked\r\n\r\n${Buffer.byteLength(body2).toString(16).toUpperCase()}\r\n${body2}\r\n0\r\n\r\n`;
    await conn.writeSlowly(wire2, 50, 1);
    assertCompletion(await conn.readFinal(), 'chunk-2');
    assert.deepEqual(c.engine.inference().at(-1)!.body, JSON.parse(body2));
  });
});

test('5. Expect: 100-continue gets an interim 100 before the body is sent', async () => {
  await withGateway(async (c) => {
    const conn = await c.open();
    const body = completionBody('continue me');
    await conn.write(`POST /v1/completions HTTP/1.1\r\nHost: gateway.test\r\nX-Request-Id: cont-1\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nExpect: 100-continue\r\n\r\n`);
    const interim = await conn.read({ timeoutMs: 3000 });
    assert.equal(interim.status, 100);
    assert.equal(interim.version, 'HTTP/1.1');
    await conn.write(body);
    assertCompletion(await conn.readFinal(), 'cont-1');
    const rec = c.engine.inference().at(-1)!;
    assert.equal(rec.body.prompt, 'continue me');
    // the expectation is between the client and the gateway
    assert.equal(rec.headers.expect, undefined);
    // and the connection carries on normally
    await conn.write(completion('cont-2'));
    assertCompletion(await conn.readFinal(), 'cont-2');
  });
});

test('6. HTTP/1.0: closed after the answer by default, kept open with Connection: keep-alive', async () => {
  await withGateway(async (c) => {
    const a = await c.open();
    await a.write(completion('h10-1', { version: 'HTTP/1.0' }));
    const r1 = await a.readFinal();
    assertCompletion(r1, 'h10-1');
    // the server may answer as HTTP/1.0 or HTTP/1.1 (RFC 9110 §2.5); node answers HTTP/1.1
    assert.match(r1.version, /^HTTP\/1\.[01]$/);
    assert.ok(await a.waitEnded(3000), 'the HTTP/1.0 connection is closed after the answer');

    const b = await c.open();
    await b.write(completion('h10-2', { version: 'HTTP/1.0', headers: [['Connection', 'keep-alive']] }));
    const r2 = await b.readFinal();
    assertCompletion(r2, 'h10-2');
    // keep-alive is not HTTP/1.0's default, so the server has to say it kept the connection
    assert.ok(connectionTokens(r2).includes('keep-alive'), `connection: ${header(r2, 'connection')}`);
    assert.equal(b.peerEnded, false);
    await b.write(completion('h10-3', { version: 'HTTP/1.0', headers: [['Connection', 'keep-alive']] }));
    assertCompletion(await b.readFinal(), 'h10-3');

    // an HTTP/1.0 client cannot read chunked framing: a stream ends at close (or has a length)
    const s = await c.open();
    await s.write(completion('h10-4', { version: 'HTTP/1.0', body: { stream: true } }));
    const r3 = await s.readFinal();
    assert.equal(r3.status, 200);
    assert.notEqual(r3.framing, 'chunked');
    assert.equal(header(r3, 'transfer-encoding'), undefined);
    assert.equal(sseData(r3.body.toString('utf8')).at(-1), '[DONE]');
    assert.ok(await s.waitEnded(3000));
  });
});

test('7. Connection: close on HTTP/1.1 is answered with connection: close, then closed', async () => {
  await withGateway(async (c) => {
    const conn = await c.open();
    await conn.write(completion('close-1', { headers: [['Connection', 'close']] }));
    const res = await conn.readFinal();
    assertCompletion(res, 'close-1');
    assert.ok(connectionTokens(res).includes('close'), `connection: ${header(res, 'connection')}`);
    assert.ok(await conn.waitEnded(3000), 'the server closes after a Connection: close exchange');
    assert.equal(conn.pending.length, 0, 'nothing after the answer');
    assert.equal(c.engine.inference().length, 1);
  });
});

// RFC 9112 §9.6: the server answers the request that carried `close`, then processes nothing more.
test('7b. a request pipelined after a Connection: close one is not answered', async () => {
  await withGateway(async (c) => {
    const conn = await c.open();
    await conn.write(completion('close-a', { headers: [['Connection', 'close']] }) + completion('close-b'));
    assertCompletion(await conn.readFinal(), 'close-a');
    assert.ok(await conn.waitEnded(3000));
    assert.equal(conn.pending.length, 0, 'no second answer after connection: close');
    // the server must not act on it either (RFC 9112 §9.6: it stops reading after close)
    await sleep(100);
    assert.deepEqual(c.engine.inference().map((r) => r.headers['x-request-id']), ['close-a']);
  });
});

test('8. a streamed answer is chunked SSE ending in [DONE], and the connection is reused after it', async () => {
  await withGateway(async (c) => {
    const conn = await c.open();
    await conn.write(completion('sse-1', { body: { stream: true } }));
    const res = await conn.readFinal();
    assert.equal(res.status, 200);
    assert.equal(res.version, 'HTTP/1.1');
    assert.match(header(res, 'transfer-encoding') ?? '', /chunked/i);
    assert.equal(header(res, 'content-length'), undefined);
    assert.match(header(res, 'content-type') ?? '', /^text\/event-stream/);
    assert.equal(header(res, 'x-request-id'), 'sse-1');
    // the parser checked every size line and CRLF; the body ended with the last chunk and an empty trailer
    assert.equal(res.framing, 'chunked');
    assert.equal(res.chunkLines.at(-1), '0');
    assert.equal(res.trailers.size, 0);
    assert.ok(res.chunkLines.length >= 2, 'relayed in chunks');
    const events = sseData(res.body.toString('utf8'));
    assert.equal(events.at(-1), '[DONE]');
    const texts = events.slice(0, -1).map((e) => (JSON.parse(e) as { choices: { text: string }[] }).choices[0]!.text);
    assert.deepEqual(texts, ['t0 ', 't1 ', 't2 ']);
    assert.equal(conn.pending.length, 0, 'nothing after 0\\r\\n\\r\\n');

    await conn.write(completion('sse-2'));
    assertCompletion(await conn.readFinal(), 'sse-2');
    await conn.write(completion('sse-3', { body: { stream: true } }));
    const again = await conn.readFinal();
    assert.equal(again.framing, 'chunked');
    assert.equal(sseData(again.body.toString('utf8')).at(-1), '[DONE]');
  });
});

const MALFORMED: { name: string; wire: () => string; status?: (s: number) => boolean }[] = [
  { name: 'garbage request line', wire: () => 'THIS IS NOT HTTP AT ALL\r\n\r\n' },
  { name: 'header line without a colon', wire: () => `POST /v1/completions HTTP/1.1\r\nHost: x\r\nX-No-Colon value\r\nContent-Length: ${completionBody().length}\r\n\r\n${completionBody()}` },
  // RFC 9112 §5.1: whitespace between field name and colon MUST be rejected with 400
  { name: 'space before the colon', wire: () => `POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length : ${completionBody().length}\r\n\r\n${completionBody()}` },
  {
    name: 'both Content-Length and Transfer-Encoding',
    wire: () => {
      const b = completionBody();
      return `POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n${b.length.toString(16)}\r\n${b}\r\n0\r\n\r\n`;
    },
  },
  { name: 'two different Content-Length values', wire: () => `POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: ${completionBody().length}\r\nContent-Length: 5\r\n\r\n${completionBody()}` },
  { name: 'non-numeric Content-Length', wire: () => `POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 12abc\r\n\r\n${completionBody()}` },
  { name: 'negative Content-Length', wire: () => `POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n${completionBody()}` },
  { name: 'unknown Transfer-Encoding', wire: () => `POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked, identity\r\n\r\n5\r\nhello\r\n0\r\n\r\n` },
  { name: 'bad chunk size', wire: () => `POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n` },
  { name: 'NUL in a header value', wire: () => `POST /v1/completions HTTP/1.1\r\nHost: x\r\nX-Nul: a\0b\r\nContent-Length: ${completionBody().length}\r\n\r\n${completionBody()}` },
  // RFC 9112 §3.2: an HTTP/1.1 request without Host MUST get 400
  { name: 'HTTP/1.1 request without Host', wire: () => `POST /v1/completions HTTP/1.1\r\nContent-Length: ${completionBody().length}\r\n\r\n${completionBody()}` },
  // 505 HTTP Version Not Supported (node's answer) is as good as a 4xx here
  { name: 'HTTP/2 preface on an HTTP/1.1 port', wire: () => 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', status: (s) => isClientError(s) || s === 505 },
];

test('9. malformed requests get a 4xx, the connection closes, and the gateway keeps serving', async () => {
  await withGateway(async (c) => {
    for (const m of MALFORMED) {
      const conn = await c.open();
      await conn.write(m.wire());
      let res: RawResponse;
      try {
        res = await conn.readFinal({ timeoutMs: 3000 });
      } catch (err) {
        throw new Error(`${m.name}: no answer (${(err as Error).message})`);
      }
      assert.ok((m.status ?? isClientError)(res.status), `${m.name}: expected a 4xx, got ${res.status}`);
      // after a framing error the rest of the stream cannot be trusted (RFC 9112 §6.3, §11.2)
      assert.ok(await conn.waitEnded(3000), `${m.name}: connection closed after the 4xx`);
      conn.close();
      assert.equal(c.engine.inference().length, 0, `${m.name}: nothing reached the engine`);
      await assertServes(c);
      c.engine.requests.length = 0;
    }
  });
});

test('9b. obs-fold is rejected or unfolded, never forwarded with its line break', async () => {
  await withGateway(async (c) => {
    const conn = await c.open();
    await conn.write(`POST /v1/completions HTTP/1.1\r\nHost: x\r\nX-Request-Id: fold-1\r\nX-Folded: first\r\n  second\r\nContent-Type: application/json\r\nContent-Length: ${completionBody().length}\r\n\r\n${completionBody()}`);
    const res = await conn.readFinal({ timeoutMs: 3000 });
    // RFC 9112 §5.2: a server MUST either reject obs-fold with 400 or replace each fold with SP
    if (isClientError(res.status)) {
      assert.equal(c.engine.inference().length, 0);
      assert.ok(await conn.waitEnded(3000));
    } else {
      assertCompletion(res, 'fold-1');
      const v = c.engine.inference().at(-1)!.headers['x-folded'];
      assert.equal(typeof v, 'string');
      assert.doesNotMatch(v as string, /[\r\n]/);
      assert.match(v as string, /^first\s+second$/);
    }
    await assertServes(c);
  });
});

test('9c. a bare LF inside the head is rejected or ends the line, never forwarded inside a header', async () => {
  await withGateway(async (c) => {
    const conn = await c.open();
    await conn.write(`POST /v1/completions HTTP/1.1\r\nHost: x\r\nX-Request-Id: lf-1\r\nX-Foo: a\nX-Injected: b\r\nContent-Type: application/json\r\nContent-Length: ${completionBody().length}\r\n\r\n${completionBody()}`);
    const res = await conn.readFinal({ timeoutMs: 3000 });
    if (isClientError(res.status)) {
      assert.equal(c.engine.inference().length, 0);
      assert.ok(await conn.waitEnded(3000));
    } else {
      // treated as a line end (RFC 9112 §2.2 allows a recipient to): two separate fields
      assertCompletion(res, 'lf-1');
      const h = c.engine.inference().at(-1)!.headers;
      assert.equal(h['x-foo'], 'a');
      for (const [k, v] of Object.entries(h)) assert.doesNotMatch(`${k}: ${String(v)}`, /[\r\n]/, `header ${k} carries a line break`);
    }
    await assertServes(c);
  });
});

test('10. an oversized head gets 431 (or 400) and the connection is closed', async () => {
  await withGateway(async (c) => {
    const conn = await c.open();
    let head = 'POST /v1/completions HTTP/1.1\r\nHost: x\r\n';
    for (let i = 0; head.length < 100 * 1024; i++) head += `X-Filler-${i}: ${'v'.repeat(200)}\r\n`;
    const wire = `${head}Content-Length: ${completionBody().length}\r\n\r\n${completionBody()}`;
    // written in pieces, stopping once the server answered: a server closing with our unread bytes
    // in its buffer resets the connection, which could destroy its answer before we read it
    for (let i = 0; i < wire.length && conn.pending.length === 0 && !conn.peerEnded; i += 4096) {
      await conn.write(wire.slice(i, i + 4096));
      await sleep(1);
    }
    const res = await conn.readFinal({ timeoutMs: 3000 });
    assert.ok(res.status === 431 || res.status === 400, `expected 431 or 400, got ${res.status}`);
    assert.ok(await conn.waitEnded(3000), 'closed after the oversized head');
    assert.equal(c.engine.inference().length, 0);
    await assertServes(c);
  });
});

test('11. a body over maxBodyBytes gets 413 with an OpenAI error; the gateway keeps serving', async () => {
  await withGateway(async (c) => {
    const big = completionBody('x'.repeat(2000));
    const a = await c.open();
    await a.write(request('POST', '/v1/completions', big, [['X-Request-Id', 'big-1']]));
    const r1 = await a.readFinal();
    assert.equal(r1.status, 413);
    assertOpenAIError(r1);
    // whether the connection stays open after a 413 is the server's choice; if it does, it is in sync
    if (!(await a.waitEnded(200))) {
      await a.write(completion('big-after'));
      assertCompletion(await a.readFinal(), 'big-after');
    }

    // the same, with no length declared up front
    const b = await c.open();
    await b.write(`POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n${Buffer.byteLength(big).toString(16)}\r\n${big}\r\n0\r\n\r\n`);
    const r2 = await b.readFinal();
    assert.equal(r2.status, 413);
    assertOpenAIError(r2);

    assert.equal(c.engine.inference().filter((r) => typeof r.body.prompt === 'string' && r.body.prompt.length > 1000).length, 0);
    await assertServes(c);
  }, { maxBodyBytes: 1000 });
});

test('12. a client that leaves mid-body: no crash, nothing reaches the engine, the gateway keeps serving', async () => {
  // maxInflight 1: if the abandoned request kept its slot, the next one would get 429
  await withGateway(async (c) => {
    const body = completionBody('y'.repeat(200));
    const a = await c.open();
    await a.write(`POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body.slice(0, 100)}`);
    await sleep(50);
    a.close();

    const b = await c.open();
    await b.write(`POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n${Buffer.byteLength(body).toString(16)}\r\n${body.slice(0, 100)}`);
    await sleep(50);
    b.close();

    let last = 0;
    await waitFor(async () => {
      const conn = await c.open();
      try {
        await conn.write(completion('after-abandon'));
        const r = await conn.readFinal();
        last = r.status;
        return r.status === 200;
      } finally {
        conn.close();
      }
    }, 3000, 'a request to be served after the abandoned ones');
    assert.equal(last, 200);
    assert.deepEqual(c.engine.inference().map((r) => r.headers['x-request-id']), ['after-abandon']);
  }, { maxInflight: 1 });
});

test('13. routes: unknown → 404 JSON, /health, /v1/models, HEAD and OPTIONS on an inference route', async () => {
  await withGateway(async (c) => {
    const conn = await c.open();
    await conn.write(request('GET', '/no/such/route', undefined));
    const nf = await conn.readFinal();
    assert.equal(nf.status, 404);
    assertOpenAIError(nf);

    await conn.write(request('GET', '/health', undefined));
    const h = await conn.readFinal();
    assert.equal(h.status, 200);

    await conn.write(request('GET', '/v1/models', undefined));
    const m = await conn.readFinal();
    assert.equal(m.status, 200);
    assert.match(header(m, 'content-type') ?? '', /^application\/json/);
    assert.deepEqual((json(m) as { data: { id: string }[] }).data.map((d) => d.id), ['fake']);

    // a GET on an inference route is not a completion
    await conn.write(request('GET', '/v1/completions', undefined));
    const g = await conn.readFinal();
    assert.ok(g.status === 404 || g.status === 405, `GET /v1/completions: ${g.status}`);

    for (const method of ['HEAD', 'OPTIONS']) {
      await conn.write(request(method, '/v1/completions', undefined));
      const r = await conn.readFinal({ method, timeoutMs: 3000 });
      assert.ok(r.status === 404 || r.status === 405, `${method}: ${r.status}`);
      if (method === 'HEAD') assert.equal(r.body.length, 0);
      else if (r.body.length) assertOpenAIError(r);
    }
    // a HEAD answer carrying body bytes would desynchronize this next exchange
    await conn.write(request('GET', '/health', undefined));
    assert.equal((await conn.readFinal()).status, 200);
    assert.equal(c.engine.inference().length, 0);
  });
});

test('14. 64 connections × 5 keep-alive requests, all answered', async () => {
  await withGateway(async (c) => {
    const conns = await Promise.all(Array.from({ length: 64 }, () => c.open()));
    let ok = 0;
    await Promise.all(
      conns.map(async (conn, i) => {
        for (let j = 0; j < 5; j++) {
          const id = `many-${i}-${j}`;
          await conn.write(completion(id));
          const r = await conn.readFinal({ timeoutMs: 8000 });
          assertCompletion(r, id);
          ok++;
        }
      }),
    );
    assert.equal(ok, 320);
    assert.equal(c.engine.inference().length, 320);
    assert.ok(conns.every((x) => !x.peerEnded));
  });
});

test('15. a query string on an inference route is still that route', async () => {
  await withGateway(async (c) => {
    const conn = await c.open();
    await conn.write(completion('q-1', { path: '/v1/completions?x=1' }));
    assertCompletion(await conn.readFinal(), 'q-1');
    assert.match(c.engine.inference().at(-1)!.path, /^\/v1\/completions(\?|$)/);

    const chat = JSON.stringify({ model: 'fake', messages: [{ role: 'user', content: 'hi' }] });
    await conn.write(request('POST', '/v1/chat/completions?x=1&y=2', chat, [['X-Request-Id', 'q-2']]));
    const r = await conn.readFinal();
    assert.equal(r.status, 200);
    assert.equal((json(r) as { object: string }).object, 'chat.completion');
    assert.match(c.engine.inference().at(-1)!.path, /^\/v1\/chat\/completions(\?|$)/);
  });
});

test('16. end-to-end headers reach the engine; hop-by-hop ones do not', async () => {
  await withGateway(async (c) => {
    const conn = await c.open();
    const body = completionBody('hop');
    // Upgrade without an `upgrade` connection token is not an upgrade request, just a hop-by-hop field
    await conn.write(
      'POST /v1/completions HTTP/1.1\r\nHost: gateway.test\r\nX-Request-Id: hop-1\r\nX-Custom-Thing: v\r\n' +
        'Connection: keep-alive\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nUpgrade: h2c\r\nProxy-Connection: keep-alive\r\n' +
        `Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n${Buffer.byteLength(body).toString(16)}\r\n${body}\r\n0\r\n\r\n`,
    );
    assertCompletion(await conn.readFinal(), 'hop-1');
    const h = c.engine.inference().at(-1)!.headers;
    assert.equal(h['x-custom-thing'], 'v');
    for (const name of ['connection', 'keep-alive', 'transfer-encoding', 'te', 'upgrade', 'proxy-connection']) {
      assert.equal(h[name], undefined, `${name} was forwarded: ${String(h[name])}`);
    }
    assert.equal(h['content-length'], String(Buffer.byteLength(body)));
    // the engine sees the gateway's request id, exactly once
    assert.equal(h['x-request-id'], 'hop-1');
  });
});

test('16b. fields named in the Connection header are hop-by-hop too (RFC 9110 §7.6.1)', async () => {
  await withGateway(async (c) => {
    const conn = await c.open();
    await conn.write(completion('hop-2', { headers: [['Connection', 'keep-alive, X-Private-Hop'], ['X-Private-Hop', 'secret'], ['X-Custom-Thing', 'v']] }));
    assertCompletion(await conn.readFinal(), 'hop-2');
    const h = c.engine.inference().at(-1)!.headers;
    assert.equal(h['x-custom-thing'], 'v');
    assert.equal(h['x-private-hop'], undefined, 'a field the client listed in Connection reached the engine');
  });
});

test('17. an absolute-form request target is served as its path (RFC 9112 §3.2.2: a server MUST accept it)', async () => {
  await withGateway(async (c) => {
    const conn = await c.open();
    await conn.write(completion('abs-1', { path: 'http://gateway.test/v1/completions' }));
    assertCompletion(await conn.readFinal(), 'abs-1');
  });
});

test('18. more than one Host field is rejected with 400 (RFC 9112 §3.2)', async () => {
  await withGateway(async (c) => {
    const conn = await c.open();
    await conn.write(`POST /v1/completions HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\nContent-Type: application/json\r\nContent-Length: ${completionBody().length}\r\n\r\n${completionBody()}`);
    const res = await conn.readFinal({ timeoutMs: 3000 });
    assert.equal(res.status, 400);
    assert.equal(c.engine.inference().length, 0);
    await assertServes(c);
  });
});
