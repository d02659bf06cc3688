// One upstream leg: the response handler for one request on an endpoint's `H1Pool`. A small answer is
// collected from the parser callbacks into one buffer; a stream is handed chunk by chunk to a sink.
import type { H1Pool, ResponseHandler, UpstreamRequest } from './h1-client.ts';

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

export class UpstreamLeg implements ResponseHandler {
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
  private req: UpstreamRequest | undefined;
  private resolve!: () => void;
  private reject!: (err: unknown) => void;

  constructor(private readonly sinks?: SinkFactory) {
    this.done = new Promise<void>((resolve, reject) => {
      this.resolve = resolve;
      this.reject = reject;
    });
  }

  /** Sends `POST path` on `pool`; resolves when the answer is complete (buffered) or relayed (sink). */
  start(pool: H1Pool, path: string, headerBlock: string, body: Buffer): Promise<void> {
    this.req = pool.request('POST', path, headerBlock, body, this);
    return this.done;
  }

  /** Cancels the leg (the engine sees its connection close); the leg rejects with `err`. */
  abort(err: Error): void {
    this.req?.abort(err);
  }

  resume(): void {
    this.req?.resume();
  }

  onHeaders(statusCode: number, contentType: string): void {
    this.status = statusCode;
    this.contentType = contentType;
    this.headersReceived = true;
    if (this.sinks) this.sink = this.sinks.sinkFor(this);
  }

  onData(chunk: Buffer): boolean {
    if (this.sink) return this.sink.data(chunk);
    this.chunks.push(chunk);
    this.size += chunk.length;
    return true;
  }

  onComplete(): void {
    this.req = undefined;
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
    this.req = undefined;
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
