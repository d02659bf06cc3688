// The OpenAI-facing boundary: request validation, prompt text for scheduling, P/D leg bodies
// (llm-d's nixlv2 sidecar / vLLM toy proxy), and OpenAI-format errors.
import { StringDecoder } from 'node:string_decoder';
import type { SchedulingRequest } from './types.ts';

export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly type: string,
    readonly code: string,
    readonly param: string | null = null,
  ) {
    super(message);
  }
}

export function errorBody(message: string, type: string, code: string | number, param: string | null = null): string {
  return JSON.stringify({ error: { message, type, param, code } });
}

/** What `sendError` needs of an answer (the gateway's H1Response; node's ServerResponse fits too). */
export interface ErrorSink {
  readonly headersSent: boolean;
  writeHead(status: number, headers: Record<string, string | number>): unknown;
  end(body: string): unknown;
  destroy(): unknown;
}

export function sendError(res: ErrorSink, e: HttpError, extra: Record<string, string> = {}): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const body = errorBody(e.message, e.type, e.code, e.param);
  res.writeHead(e.status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), ...extra });
  res.end(body);
}

export const badRequest = (message: string, param: string | null = null) => new HttpError(400, message, 'invalid_request_error', 'invalid_request', param);

function textOfContent(content: unknown): string {
  if (typeof content === 'string') return content;
  if (Array.isArray(content)) {
    let s = '';
    for (const part of content) {
      if (part && typeof part === 'object' && typeof (part as { text?: unknown }).text === 'string') s += (part as { text: string }).text;
    }
    return s;
  }
  return '';
}

/**
 * Validates the fields the gateway itself relies on (the engines validate the rest) and extracts the
 * scheduling view. For chat the prompt text is the whole conversation, so prefix matching sees every turn.
 */
export function toSchedulingRequest(
  kind: 'completions' | 'chat',
  body: unknown,
  requestId: string,
  headers: SchedulingRequest['headers'],
): SchedulingRequest {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw badRequest('request body must be a JSON object');
  const b = body as Record<string, unknown>;
  if (typeof b.model !== 'string' || !b.model) throw badRequest('model is required', 'model');
  if (b.stream !== undefined && typeof b.stream !== 'boolean') throw badRequest('stream must be a boolean', 'stream');
  const req: SchedulingRequest = { requestId, model: b.model, kind, body: b, promptText: '', prefix: new Map(), headers };
  if (kind === 'chat') {
    if (!Array.isArray(b.messages) || b.messages.length === 0) throw badRequest('messages must be a non-empty list', 'messages');
    let text = '';
    for (const m of b.messages) {
      if (typeof m !== 'object' || m === null) throw badRequest('each message must be an object', 'messages');
      const role = (m as { role?: unknown }).role;
      if (typeof role !== 'string') throw badRequest('each message needs a role', 'messages');
      text += `${role}\n${textOfContent((m as { content?: unknown }).content)}\n`;
    }
    req.promptText = text;
  } else {
    const p = b.prompt;
    if (typeof p === 'string') req.promptText = p;
    else if (Array.isArray(p) && p.length > 0 && p.every((x) => typeof x === 'string')) req.promptText = (p as string[]).join('\n');
    else if (Array.isArray(p) && p.length > 0 && p.every((x) => Number.isInteger(x))) {
      // already token ids: exact tokens without asking an engine
      req.tokens = { count: p.length, ids: p as number[], exact: true };
      req.promptText = (p as number[]).join(' ');
    } else throw badRequest('prompt must be a string, a list of strings or a list of token ids', 'prompt');
  }
  return req;
}

/** Leg 1: the client's body, made a one-token, non-streaming remote-decode prefill. */
export function prefillLegBody(body: Record<string, unknown>): string {
  const b: Record<string, unknown> = { ...body };
  b.kv_transfer_params = {
    do_remote_decode: true,
    do_remote_prefill: false,
    remote_engine_id: null,
    remote_block_ids: null,
    remote_host: null,
    remote_port: null,
  };
  b.stream = false;
  delete b.stream_options;
  b.max_tokens = 1;
  b.max_completion_tokens = 1;
  b.min_tokens = 1;
  return JSON.stringify(b);
}

/** Leg 2: the client's original fields plus the prefill's kv_transfer_params, verbatim. */
export function decodeLegBody(body: Record<string, unknown>, kvTransferParams: unknown): string {
  return JSON.stringify({ ...body, kv_transfer_params: kvTransferParams });
}

/** Sets usage.prompt_tokens_details.cached_tokens (the decode engine would report its own, post-transfer, count). */
export function rewriteCachedTokens(obj: Record<string, unknown>, cached: number): boolean {
  const usage = obj.usage;
  if (!usage || typeof usage !== 'object') return false;
  const u = usage as Record<string, unknown>;
  const details = u.prompt_tokens_details && typeof u.prompt_tokens_details === 'object' ? (u.prompt_tokens_details as Record<string, unknown>) : {};
  u.prompt_tokens_details = { ...details, cached_tokens: cached };
  return true;
}

/** Rewrites `usage` in SSE events as they pass, holding back only an incomplete event. */
export class SseUsageRewriter {
  private pending = '';
  // a UTF-8 sequence may straddle two chunks
  private readonly decoder = new StringDecoder('utf8');
  constructor(private readonly cached: number) {}

  push(chunk: Buffer): string {
    this.pending += this.decoder.write(chunk);
    let out = '';
    let idx: number;
    while ((idx = this.pending.indexOf('\n\n')) >= 0) {
      out += this.event(this.pending.slice(0, idx)) + '\n\n';
      this.pending = this.pending.slice(idx + 2);
    }
    return out;
  }

  flush(): string {
    const rest = this.pending + this.decoder.end();
    this.pending = '';
    return rest;
  }

  private event(ev: string): string {
    if (!ev.includes('"usage"') || !ev.startsWith('data: ') || ev.startsWith('data: [DONE]')) return ev;
    try {
      const obj = JSON.parse(ev.slice(6)) as Record<string, unknown>;
      return rewriteCachedTokens(obj, this.cached) ? `data: ${JSON.stringify(obj)}` : ev;
    } catch {
      return ev;
    }
  }
}
