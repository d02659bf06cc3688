// Low-level HTTP plumbing on raw node:http: bounded body reading, JSON replies, SSE framing.

import type { IncomingMessage, ServerResponse } from 'node:http';
import { once } from 'node:events';
import { ApiError } from './errors.ts';

/**
 * Read the whole body, refusing more than `limit` bytes. An oversized body is detected from
 * Content-Length before reading anything, or while reading; either way reading stops and the
 * caller answers 413 and closes the connection (the rest of the body is never parsed).
 */
export function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const declared = req.headers['content-length'];
    if (declared !== undefined && Number(declared) > limit) {
      discard(req);
      reject(tooLarge(limit));
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        cleanup();
        discard(req);
        reject(tooLarge(limit));
        return;
      }
      chunks.push(chunk);
    };
    const onEnd = () => {
      cleanup();
      resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size));
    };
    const onError = (err: Error) => {
      cleanup();
      reject(err);
    };
    const cleanup = () => {
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', onError);
    };
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('error', onError);
  });
}

/**
 * Stop buffering an oversized body but keep draining the socket briefly: closing a socket with
 * unread bytes makes the kernel send RST, and the client would lose the 413 we are about to send.
 */
function discard(req: IncomingMessage): void {
  req.resume();
  const timer = setTimeout(() => req.socket.destroy(), 2000);
  timer.unref();
  req.socket.once('close', () => clearTimeout(timer));
}

function tooLarge(limit: number): ApiError {
  return new ApiError(413, `request body exceeds the limit of ${limit} bytes`, 'invalid_request_error', null, 'request_too_large');
}

/** Parse a JSON object body; anything else is a 400. */
export function parseJsonObject(body: Buffer): Record<string, unknown> {
  if (body.length === 0) throw new ApiError(400, 'request body is empty; expected a JSON object');
  let value: unknown;
  try {
    value = JSON.parse(body.toString('utf8'));
  } catch (err) {
    throw new ApiError(400, `malformed JSON in request body: ${(err as Error).message}`);
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new ApiError(400, 'request body must be a JSON object');
  }
  return value as Record<string, unknown>;
}

export function sendJson(res: ServerResponse, status: number, value: unknown, headers: Record<string, string> = {}): void {
  const body = Buffer.from(JSON.stringify(value));
  res.writeHead(status, { ...headers, 'content-type': 'application/json', 'content-length': String(body.length) });
  res.end(body);
}

export function sendError(res: ServerResponse, err: ApiError): void {
  if (res.headersSent) {
    // Too late for a status line: end the stream; the client sees a truncated response.
    res.destroy();
    return;
  }
  const headers: Record<string, string> = {};
  if (err.retryAfter !== undefined) headers['retry-after'] = String(Math.max(0, Math.ceil(err.retryAfter)));
  if (err.status === 413) headers['connection'] = 'close';
  sendJson(res, err.status, err.body(), headers);
}

/** Server-sent events in OpenAI's framing: `data: <json>\n\n`, then `data: [DONE]\n\n`. */
export class SseWriter {
  constructor(private readonly res: ServerResponse) {}

  open(headers: Record<string, string> = {}): void {
    this.res.writeHead(200, {
      ...headers,
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache',
      // Tokens must reach the client as they are produced: no proxy buffering.
      'x-accel-buffering': 'no',
    });
    this.res.flushHeaders();
  }

  /** Write one event; waits for the socket to drain so a slow reader applies backpressure. */
  async send(value: unknown): Promise<void> {
    await this.write(`data: ${JSON.stringify(value)}\n\n`);
  }

  async done(): Promise<void> {
    await this.write('data: [DONE]\n\n');
    this.res.end();
  }

  private async write(frame: string): Promise<void> {
    if (this.res.destroyed) return;
    if (!this.res.write(frame)) {
      await Promise.race([once(this.res, 'drain'), once(this.res, 'close')]);
    }
  }
}
