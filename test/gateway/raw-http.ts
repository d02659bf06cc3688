// A raw-socket HTTP/1.1 client for conformance tests: the test writes exact bytes and this parses the
// answers itself (status line, headers, content-length / chunked / read-to-close bodies), so nothing
// between the test and the server normalizes the wire.
import { connect, type Socket } from 'node:net';

export interface RawResponse {
  version: string;
  status: number;
  reason: string;
  /** lower-cased names; repeated fields keep every value */
  headers: Map<string, string[]>;
  body: Buffer;
  /** how the body was delimited */
  framing: 'none' | 'length' | 'chunked' | 'close';
  /** for chunked bodies: the size line of every chunk as sent (with extensions), ending with the last-chunk line */
  chunkLines: string[];
  trailers: Map<string, string[]>;
}

export function header(res: RawResponse, name: string): string | undefined {
  const v = res.headers.get(name.toLowerCase());
  return v === undefined ? undefined : v.join(', ');
}

/** Connection tokens of a response, lower-cased. */
export function connectionTokens(res: RawResponse): string[] {
  return (header(res, 'connection') ?? '').split(',').map((t) => t.trim().toLowerCase()).filter(Boolean);
}

export class RawConn {
  readonly socket: Socket;
  private buf: Buffer = Buffer.alloc(0);
  private ended = false;
  private closedFlag = false;
  /** a socket error (ECONNRESET, EPIPE), kept instead of thrown: tests decide whether it matters */
  error: Error | undefined;
  private wake: (() => void)[] = [];

  private constructor(socket: Socket) {
    this.socket = socket;
    socket.on('data', (d: Buffer) => {
      this.buf = this.buf.length ? Buffer.concat([this.buf, d]) : d;
      this.notify();
    });
    socket.on('end', () => {
      this.ended = true;
      this.notify();
    });
    socket.on('error', (e) => {
      this.error = e;
      this.notify();
    });
    socket.on('close', () => {
      this.ended = true;
      this.closedFlag = true;
      this.notify();
    });
  }

  static open(port: number, host = '127.0.0.1'): Promise<RawConn> {
    return new Promise((resolve, reject) => {
      const s = connect({ port, host });
      s.setNoDelay(true);
      s.once('connect', () => {
        s.off('error', reject);
        resolve(new RawConn(s));
      });
      s.once('error', reject);
    });
  }

  /** the peer ended its side (FIN) or the socket closed */
  get peerEnded(): boolean {
    return this.ended;
  }

  get closed(): boolean {
    return this.closedFlag;
  }

  /** bytes received and not yet consumed by a read */
  get pending(): Buffer {
    return this.buf;
  }

  private notify(): void {
    const w = this.wake;
    this.wake = [];
    for (const f of w) f();
  }

  /** Writes and waits until the bytes are handed to the kernel (resolves, never rejects, on a dead socket). */
  write(data: string | Buffer): Promise<void> {
    return new Promise((resolve) => {
      if (this.socket.destroyed || !this.socket.writable) return resolve();
      this.socket.write(data, () => resolve());
    });
  }

  /** Writes `data` a few bytes at a time, pausing between writes so each lands in its own segment. */
  async writeSlowly(data: string | Buffer, bytesPerWrite = 1, delayMs = 1): Promise<void> {
    const b = typeof data === 'string' ? Buffer.from(data, 'latin1') : data;
    for (let i = 0; i < b.length; i += bytesPerWrite) {
      await this.write(b.subarray(i, i + bytesPerWrite));
      if (delayMs > 0) await sleep(delayMs);
    }
  }

  /** Waits until `cond` holds (re-checked on every socket event) or `timeoutMs` passes. */
  private async until(cond: () => boolean, timeoutMs: number, what: string): Promise<void> {
    const end = Date.now() + timeoutMs;
    while (!cond()) {
      const left = end - Date.now();
      if (left <= 0) throw new Error(`raw-http: timed out after ${timeoutMs} ms waiting for ${what}; unread: ${JSON.stringify(this.buf.toString('latin1').slice(0, 300))}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.wake.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  /** A server's lines must end in CRLF (RFC 9112 §2.2), so a bare LF is an error here, not tolerated. */
  private async line(deadline: number): Promise<string> {
    await this.until(() => this.buf.indexOf(0x0a) >= 0 || this.ended, deadline - Date.now(), 'a line');
    const i = this.buf.indexOf(0x0a);
    if (i < 0) throw new Error(`raw-http: connection ended mid-line${this.error ? ` (${this.error.message})` : ''}; unread: ${JSON.stringify(this.buf.toString('latin1'))}`);
    if (i === 0 || this.buf[i - 1] !== 0x0d) throw new Error(`raw-http: line ends in a bare LF: ${JSON.stringify(this.buf.toString('latin1', 0, i + 1))}`);
    const s = this.buf.toString('latin1', 0, i - 1);
    this.buf = this.buf.subarray(i + 1);
    return s;
  }

  private async bytes(n: number, deadline: number): Promise<Buffer> {
    await this.until(() => this.buf.length >= n || this.ended, deadline - Date.now(), `${n} body bytes`);
    if (this.buf.length < n) throw new Error(`raw-http: connection ended after ${this.buf.length} of ${n} body bytes`);
    const b = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return b;
  }

  private async fields(deadline: number): Promise<Map<string, string[]>> {
    const h = new Map<string, string[]>();
    for (;;) {
      const l = await this.line(deadline);
      if (l === '') return h;
      const c = l.indexOf(':');
      if (c <= 0) throw new Error(`raw-http: malformed header line ${JSON.stringify(l)}`);
      const name = l.slice(0, c).toLowerCase();
      const value = l.slice(c + 1).trim();
      const prev = h.get(name);
      if (prev) prev.push(value);
      else h.set(name, [value]);
    }
  }

  /**
   * Reads the next response, interim (1xx) ones included. `method` tells whether a body can follow
   * (not for HEAD); a response with neither length nor chunking is read until the server closes.
   */
  async read(opts: { method?: string; timeoutMs?: number } = {}): Promise<RawResponse> {
    const deadline = Date.now() + (opts.timeoutMs ?? 5000);
    const statusLine = await this.line(deadline);
    const m = /^(HTTP\/\d\.\d) (\d{3})(?: (.*))?$/.exec(statusLine);
    if (!m) throw new Error(`raw-http: bad status line ${JSON.stringify(statusLine)}`);
    const headers = await this.fields(deadline);
    const res: RawResponse = { version: m[1]!, status: Number(m[2]), reason: m[3] ?? '', headers, body: Buffer.alloc(0), framing: 'none', chunkLines: [], trailers: new Map() };
    const s = res.status;
    if (opts.method === 'HEAD' || (s >= 100 && s < 200) || s === 204 || s === 304) return res;
    const te = header(res, 'transfer-encoding');
    const cl = header(res, 'content-length');
    if (te !== undefined) {
      if (!/(?:^|,)\s*chunked\s*$/i.test(te)) throw new Error(`raw-http: unsupported transfer-encoding ${te}`);
      res.framing = 'chunked';
      const parts: Buffer[] = [];
      for (;;) {
        const sizeLine = await this.line(deadline);
        res.chunkLines.push(sizeLine);
        const size = Number.parseInt(sizeLine.split(';')[0]!.trim(), 16);
        if (!Number.isFinite(size) || !/^[0-9a-fA-F]+$/.test(sizeLine.split(';')[0]!.trim())) throw new Error(`raw-http: bad chunk size line ${JSON.stringify(sizeLine)}`);
        if (size === 0) break;
        parts.push(await this.bytes(size, deadline));
        const crlf = await this.bytes(2, deadline);
        if (crlf.toString('latin1') !== '\r\n') throw new Error(`raw-http: chunk data not followed by CRLF: ${JSON.stringify(crlf.toString('latin1'))}`);
      }
      res.trailers = await this.fields(deadline);
      res.body = Buffer.concat(parts);
    } else if (cl !== undefined) {
      if (!/^\d+$/.test(cl)) throw new Error(`raw-http: bad content-length ${cl}`);
      res.framing = 'length';
      res.body = Buffer.from(await this.bytes(Number(cl), deadline));
    } else {
      res.framing = 'close';
      await this.until(() => this.ended, deadline - Date.now(), 'the close that ends the body');
      res.body = this.buf;
      this.buf = Buffer.alloc(0);
    }
    return res;
  }

  /** Reads responses until a final (non-1xx) one. */
  async readFinal(opts: { method?: string; timeoutMs?: number } = {}): Promise<RawResponse> {
    for (;;) {
      const r = await this.read(opts);
      if (r.status >= 200) return r;
    }
  }

  /** True when the server ends the connection within `timeoutMs` (unread bytes are left alone). */
  async waitEnded(timeoutMs = 3000): Promise<boolean> {
    try {
      await this.until(() => this.ended, timeoutMs, 'the server to close');
      return true;
    } catch {
      return false;
    }
  }

  /** True when any byte (or the close) arrives within `timeoutMs`. */
  async waitData(timeoutMs: number): Promise<boolean> {
    try {
      await this.until(() => this.buf.length > 0 || this.ended, timeoutMs, 'data');
      return this.buf.length > 0;
    } catch {
      return false;
    }
  }

  close(): void {
    this.socket.destroy();
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** A request head + body with content-length, CRLF line ends; `headers` are written in order, as given. */
export function request(method: string, path: string, body: string | undefined, headers: [string, string][] = [], version = 'HTTP/1.1'): string {
  let head = `${method} ${path} ${version}\r\nHost: gateway.test\r\n`;
  for (const [k, v] of headers) head += `${k}: ${v}\r\n`;
  if (body !== undefined) head += `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n`;
  return `${head}\r\n${body ?? ''}`;
}

/** Decodes an SSE body into its `data:` payloads. */
export function sseData(text: string): string[] {
  return text
    .split(/\r?\n\r?\n/)
    .filter((e) => e.trim() !== '')
    .map((e) => e.split(/\r?\n/).filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trimStart()).join('\n'));
}
