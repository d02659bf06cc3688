// The gateway's client-facing HTTP/1.1 server. node:http's server side cost about a third of the
// gateway's CPU per request (IncomingMessage/ServerResponse streams, per-request listeners, a corked
// writev per answer); this one hands the handler a request whose body is already read, and writes
// each answer head and body with one `write`. See docs/gateway-performance.md for the measurements.
//
// It is strict where leniency lets a request be read two ways (RFC 9112 §6.3, §11.2): both
// Content-Length and Transfer-Encoding, differing Content-Lengths, obs-fold, whitespace before the
// colon, bare CR or LF, a missing or repeated Host all get 400 and the connection is closed. It
// supports keep-alive, pipelining (answers in order), chunked request bodies, `Expect: 100-continue`,
// HTTP/1.0 clients, chunked answers of unknown length and HEAD. A client that closes its side while
// its answer is pending is taken as gone, as node's server does.
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { STATUS_CODES } from 'node:http';

export interface H1ServerOptions {
  /** request line + headers (and, for chunked bodies, the trailers); beyond it: 431 */
  maxHeadBytes: number;
  /** body bytes; beyond it the handler still gets the request, with `bodyTooLarge` set and no body */
  maxBodyBytes: number;
  /** an idle keep-alive connection is closed after this */
  keepAliveTimeoutMs: number;
  /** a request must have sent its head within this, and then make progress on its body at least this often; else 408 */
  requestReadTimeoutMs: number;
  /**
   * an answer that makes no progress for this long (the client stopped reading) is dropped; progress is
   * seen only when the kernel's send buffer drains, which a slow reader lets happen in bursts of MiBs
   */
  sendTimeoutMs: number;
  /** the body of the server's own answers to unreadable requests (400, 408, 413, 417, 431, 501, 505) */
  errorBody: (status: number, message: string) => string;
}

const DEFAULTS: H1ServerOptions = {
  maxHeadBytes: 64 * 1024,
  maxBodyBytes: 32 * 1024 * 1024,
  keepAliveTimeoutMs: 65_000,
  requestReadTimeoutMs: 60_000,
  sendTimeoutMs: 65_000,
  errorBody: (status, message) => JSON.stringify({ error: { message, type: 'invalid_request_error', param: null, code: status } }),
};

export class H1Request {
  /** `name, value, name, value…` as received */
  readonly rawHeaders: string[] = [];
  private headerMap: Record<string, string> | undefined;
  body: Buffer = EMPTY;
  /** the declared or received body exceeded `maxBodyBytes`; `body` is empty and the connection closes after the answer */
  bodyTooLarge = false;
  constructor(
    readonly method: string,
    /** origin-form: the path and query */
    readonly url: string,
    readonly httpVersion: '1.0' | '1.1',
  ) {}

  /** A field's value by lower-case name (repeated fields joined with ", "); no map is built. */
  get(name: string): string | undefined {
    const raw = this.rawHeaders;
    let out: string | undefined;
    for (let i = 0; i < raw.length; i += 2) {
      const k = raw[i]!;
      if (k.length === name.length && (k === name || k.toLowerCase() === name)) out = out === undefined ? raw[i + 1]! : `${out}, ${raw[i + 1]!}`;
    }
    return out;
  }

  /** Every field by lower-case name, built on first use (the request path only needs `get`). */
  get headers(): Record<string, string> {
    if (this.headerMap) return this.headerMap;
    const h = Object.create(null) as Record<string, string>;
    const raw = this.rawHeaders;
    for (let i = 0; i < raw.length; i += 2) {
      const k = raw[i]!.toLowerCase();
      const prev = h[k];
      h[k] = prev === undefined ? raw[i + 1]! : `${prev}, ${raw[i + 1]!}`;
    }
    return (this.headerMap = h);
  }
}

export type H1Handler = (req: H1Request, res: H1Response) => void;

const EMPTY = Buffer.alloc(0);
/** bodies up to this are copied behind the head (or chunk frame) to leave in one write */
const COPY_MAX = 16 * 1024;

// connection states
const READ_HEAD = 0;
const READ_BODY = 1;
const READ_CHUNK_SIZE = 2;
const READ_CHUNK_DATA = 3;
const READ_CHUNK_END = 4;
const READ_TRAILERS = 5;
/** a request is with the handler; later bytes wait (pipelining) */
const HANDLING = 6;
/** the connection closes after the current answer; input is ignored */
const CLOSING = 7;

/**
 * A measure of the bytes the kernel has not taken yet. A large answer is one libuv write, and `writableLength` stays at
 * its full size until the write completes, so progress is read from the handle's write queue, as
 * node's own socket idle timeout does (net.js `kLastWriteQueueSize`).
 */
function unsentBytes(socket: Socket): number {
  const q = (socket as unknown as { _handle?: { writeQueueSize?: number } })._handle?.writeQueueSize;
  // the sum changes whenever either moves, and is 0 only when everything has left
  return socket.writableLength + (typeof q === 'number' ? q : 0);
}

/** seconds a closing connection waits, its answer flushed, for the client to close its side */
const CLOSE_GRACE_TICKS = 5;

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
/** field values: no CTLs but HTAB (obs-text is allowed) */
const BAD_VALUE = /[\x00-\x08\x0a-\x1f\x7f]/;
/** a request head: CTLs but HTAB are invalid, and CR and LF may only appear together as CRLF */
const BAD_HEAD_CHAR = /[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]|\r(?!\n)|(?<!\r)\n/;
const BAD_TARGET = /[\x00-\x20\x7f]/;

export class ProtocolError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

/**
 * One answer. `writeHead` takes lower-case header names; without `content-length` the body is sent
 * chunked (HTTP/1.1) or delimited by closing the connection (HTTP/1.0).
 */
export class H1Response {
  headersSent = false;
  /** `end` was called */
  finished = false;
  /** the client went away before the answer was complete */
  aborted = false;
  /** called once if the client goes away before `end` */
  onclose: ((this: H1Response) => void) | undefined;
  /** the handler's own per-answer state, for `onclose`/`ondrain` called with the answer as `this` */
  context: unknown;
  /** called once when a `write` that returned false has drained */
  ondrain: ((this: H1Response) => void) | undefined;
  private head = '';
  private held: Buffer | undefined;
  private chunked = false;
  private noBody = false;

  constructor(
    private readonly conn: ServerConnection,
    private readonly isHead: boolean,
    /** the connection closes after this answer */
    public closeAfter: boolean,
  ) {}

  writeHead(status: number, headers: Record<string, string | number>): void {
    if (this.headersSent || this.head) throw new Error('writeHead called twice');
    let h = `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Unknown'}\r\n`;
    let hasLength = false;
    for (const k in headers) {
      const v = headers[k]!;
      if (k === 'content-length') hasLength = true;
      else if (k === 'connection' || k === 'transfer-encoding' || k === 'keep-alive') continue;
      // no header injection, whatever a handler passes on from an engine or a client
      if (!TOKEN.test(k)) throw new Error(`'${k}' is not a valid header name`);
      if (typeof v === 'string' && BAD_VALUE.test(v)) throw new Error(`header '${k}' has a control character in its value`);
      h += `${k}: ${v}\r\n`;
    }
    this.noBody = this.isHead || status === 204 || status === 304 || (status >= 100 && status < 200);
    if (!hasLength && !this.noBody) {
      if (this.conn.http10) this.closeAfter = true;
      else {
        this.chunked = true;
        h += 'transfer-encoding: chunked\r\n';
      }
    }
    // a drain that began while the request was being handled still closes the connection after it
    if (this.conn.server.draining) this.closeAfter = true;
    h += this.closeAfter ? 'connection: close\r\n' : this.conn.http10 ? 'connection: keep-alive\r\n' : '';
    h += this.conn.server.dateLine;
    this.head = h + '\r\n';
  }

  /** Returns false when the socket's buffer is full: wait for `ondrain`. */
  write(data: Buffer | string): boolean {
    if (this.finished) throw new Error('write after end');
    if (!this.head) throw new Error('write before writeHead');
    if (this.aborted) return true;
    const body = typeof data === 'string' ? Buffer.from(data) : data;
    if (body.length === 0 && this.headersSent) return true;
    return this.send(body, false);
  }

  end(data?: Buffer | string): void {
    if (this.finished) return;
    this.finished = true;
    if (!this.head) this.writeHead(200, {});
    if (this.aborted) return;
    const body = data === undefined ? EMPTY : typeof data === 'string' ? Buffer.from(data) : data;
    this.send(body, true);
    this.conn.answered(this);
  }

  /** @internal writes what `send` held back */
  flush(): void {
    const held = this.held;
    if (!held) return;
    this.held = undefined;
    if (!this.aborted) this.conn.socket.write(held);
  }

  /** @internal the handler threw: replace an answer not yet sent with a 500 and close */
  internalError(body: string): void {
    if (this.headersSent || this.finished) return this.destroy();
    this.head = '';
    this.closeAfter = true;
    this.writeHead(500, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
    this.end(body);
  }

  /** Drops the connection (an answer that cannot be completed). */
  destroy(): void {
    this.conn.destroy();
  }

  private send(body: Buffer, last: boolean): boolean {
    const socket = this.conn.socket;
    if (this.noBody) body = EMPTY;
    let head = '';
    if (!this.headersSent) {
      this.headersSent = true;
      head = this.head;
    }
    if (this.chunked && body.length > 0) head += `${body.length.toString(16)}\r\n`;
    const tail = this.chunked ? (last ? (body.length > 0 ? '\r\n0\r\n\r\n' : '0\r\n\r\n') : body.length > 0 ? '\r\n' : '') : '';
    if (body.length <= COPY_MAX) {
      const held = this.held;
      const h = held ? held.length : 0;
      const n = head.length;
      const buf = Buffer.allocUnsafe(h + n + body.length + tail.length);
      if (held) held.copy(buf, 0);
      if (n) buf.write(head, h, n, 'latin1');
      body.copy(buf, h + n);
      if (tail) buf.write(tail, h + n + body.length, 'latin1');
      if (last) {
        this.held = undefined;
        return socket.write(buf);
      }
      // Held until the end of this tick: an upstream read usually carries the last events and the end
      // of the stream together, and they then leave in one write instead of two.
      if (!held) process.nextTick(flushHeld, this);
      this.held = buf;
      // "Full" only while the socket has a 'drain' pending: counting the held bytes too would report
      // full when no write of the socket's ever returned false, no 'drain' would come, and a handler
      // waiting for `ondrain` (the SSE relay, its engine paused) would wait forever. The held bytes are
      // at most what one upstream read produced, so they need no bound of their own.
      return !socket.writableNeedDrain;
    }
    this.flush();
    socket.cork();
    if (head) socket.write(head, 'latin1');
    let ok = socket.write(body);
    if (tail) ok = socket.write(tail, 'latin1');
    socket.uncork();
    return ok;
  }
}

function flushHeld(res: H1Response): void {
  res.flush();
}

/** One client connection: parses requests in order, one with the handler at a time. */
class ServerConnection {
  http10 = false;
  /** the server's clock tick of the last progress (bytes of a request, the end of an answer, bytes the client took) */
  lastTick: number;
  /** the socket's unsent bytes at the last housekeeping tick */
  lastQueued = 0;
  /** when the current request's first byte arrived */
  requestTick = 0;
  state = READ_HEAD;
  private pending: Buffer = EMPTY;
  /** where to resume looking for the end of the head */
  private scanned = 0;
  private req: H1Request | undefined;
  private res: H1Response | undefined;
  private keepAlive = true;
  private remaining = 0;
  /** body being received: one buffer of the declared length, or chunks of a chunked body */
  private bodyBuf: Buffer = EMPTY;
  private bodyLen = 0;
  private chunks: Buffer[] = [];
  private trailerBytes = 0;
  private dead = false;

  constructor(
    readonly server: H1Server,
    readonly socket: Socket,
  ) {
    this.lastTick = server.tick;
    socket.setNoDelay(true);
    socket.on('data', this.onData);
    socket.on('end', this.onEnd);
    socket.on('error', this.onError);
    socket.on('close', this.onClose);
    socket.on('drain', this.onDrain);
  }

  /** Idle between requests (nothing received and nothing being answered). */
  get idle(): boolean {
    return this.state === READ_HEAD && this.pending.length === 0;
  }

  destroy(): void {
    if (this.dead) return;
    this.socket.destroy();
    this.onClose();
  }

  /** Closes a connection that is between requests (the server is draining). */
  endIdle(): void {
    if (this.dead || !this.idle) return;
    this.state = CLOSING;
    this.endSocket();
  }

  /** The handler ended its answer: next request, or close. */
  answered(res: H1Response): void {
    if (res !== this.res) return;
    this.res = undefined;
    this.req = undefined;
    this.lastTick = this.server.tick;
    if (res.closeAfter || !this.keepAlive || this.server.draining) {
      this.state = CLOSING;
      this.endSocket();
      return;
    }
    this.state = READ_HEAD;
    this.scanned = 0;
    if (this.socket.isPaused()) this.socket.resume();
    if (this.pending.length) this.safeParse(EMPTY);
  }

  /** Answers a request the server could not read, then closes. */
  fail(status: number, message: string): void {
    if (this.dead) return;
    this.state = CLOSING;
    this.pending = EMPTY;
    if (this.res && this.res.headersSent) return this.destroy();
    this.res = undefined;
    const body = Buffer.from(this.server.opts.errorBody(status, message));
    this.socket.write(
      `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Error'}\r\ncontent-type: application/json\r\ncontent-length: ${body.length}\r\nconnection: close\r\n${this.server.dateLine}\r\n`,
      'latin1',
    );
    this.socket.write(body);
    this.endSocket();
  }

  private endSocket(): void {
    this.socket.end();
    // the housekeeping timer drops the socket once the answer is flushed and the client has not
    // closed within CLOSE_GRACE_TICKS, or when the client stops reading
    this.lastTick = this.server.tick;
  }

  private readonly onData = (chunk: Buffer): void => {
    if (this.state === CLOSING) return;
    if (this.state !== HANDLING) this.lastTick = this.server.tick;
    this.safeParse(chunk);
  };

  private safeParse(chunk: Buffer): void {
    try {
      this.parse(chunk);
    } catch (err) {
      if (err instanceof ProtocolError) this.fail(err.status, err.message);
      else {
        this.server.onInternalError(err);
        this.destroy();
      }
    }
  }

  private readonly onEnd = (): void => {
    if (this.state === CLOSING) return;
    if (this.state === READ_HEAD && this.pending.length === 0) return void this.socket.end();
    // As node's server does by default, a client's FIN with an answer pending means it went away
    // (clients abort by closing): the generation in progress is cancelled, not finished for nobody.
    // A request cut short by the FIN is dropped too.
    this.destroy();
  };

  private readonly onError = (): void => {
    // 'close' follows
  };

  private readonly onClose = (): void => {
    if (this.dead) return;
    this.dead = true;
    this.server.forget(this);
    const res = this.res;
    this.res = undefined;
    if (res && !res.finished) {
      res.aborted = true;
      const cb = res.onclose;
      res.onclose = undefined;
      cb?.call(res);
    }
  };

  private readonly onDrain = (): void => {
    const res = this.res;
    if (!res) return;
    const cb = res.ondrain;
    res.ondrain = undefined;
    cb?.call(res);
  };

  private parse(chunk: Buffer): void {
    let buf = this.pending.length === 0 ? chunk : chunk.length === 0 ? this.pending : Buffer.concat([this.pending, chunk]);
    this.pending = EMPTY;
    let pos = 0;
    while (pos < buf.length) {
      switch (this.state) {
        case HANDLING: {
          // pipelined bytes wait for the answer in progress; stop reading if they pile up
          this.pending = pos === 0 ? buf : buf.subarray(pos);
          if (this.pending.length > this.server.opts.maxHeadBytes) this.socket.pause();
          return;
        }
        case CLOSING:
          return;
        case READ_HEAD: {
          if (this.scanned === 0) {
            // RFC 9112 §2.2: ignore empty lines before a request line
            while (pos + 1 < buf.length && buf[pos] === 0x0d && buf[pos + 1] === 0x0a) pos += 2;
            if (pos >= buf.length) return;
            if (pos + 1 === buf.length && buf[pos] === 0x0d) {
              this.pending = buf.subarray(pos); // maybe the first half of an empty line
              return;
            }
            this.requestTick = this.server.tick;
          }
          const end = buf.indexOf('\r\n\r\n', Math.max(pos, pos + this.scanned - 3), 'latin1');
          if (end < 0) {
            if (buf.length - pos > this.server.opts.maxHeadBytes) throw new ProtocolError(431, 'request header fields too large');
            this.pending = buf.subarray(pos);
            this.scanned = this.pending.length;
            return;
          }
          if (end - pos > this.server.opts.maxHeadBytes) throw new ProtocolError(431, 'request header fields too large');
          this.scanned = 0;
          this.startRequest(buf.toString('latin1', pos, end));
          pos = end + 4;
          break;
        }
        case READ_BODY: {
          const n = Math.min(this.remaining, buf.length - pos);
          if (this.bodyBuf.length === 0 && n === this.remaining) {
            // the whole body is in this read: no copy
            this.req!.body = buf.subarray(pos, pos + n);
          } else {
            // copied into one buffer of the declared length as reads arrive: measured cheaper than
            // keeping the pieces and joining them at the end (354–366 vs 420–492 µs per 100 KB request)
            if (this.bodyBuf.length === 0) this.bodyBuf = Buffer.allocUnsafe(this.remaining);
            buf.copy(this.bodyBuf, this.bodyLen, pos, pos + n);
            this.bodyLen += n;
            if (n === this.remaining) this.req!.body = this.bodyBuf;
          }
          pos += n;
          this.remaining -= n;
          if (this.remaining === 0) this.dispatch();
          break;
        }
        case READ_CHUNK_SIZE: {
          const eol = buf.indexOf(0x0a, pos);
          if (eol < 0) {
            if (buf.length - pos > 1024) throw new ProtocolError(400, 'chunk size line too long');
            this.pending = buf.subarray(pos);
            return;
          }
          if (eol === pos || buf[eol - 1] !== 0x0d) throw new ProtocolError(400, 'chunk size line must end with CRLF');
          let line = buf.toString('latin1', pos, eol - 1);
          const semi = line.indexOf(';');
          if (semi >= 0) line = line.slice(0, semi);
          line = line.trimEnd();
          if (!/^[0-9a-fA-F]{1,12}$/.test(line)) throw new ProtocolError(400, `bad chunk size '${line.slice(0, 20)}'`);
          const size = parseInt(line, 16);
          pos = eol + 1;
          if (size === 0) {
            this.state = READ_TRAILERS;
            this.trailerBytes = 0;
          } else {
            if (this.bodyLen + size > this.server.opts.maxBodyBytes) {
              this.req!.bodyTooLarge = true;
              this.chunks = [];
              return this.dispatch();
            }
            this.remaining = size;
            this.state = READ_CHUNK_DATA;
          }
          break;
        }
        case READ_CHUNK_DATA: {
          const n = Math.min(this.remaining, buf.length - pos);
          this.chunks.push(buf.subarray(pos, pos + n));
          this.bodyLen += n;
          this.remaining -= n;
          pos += n;
          if (this.remaining === 0) this.state = READ_CHUNK_END;
          break;
        }
        case READ_CHUNK_END: {
          if (buf.length - pos < 2) {
            this.pending = buf.subarray(pos);
            return;
          }
          if (buf[pos] !== 0x0d || buf[pos + 1] !== 0x0a) throw new ProtocolError(400, 'chunk data must end with CRLF');
          pos += 2;
          this.state = READ_CHUNK_SIZE;
          break;
        }
        case READ_TRAILERS: {
          // trailer fields are read and dropped (nothing the gateway forwards depends on them)
          const eol = buf.indexOf(0x0a, pos);
          if (eol < 0) {
            if (this.trailerBytes + buf.length - pos > this.server.opts.maxHeadBytes) throw new ProtocolError(431, 'trailer fields too large');
            this.pending = buf.subarray(pos);
            return;
          }
          if (eol === pos || buf[eol - 1] !== 0x0d) throw new ProtocolError(400, 'trailer lines must end with CRLF');
          this.trailerBytes += eol + 1 - pos;
          if (this.trailerBytes > this.server.opts.maxHeadBytes) throw new ProtocolError(431, 'trailer fields too large');
          const empty = eol === pos + 1;
          pos = eol + 1;
          if (empty) {
            const c = this.chunks;
            this.req!.body = c.length === 1 ? c[0]! : c.length === 0 ? EMPTY : Buffer.concat(c, this.bodyLen);
            this.chunks = [];
            this.dispatch();
          }
          break;
        }
      }
    }
  }

  private startRequest(head: string): void {
    const { req, length, chunked, keepAlive, expectContinue } = parseRequestHead(head);
    this.http10 = req.httpVersion === '1.0';
    this.keepAlive = keepAlive;
    this.req = req;
    this.bodyBuf = EMPTY;
    this.bodyLen = 0;
    if (length > this.server.opts.maxBodyBytes) {
      req.bodyTooLarge = true;
      return this.dispatch();
    }
    if (expectContinue && (chunked || length > 0) && !this.http10) this.socket.write('HTTP/1.1 100 Continue\r\n\r\n', 'latin1');
    if (chunked) {
      this.chunks = [];
      this.state = READ_CHUNK_SIZE;
    } else if (length > 0) {
      this.remaining = length;
      this.state = READ_BODY;
    } else this.dispatch();
  }

  private dispatch(): void {
    const req = this.req!;
    this.requestTick = 0;
    this.state = HANDLING;
    const res = new H1Response(this, req.method === 'HEAD', req.bodyTooLarge || !this.keepAlive);
    this.res = res;
    if (req.bodyTooLarge) {
      // the rest of the body is never read: stop parsing and close after the answer
      this.state = CLOSING;
      this.pending = EMPTY;
    }
    this.bodyBuf = EMPTY;
    this.server.handle(req, res);
  }
}

export interface ParsedHead {
  req: H1Request;
  /** declared content-length, -1 when none */
  length: number;
  chunked: boolean;
  keepAlive: boolean;
  expectContinue: boolean;
}

/** Parses a request head (without its final CRLF CRLF); throws ProtocolError with the status to answer. */
export function parseRequestHead(head: string): ParsedHead {
  // one scan of the whole head for control characters (HTAB allowed, CR and LF only as CRLF)
  if (BAD_HEAD_CHAR.test(head)) throw new ProtocolError(400, 'invalid character in the request head');
  let eol = head.indexOf('\r\n');
  if (eol < 0) eol = head.length;
  const sp1 = head.indexOf(' ');
  const sp2 = head.lastIndexOf(' ', eol);
  if (sp1 <= 0 || sp2 <= sp1 || sp1 >= eol) throw new ProtocolError(400, 'malformed request line');
  const method = head.slice(0, sp1);
  let target = head.slice(sp1 + 1, sp2);
  const version = head.slice(sp2 + 1, eol);
  if (!TOKEN.test(method)) throw new ProtocolError(400, 'malformed request method');
  if (target.length === 0 || BAD_TARGET.test(target)) throw new ProtocolError(400, 'malformed request target');
  if (version !== 'HTTP/1.1' && version !== 'HTTP/1.0') {
    if (/^HTTP\/\d\.\d$/.test(version)) throw new ProtocolError(505, `${version} is not supported`);
    throw new ProtocolError(400, 'malformed request line');
  }
  if (target.charCodeAt(0) !== 0x2f && target !== '*') {
    // absolute-form (RFC 9112 §3.2.2): keep the path and query
    const m = /^https?:\/\/[^/?#]+(.*)$/i.exec(target);
    if (!m) throw new ProtocolError(400, 'malformed request target');
    target = m[1] || '/';
  }
  const http10 = version === 'HTTP/1.0';
  const req = new H1Request(method, target, http10 ? '1.0' : '1.1');
  const raw = req.rawHeaders;
  let hosts = 0;
  let length = -1;
  let chunked = false;
  let conn: string | undefined;
  let expect: string | undefined;
  let pos = eol + 2;
  while (pos < head.length) {
    let end = head.indexOf('\r\n', pos);
    if (end < 0) end = head.length;
    const c = head.indexOf(':', pos);
    if (c < 0 || c >= end || c === pos) {
      const first = head.charCodeAt(pos);
      if (first === 0x20 || first === 0x09) throw new ProtocolError(400, 'obsolete line folding is not accepted');
      throw new ProtocolError(400, 'malformed header line');
    }
    const name = head.slice(pos, c);
    if (!TOKEN.test(name)) throw new ProtocolError(400, `malformed header name '${name.slice(0, 40)}'`);
    // OWS is SP / HTAB only (String.trim would also eat obs-text such as NBSP)
    let vs = c + 1;
    let ve = end;
    while (vs < ve && (head.charCodeAt(vs) === 0x20 || head.charCodeAt(vs) === 0x09)) vs++;
    while (ve > vs && (head.charCodeAt(ve - 1) === 0x20 || head.charCodeAt(ve - 1) === 0x09)) ve--;
    const value = head.slice(vs, ve);
    raw.push(name, value);
    pos = end + 2;
    // the fields the server itself acts on, found by length before any case folding
    switch (name.length) {
      case 4:
        if (name.toLowerCase() === 'host' && ++hosts > 1) throw new ProtocolError(400, 'more than one host field');
        break;
      case 6:
        if (name.toLowerCase() === 'expect') expect = expect === undefined ? value : `${expect}, ${value}`;
        break;
      case 10:
        if (name.toLowerCase() === 'connection') conn = conn === undefined ? value : `${conn}, ${value}`;
        break;
      case 14:
        if (name.toLowerCase() === 'content-length') {
          if (!/^\d{1,15}$/.test(value)) throw new ProtocolError(400, 'invalid content-length');
          const n = Number(value);
          if (length >= 0 && n !== length) throw new ProtocolError(400, 'conflicting content-length fields');
          length = n;
        }
        break;
      case 17:
        if (name.toLowerCase() === 'transfer-encoding') {
          if (http10) throw new ProtocolError(400, 'transfer-encoding in an HTTP/1.0 request');
          const codings = value.toLowerCase().split(',').map((s) => s.trim());
          if (codings[codings.length - 1] !== 'chunked') throw new ProtocolError(400, 'transfer-encoding must end with chunked');
          if (codings.length > 1 || chunked) throw new ProtocolError(501, `transfer-coding '${value}' is not supported`);
          chunked = true;
        }
        break;
    }
  }
  if (chunked && length >= 0) throw new ProtocolError(400, 'both content-length and transfer-encoding');
  if (!http10 && hosts === 0) throw new ProtocolError(400, 'missing host field');
  const keepAlive = http10 ? conn !== undefined && hasToken(conn, 'keep-alive') : conn === undefined || !hasToken(conn, 'close');
  if (expect !== undefined && expect.toLowerCase() !== '100-continue') throw new ProtocolError(417, `expectation '${expect}' is not supported`);
  return { req, length, chunked, keepAlive, expectContinue: expect !== undefined };
}

/** `token` among the comma-separated tokens of a field value (case-insensitive). */
function hasToken(value: string, token: string): boolean {
  const v = value.toLowerCase();
  if (v === token) return true;
  for (const t of v.split(',')) if (t.trim() === token) return true;
  return false;
}

export class H1Server {
  readonly opts: H1ServerOptions;
  /** seconds since start, advanced by the housekeeping timer */
  tick = 1;
  dateLine = `date: ${new Date().toUTCString()}\r\n`;
  private readonly server: Server;
  private readonly conns = new Set<ServerConnection>();
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly handler: H1Handler,
    opts: Partial<H1ServerOptions> = {},
    /** a handler threw: the connection is dropped, and this is told */
    readonly onInternalError: (err: unknown) => void = () => {},
  ) {
    this.opts = { ...DEFAULTS, ...opts };
    this.server = createServer({ allowHalfOpen: true, noDelay: true }, (socket) => {
      this.conns.add(new ServerConnection(this, socket));
    });
  }

  /** @internal */
  handle(req: H1Request, res: H1Response): void {
    try {
      this.handler(req, res);
    } catch (err) {
      this.onInternalError(err);
      res.internalError(this.opts.errorBody(500, 'internal server error'));
    }
  }

  /** @internal */
  forget(conn: ServerConnection): void {
    this.conns.delete(conn);
    if (this.conns.size === 0) this.onEmpty?.();
  }

  /** Set by `drain`: answers carry `connection: close` and their connection ends after them. */
  draining = false;
  private onEmpty: (() => void) | undefined;

  /**
   * Graceful stop: no new connections; connections between requests close now; one with a request
   * in progress gets its answer (with `connection: close`) and then closes. Resolves once every
   * connection is gone, or after `timeoutMs`, when what is left is dropped.
   */
  async drain(timeoutMs: number): Promise<void> {
    this.draining = true;
    this.server.close();
    for (const c of [...this.conns]) c.endIdle();
    if (this.conns.size > 0) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, timeoutMs);
        this.onEmpty = () => (clearTimeout(timer), resolve());
      });
      this.onEmpty = undefined;
    }
    await this.close();
  }

  listen(port: number, host: string): Promise<void> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, host, () => {
        this.server.off('error', reject);
        this.timer = setInterval(() => this.housekeeping(), 1000);
        this.timer.unref();
        resolve();
      });
    });
  }

  address(): AddressInfo {
    return this.server.address() as AddressInfo;
  }

  get connections(): number {
    return this.conns.size;
  }

  /** Stops listening and drops every connection (answers in progress are cut). */
  close(): Promise<void> {
    clearInterval(this.timer);
    for (const c of [...this.conns]) c.destroy();
    if (!this.server.listening) return Promise.resolve();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }

  private housekeeping(): void {
    this.tick++;
    this.dateLine = `date: ${new Date().toUTCString()}\r\n`;
    const keepAliveTicks = Math.ceil(this.opts.keepAliveTimeoutMs / 1000);
    const readTicks = Math.ceil(this.opts.requestReadTimeoutMs / 1000);
    const sendTicks = Math.ceil(this.opts.sendTimeoutMs / 1000);
    for (const c of this.conns) {
      // an answer still leaving: fine while the client takes bytes, dropped when it stops reading
      const queued = unsentBytes(c.socket);
      if (queued !== c.lastQueued) {
        c.lastQueued = queued;
        c.lastTick = this.tick;
        continue;
      }
      if (queued > 0) {
        if (this.tick - c.lastTick > sendTicks) c.destroy();
        continue;
      }
      if (c.state === CLOSING) {
        if (this.tick - c.lastTick > CLOSE_GRACE_TICKS) c.destroy();
        continue;
      }
      if (c.state === HANDLING) continue;
      if (c.idle) {
        if (this.tick - c.lastTick > keepAliveTicks) c.destroy();
      } else if (this.tick - c.lastTick > readTicks || (c.state === READ_HEAD && c.requestTick > 0 && this.tick - c.requestTick > readTicks)) {
        c.fail(408, 'request not received in time');
      }
    }
  }
}
