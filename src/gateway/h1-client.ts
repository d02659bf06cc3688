// The gateway's upstream HTTP/1.1 client: keep-alive connections to one engine, one request per
// connection at a time (no pipelining), the request written with one `write`, and a small response
// parser for what engines answer — content-length and chunked bodies, or a body that ends at close.
// It replaces undici on the request path because undici's per-request machinery (Request object,
// header validation tree, corked writev, its wasm parser's JS callbacks, a turn of the event loop
// before an idle socket is reused) cost more CPU than the whole relay; see docs/gateway-performance.md.
// Control-plane traffic (health, /metrics, /v1/models) stays on undici.
import { connect as netConnect, isIP, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';

/** Receives one response. Exactly one of onComplete/onError is called, and nothing after it. */
export interface ResponseHandler {
  /** status ≥ 200 (1xx answers are skipped) */
  onHeaders(status: number, contentType: string): void;
  /** a piece of the body (chunk framing removed); return false to stop reading until the request's `resume()` */
  onData(chunk: Buffer): boolean;
  onComplete(): void;
  onError(err: Error): void;
}

export class UpstreamError extends Error {
  constructor(
    message: string,
    /** UPSTREAM_CLOSED (connection closed before the answer ended), UPSTREAM_PROTOCOL (malformed answer), UPSTREAM_CONNECT_TIMEOUT */
    readonly code: 'UPSTREAM_CLOSED' | 'UPSTREAM_PROTOCOL' | 'UPSTREAM_CONNECT_TIMEOUT',
  ) {
    super(message);
    this.name = 'UpstreamError';
  }
}

export interface H1PoolOptions {
  connectTimeoutMs: number;
  /** idle connections older than this are not reused (the server's `Keep-Alive: timeout` hint, minus 1 s, lowers it) */
  keepAliveMs: number;
  /** response head (status line + headers) size limit */
  maxHeadBytes: number;
}

const DEFAULTS: H1PoolOptions = { connectTimeoutMs: 10_000, keepAliveMs: 30_000, maxHeadBytes: 64 * 1024 };

/** Request bodies up to this size are copied behind the head and sent with one write (no writev). */
const COPY_BODY_MAX = 16 * 1024;

// parser states
const HEAD = 0;
const BODY_LENGTH = 1;
const CHUNK_SIZE = 2;
const CHUNK_DATA = 3;
const CHUNK_DATA_END = 4;
const TRAILERS = 5;
const BODY_UNTIL_CLOSE = 6;
const IDLE = 7;

const CRLF = 0x0a0d; // '\r\n' read as a little-endian uint16
const EMPTY = Buffer.alloc(0);

/** One keep-alive connection; it carries one request at a time. Listeners are attached once, not per request. */
class Connection {
  readonly socket: Socket;
  /** the request in flight */
  req: RequestHandle | undefined;
  handler: ResponseHandler | undefined;
  /** served at least one answer: a failure before any byte may be a stale keep-alive race */
  reused = false;
  idleSince = 0;
  private state = IDLE;
  private head: Buffer = EMPTY;
  private remaining = 0;
  private keepAlive = true;
  private gotBytes = false;
  private connected = false;
  private dead = false;
  private connectTimer: NodeJS.Timeout | undefined;
  // kept for one retry after a stale keep-alive race
  private reqHead = '';
  private reqBody: Buffer = EMPTY;

  constructor(private readonly pool: H1Pool) {
    const o = pool.origin;
    const tls = o.protocol === 'https:';
    this.socket = tls
      ? tlsConnect({ host: pool.host, port: pool.port, servername: isIP(pool.host) ? undefined : pool.host, ALPNProtocols: ['http/1.1'] })
      : netConnect({ host: pool.host, port: pool.port });
    const s = this.socket;
    s.setNoDelay(true);
    s.setKeepAlive(true, 60_000);
    s.on(tls ? 'secureConnect' : 'connect', this.onConnect);
    s.on('data', this.onSocketData);
    s.on('end', this.onSocketEnd);
    s.on('error', this.onSocketError);
    s.on('close', this.onSocketClose);
    this.connectTimer = setTimeout(this.onConnectTimeout, pool.opts.connectTimeoutMs);
  }

  send(head: string, body: Buffer, req: RequestHandle): void {
    req.conn = this;
    this.req = req;
    this.handler = req.handler;
    this.state = HEAD;
    this.gotBytes = false;
    this.keepAlive = true;
    this.reqHead = head;
    this.reqBody = body;
    const s = this.socket;
    if (body.length <= COPY_BODY_MAX) {
      const n = head.length;
      const buf = Buffer.allocUnsafe(n + body.length);
      buf.write(head, 0, n, 'latin1');
      body.copy(buf, n);
      s.write(buf);
    } else {
      s.cork();
      s.write(head, 'latin1');
      s.write(body);
      s.uncork();
    }
  }

  /** Cancels the request in flight: the engine sees its connection close. */
  abort(req: RequestHandle, err: Error): void {
    if (this.req === req) this.fail(err, false);
  }

  resume(req: RequestHandle): void {
    if (this.req === req) this.socket.resume();
  }

  destroy(): void {
    this.dead = true;
    clearTimeout(this.connectTimer);
    this.socket.destroy();
  }

  private readonly onConnect = (): void => {
    this.connected = true;
    clearTimeout(this.connectTimer);
    this.connectTimer = undefined;
  };

  private readonly onConnectTimeout = (): void => {
    this.connectTimer = undefined;
    if (!this.connected) this.fail(new UpstreamError(`connect to ${this.pool.host}:${this.pool.port} timed out after ${this.pool.opts.connectTimeoutMs} ms`, 'UPSTREAM_CONNECT_TIMEOUT'), false);
  };

  private readonly onSocketEnd = (): void => {
    if (this.state === BODY_UNTIL_CLOSE) {
      this.state = IDLE;
      this.keepAlive = false;
      return this.complete(false);
    }
    this.fail(new UpstreamError(`${this.pool.host}:${this.pool.port} closed the connection before the answer ended`, 'UPSTREAM_CLOSED'), true);
  };

  private readonly onSocketError = (err: Error): void => {
    this.fail(err, true);
  };

  private readonly onSocketClose = (): void => {
    this.fail(new UpstreamError(`${this.pool.host}:${this.pool.port} closed the connection before the answer ended`, 'UPSTREAM_CLOSED'), true);
  };

  /** Ends the connection; a request in flight fails (or, on a stale reused connection, is sent again on a new one). */
  private fail(err: Error, mayRetry: boolean): void {
    const h = this.handler;
    const req = this.req;
    this.handler = undefined;
    this.req = undefined;
    if (!this.dead) {
      this.pool.forget(this);
      this.destroy();
    }
    if (!h || !req) return;
    // the server closed an idle connection just as we reused it: nothing reached the engine's
    // application, so the request goes out once more on a fresh connection (Go's net/http does the same)
    if (mayRetry && this.reused && !this.gotBytes) return this.pool.retry(this.reqHead, this.reqBody, req);
    this.reqBody = EMPTY;
    h.onError(err);
  }

  private protocolError(msg: string): void {
    this.fail(new UpstreamError(`${this.pool.host}:${this.pool.port} sent a malformed answer: ${msg}`, 'UPSTREAM_PROTOCOL'), false);
  }

  private readonly onSocketData = (chunk: Buffer): void => {
    try {
      this.parse(chunk);
    } catch (err) {
      // a handler threw: fail the request rather than the process (this runs in a socket event)
      this.fail(err instanceof Error ? err : new Error(String(err)), false);
    }
  };

  private parse(chunk: Buffer): void {
    if (this.state === IDLE) return this.protocolError('bytes while no request was in flight');
    this.gotBytes = true;
    let buf = chunk;
    let pos = 0;
    // each branch consumes from buf[pos..]; a handler may fail the connection, so re-check it each round
    while (pos < buf.length && this.handler) {
      switch (this.state) {
        case HEAD: {
          if (this.head.length) {
            buf = Buffer.concat([this.head, buf.subarray(pos)]);
            pos = 0;
            this.head = EMPTY;
          }
          const end = buf.indexOf('\r\n\r\n', pos, 'latin1');
          if (end < 0) {
            if (buf.length - pos > this.pool.opts.maxHeadBytes) return this.protocolError(`response head larger than ${this.pool.opts.maxHeadBytes} bytes`);
            this.head = Buffer.from(buf.subarray(pos));
            return;
          }
          if (end - pos > this.pool.opts.maxHeadBytes) return this.protocolError(`response head larger than ${this.pool.opts.maxHeadBytes} bytes`);
          const head = buf.toString('latin1', pos, end + 2);
          pos = end + 4;
          if (!this.parseHead(head)) return;
          if ((this.state as number) === IDLE) return this.complete(pos < buf.length);
          break;
        }
        case BODY_LENGTH: {
          const n = Math.min(this.remaining, buf.length - pos);
          const piece = buf.subarray(pos, pos + n);
          pos += n;
          this.remaining -= n;
          const more = this.handler.onData(piece);
          if (!this.handler) return;
          if (this.remaining === 0) {
            this.state = IDLE;
            return this.complete(pos < buf.length);
          }
          if (!more) this.socket.pause();
          break;
        }
        case CHUNK_SIZE: {
          const eol = buf.indexOf(CRLF_STR, pos, 'latin1');
          if (eol < 0) {
            // the size line straddles reads: keep it (bounded) and wait
            if (buf.length - pos > 1024) return this.protocolError('chunk size line too long');
            this.head = Buffer.from(buf.subarray(pos));
            this.state = CHUNK_SIZE_PARTIAL;
            return;
          }
          const size = parseChunkSize(buf, pos, eol);
          if (size < 0) return this.protocolError('bad chunk size');
          pos = eol + 2;
          if (size === 0) this.state = TRAILERS;
          else {
            this.remaining = size;
            this.state = CHUNK_DATA;
          }
          break;
        }
        case CHUNK_SIZE_PARTIAL: {
          buf = Buffer.concat([this.head, buf.subarray(pos)]);
          pos = 0;
          this.head = EMPTY;
          this.state = CHUNK_SIZE;
          break;
        }
        case CHUNK_DATA: {
          const n = Math.min(this.remaining, buf.length - pos);
          const piece = buf.subarray(pos, pos + n);
          pos += n;
          this.remaining -= n;
          if (this.remaining === 0) {
            this.state = CHUNK_DATA_END;
            this.remaining = 2;
          }
          if (!this.handler.onData(piece) && this.handler) this.socket.pause();
          break;
        }
        case CHUNK_DATA_END: {
          // the CRLF after a chunk's data, possibly split across reads
          const expect = this.remaining === 2 ? 0x0d : 0x0a;
          if (buf[pos] !== expect) return this.protocolError('missing CRLF after chunk data');
          pos++;
          if (--this.remaining === 0) this.state = CHUNK_SIZE;
          break;
        }
        case TRAILERS: {
          // trailer fields are dropped; the body ends at the empty line
          if (this.head.length) {
            buf = Buffer.concat([this.head, buf.subarray(pos)]);
            pos = 0;
            this.head = EMPTY;
          }
          if (buf.length - pos >= 2 && buf.readUInt16LE(pos) === CRLF) {
            pos += 2;
            this.state = IDLE;
            return this.complete(pos < buf.length);
          }
          const end = buf.indexOf('\r\n\r\n', pos, 'latin1');
          if (end < 0) {
            if (buf.length - pos > this.pool.opts.maxHeadBytes) return this.protocolError('trailers too large');
            this.head = Buffer.from(buf.subarray(pos));
            return;
          }
          pos = end + 4;
          this.state = IDLE;
          return this.complete(pos < buf.length);
        }
        case BODY_UNTIL_CLOSE: {
          const piece = pos === 0 ? buf : buf.subarray(pos);
          pos = buf.length;
          if (!this.handler.onData(piece) && this.handler) this.socket.pause();
          break;
        }
        default:
          return this.protocolError(`parser in state ${this.state}`);
      }
    }
  }

  /** Parses the status line and headers; returns false when the connection failed. */
  private parseHead(head: string): boolean {
    // "HTTP/1.1 200 OK\r\n"
    if (head.length < 12 || !head.startsWith('HTTP/1.') || head.charCodeAt(8) !== 0x20) {
      this.protocolError(`bad status line '${head.slice(0, Math.max(0, head.indexOf('\r'))).slice(0, 60)}'`);
      return false;
    }
    const minor = head.charCodeAt(7) - 0x30;
    const status = statusCode(head);
    if ((minor !== 0 && minor !== 1) || status < 0) {
      this.protocolError(`bad status line '${head.slice(0, Math.max(0, head.indexOf('\r'))).slice(0, 60)}'`);
      return false;
    }
    let contentType = '';
    let length = -1;
    let chunked = false;
    let hasTe = false;
    let conn = '';
    let at = head.indexOf('\r\n') + 2;
    while (at < head.length) {
      const eol = head.indexOf('\r\n', at);
      const colon = head.indexOf(':', at);
      if (colon < 0 || colon > eol || colon === at) {
        this.protocolError(`bad header line '${head.slice(at, eol).slice(0, 60)}'`);
        return false;
      }
      const c0 = head.charCodeAt(at);
      if (c0 === 0x20 || c0 === 0x09) {
        this.protocolError('obsolete header line folding');
        return false;
      }
      const nameLen = colon - at;
      // only a few names matter: compare by length first, lowercase only candidates
      if (nameLen === 12 || nameLen === 14 || nameLen === 17 || nameLen === 10) {
        const name = head.slice(at, colon).toLowerCase();
        const value = head.slice(colon + 1, eol).trim();
        if (name === 'content-type') contentType = contentType ? `${contentType},${value}` : value;
        else if (name === 'content-length') {
          if (!/^\d{1,15}$/.test(value) || (length >= 0 && length !== Number(value))) {
            this.protocolError(`bad content-length '${value.slice(0, 30)}'`);
            return false;
          }
          length = Number(value);
        } else if (name === 'transfer-encoding') {
          hasTe = true;
          chunked = /(?:^|,)\s*chunked\s*$/i.test(value);
        } else if (name === 'connection') {
          const v = value.toLowerCase();
          conn = conn ? `${conn},${v}` : v;
        } else if (name === 'keep-alive') this.pool.keepAliveHeader(value);
      }
      at = eol + 2;
    }
    if (status < 200) {
      if (status === 101) {
        this.protocolError('unexpected protocol switch');
        return false;
      }
      this.state = HEAD; // 100 Continue, 103 Early Hints: the real answer follows
      return true;
    }
    this.keepAlive =
      conn === '' || conn === 'keep-alive' ? minor === 1 || conn === 'keep-alive' : minor === 1 ? !/(?:^|,)\s*close\s*(?:,|$)/.test(conn) : /(?:^|,)\s*keep-alive\s*(?:,|$)/.test(conn);
    if (status === 204 || status === 304) this.state = IDLE;
    else if (hasTe) {
      // RFC 9112 §6.3: transfer-encoding wins over content-length; not ending in chunked → read to close
      if (chunked) this.state = CHUNK_SIZE;
      else {
        this.state = BODY_UNTIL_CLOSE;
        this.keepAlive = false;
      }
    } else if (length >= 0) {
      this.state = length === 0 ? IDLE : BODY_LENGTH;
      this.remaining = length;
    } else {
      this.state = BODY_UNTIL_CLOSE;
      this.keepAlive = false;
    }
    this.handler!.onHeaders(status, contentType);
    return this.handler !== undefined;
  }

  /**
   * The answer ended. The connection is reused unless the server said close, sent bytes after the
   * answer (`trailing`), or answered before the request was fully written (its state is unknown).
   */
  private complete(trailing: boolean): void {
    const h = this.handler!;
    this.handler = undefined;
    this.req = undefined;
    this.reqBody = EMPTY;
    this.reused = true;
    if (this.keepAlive && !trailing && this.socket.writableLength === 0 && !this.dead) this.pool.release(this);
    else {
      this.pool.forget(this);
      this.destroy();
    }
    h.onComplete();
  }
}

const CRLF_STR = '\r\n';
const CHUNK_SIZE_PARTIAL = 8;

function statusCode(head: string): number {
  const a = head.charCodeAt(9) - 0x30;
  const b = head.charCodeAt(10) - 0x30;
  const c = head.charCodeAt(11) - 0x30;
  if (a < 1 || a > 5 || b < 0 || b > 9 || c < 0 || c > 9) return -1;
  const after = head.charCodeAt(12);
  if (after !== 0x20 && after !== 0x0d) return -1;
  return a * 100 + b * 10 + c;
}

/** Hex chunk size in buf[from, eol), chunk extensions (";…") ignored; -1 when malformed. */
function parseChunkSize(buf: Buffer, from: number, eol: number): number {
  let n = 0;
  let digits = 0;
  let i = from;
  for (; i < eol; i++) {
    const c = buf[i]!;
    let d: number;
    if (c >= 0x30 && c <= 0x39) d = c - 0x30;
    else if (c >= 0x61 && c <= 0x66) d = c - 0x57;
    else if (c >= 0x41 && c <= 0x46) d = c - 0x37;
    else break;
    n = n * 16 + d;
    if (++digits > 12) return -1;
  }
  if (digits === 0) return -1;
  for (; i < eol; i++) {
    const c = buf[i]!;
    if (c === 0x3b) break; // ';' starts chunk extensions
    if (c !== 0x20 && c !== 0x09) return -1;
  }
  return n;
}

/** A handle on one request in flight. */
export interface UpstreamRequest {
  abort(err: Error): void;
  resume(): void;
}

/**
 * Keep-alive HTTP/1.1 connections to one origin, as many as there are concurrent requests (like
 * undici's `connections: null`). The most recently used idle connection is reused first, so a
 * steady load runs on a warm, small set.
 */
export class H1Pool {
  readonly opts: H1PoolOptions;
  readonly host: string;
  readonly port: number;
  private readonly idle: Connection[] = [];
  private readonly busy = new Set<Connection>();
  private keepAliveMs: number;
  private closed = false;
  private lastKeepAlive = '';
  private readonly hostLine: string;

  constructor(
    readonly origin: URL,
    opts: Partial<H1PoolOptions> = {},
  ) {
    this.opts = { ...DEFAULTS, ...opts };
    this.keepAliveMs = this.opts.keepAliveMs;
    this.host = origin.hostname.startsWith('[') ? origin.hostname.slice(1, -1) : origin.hostname;
    this.port = Number(origin.port) || (origin.protocol === 'https:' ? 443 : 80);
    this.hostLine = `host: ${origin.host}\r\n`;
  }

  /**
   * Sends `POST path` (or `method`) with `headerBlock` (pre-serialized `name: value\r\n` lines, without
   * host and content-length) and `body`. The handler gets the answer; the returned handle cancels it.
   */
  request(method: string, path: string, headerBlock: string, body: Buffer, handler: ResponseHandler): UpstreamRequest {
    const req = new RequestHandle(handler);
    if (this.closed) {
      queueMicrotask(() => handler.onError(new UpstreamError('the connection pool is closed', 'UPSTREAM_CLOSED')));
      return req;
    }
    const head = `${method} ${path} HTTP/1.1\r\n${this.hostLine}${headerBlock}content-length: ${body.length}\r\n\r\n`;
    this.dispatch(head, body, req, true);
    return req;
  }

  private dispatch(head: string, body: Buffer, req: RequestHandle, mayReuse: boolean): void {
    let conn: Connection | undefined;
    if (mayReuse) {
      const now = performance.now();
      while ((conn = this.idle.pop())) {
        if (now - conn.idleSince < this.keepAliveMs) break;
        conn.destroy();
      }
    }
    conn ??= new Connection(this);
    this.busy.add(conn);
    conn.send(head, body, req);
  }

  /** @internal a stale keep-alive connection failed before any answer byte: once more on a fresh one */
  retry(head: string, body: Buffer, req: RequestHandle): void {
    if (this.closed) return req.handler.onError(new UpstreamError('the connection pool is closed', 'UPSTREAM_CLOSED'));
    this.dispatch(head, body, req, false);
  }

  /** @internal */
  release(conn: Connection): void {
    this.busy.delete(conn);
    if (this.closed) return conn.destroy();
    conn.idleSince = performance.now();
    this.idle.push(conn);
  }

  /** @internal */
  forget(conn: Connection): void {
    if (!this.busy.delete(conn)) {
      const i = this.idle.indexOf(conn);
      if (i >= 0) this.idle.splice(i, 1);
    }
  }

  /** @internal the server announced `Keep-Alive: timeout=N`: stop reusing connections a second before it closes them */
  keepAliveHeader(value: string): void {
    if (value === this.lastKeepAlive) return;
    this.lastKeepAlive = value;
    const m = /timeout\s*=\s*(\d+)/i.exec(value);
    if (m) this.keepAliveMs = Math.min(this.opts.keepAliveMs, Math.max(0, Number(m[1]) * 1000 - 1000));
  }

  get connections(): { idle: number; busy: number } {
    return { idle: this.idle.length, busy: this.busy.size };
  }

  /** No new requests; idle connections close now, busy ones after their answer. */
  close(): void {
    this.closed = true;
    for (const c of this.idle.splice(0)) c.destroy();
  }

  /** Closes everything now; requests in flight fail. */
  destroy(): void {
    this.close();
    for (const c of [...this.busy]) if (c.req) c.abort(c.req, new UpstreamError('the connection pool was destroyed', 'UPSTREAM_CLOSED'));
  }
}

class RequestHandle implements UpstreamRequest {
  /** the connection carrying it (a fresh one after a stale keep-alive retry) */
  conn: Connection | undefined;
  constructor(readonly handler: ResponseHandler) {}

  abort(err: Error): void {
    this.conn?.abort(this, err);
  }

  resume(): void {
    this.conn?.resume(this);
  }
}
