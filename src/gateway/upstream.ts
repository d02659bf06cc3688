// One upstream leg as a raw undici dispatch handler. `Pool.request()` costs a RequestHandler, an
// AbortSignal listener, a Readable body and a promise per read on every request; here a small answer
// is collected straight from the parser callbacks, and a stream is handed chunk by chunk to a sink.
// These are undici's "legacy" handler callbacks: in undici 7 they are the core's native interface
// (the newer controller-style handlers are wrapped into them on every dispatch).
import type { Dispatcher } from 'undici';

/** Takes a streamed body. `data` returns false to pause the upstream socket until `UpstreamLeg.resume()`. */
export interface StreamSink {
  data(chunk: Buffer): boolean;
  /** the body ended; the leg resolves after this returns */
  end(): void;
  /** the leg broke; return an error to reject the leg with, or undefined to resolve it (the sink ended the answer) */
  error(err: Error): unknown;
}

/** Chooses, once the status and headers are known, whether the body streams to a sink (else it is buffered). */
export interface SinkFactory {
  sinkFor(leg: UpstreamLeg): StreamSink | undefined;
}

const EMPTY = Buffer.alloc(0);

export class UpstreamLeg implements Dispatcher.DispatchHandler {
  status = 0;
  /** the response's content-type, '' when it has none */
  contentType = '';
  headersReceived = false;
  /** the whole body, once the leg resolved in buffered mode */
  body: Buffer = EMPTY;
  sink: StreamSink | undefined;
  readonly done: Promise<void>;
  private chunks: Buffer[] = [];
  private size = 0;
  private resumeFn: (() => void) | undefined;
  private abortFn: ((err: Error) => void) | undefined;
  private abortReason: Error | undefined;
  private resolve!: () => void;
  private reject!: (err: unknown) => void;

  constructor(private readonly sinks?: SinkFactory) {
    this.done = new Promise<void>((resolve, reject) => {
      this.resolve = resolve;
      this.reject = reject;
    });
  }

  /** Sends the request on `pool`; resolves when the answer is complete (buffered) or relayed (sink). */
  start(pool: Dispatcher, opts: Dispatcher.DispatchOptions): Promise<void> {
    pool.dispatch(opts, this);
    return this.done;
  }

  /** Cancels the leg (the engine sees its connection close); the leg rejects with `err`. */
  abort(err: Error): void {
    if (this.abortFn) this.abortFn(err);
    else this.abortReason = err;
  }

  resume(): void {
    this.resumeFn?.();
  }

  onConnect(abort: (err?: Error) => void): void {
    if (this.abortReason) abort(this.abortReason);
    else this.abortFn = abort;
  }

  onHeaders(statusCode: number, headers: Buffer[], resume: () => void): boolean {
    if (statusCode < 200) return true; // 1xx: the real answer follows
    this.status = statusCode;
    this.resumeFn = resume;
    this.headersReceived = true;
    for (let i = 0; i < headers.length; i += 2) {
      const k = headers[i]!;
      // 'content-type' is 12 bytes: compare only candidates of that length
      if (k.length === 12 && k.toString('latin1').toLowerCase() === 'content-type') {
        const v = headers[i + 1]!.toString('latin1');
        this.contentType = this.contentType ? `${this.contentType},${v}` : v;
      }
    }
    if (this.sinks) this.sink = this.sinks.sinkFor(this);
    return true;
  }

  onData(chunk: Buffer): boolean {
    if (this.sink) return this.sink.data(chunk);
    this.chunks.push(chunk);
    this.size += chunk.length;
    return true;
  }

  onComplete(): void {
    this.abortFn = undefined;
    if (this.sink) {
      try {
        this.sink.end();
      } catch (err) {
        return this.reject(err);
      }
      return this.resolve();
    }
    const c = this.chunks;
    this.body = c.length === 1 ? c[0]! : c.length === 0 ? EMPTY : Buffer.concat(c, this.size);
    this.chunks = [];
    this.resolve();
  }

  onError(err: Error): void {
    this.abortFn = undefined;
    if (this.sink) {
      let out: unknown;
      try {
        out = this.sink.error(err);
      } catch (e) {
        out = e;
      }
      return out === undefined ? this.resolve() : this.reject(out);
    }
    this.chunks = [];
    this.reject(err);
  }
}
