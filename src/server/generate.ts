// The generation loop behind /v1/completions and /v1/chat/completions: submit a GenerationPlan to
// the engine, then shape the event stream into vLLM's response objects (one JSON body, or SSE
// chunks ending in `data: [DONE]`).

import type { ServerResponse } from 'node:http';
import { randomUUID } from 'node:crypto';
import type { Engine, GenerateEvent, GenerateRequest, TokenLogprob } from '../engine/api.ts';
import { ApiError } from './errors.ts';
import { SseWriter, sendJson } from './http.ts';
import type { GenerationPlan } from './protocol.ts';

type Finish = Extract<GenerateEvent, { type: 'finish' }>;

export interface GenerationContext {
  engine: Engine;
  modelName: string;
  /** the client's x-request-id, when it sent one */
  clientRequestId?: string;
  /** ms since epoch when the request arrived */
  arrivalTime: number;
  /** aborted when the client goes away */
  signal: AbortSignal;
  /** headers every response carries (x-request-id) */
  headers: Record<string, string>;
}

interface Usage {
  prompt_tokens: number;
  total_tokens: number;
  completion_tokens: number;
  prompt_tokens_details: { cached_tokens: number };
}

/** vLLM replaces -inf logprobs (impossible tokens) by this, since JSON has no infinity. */
const LOGPROB_FLOOR = -9999;

export async function runGeneration(plan: GenerationPlan, ctx: GenerationContext, res: ServerResponse): Promise<void> {
  const prefix = plan.kind === 'chat' ? 'chatcmpl' : 'cmpl';
  // As vLLM: the response id is "<prefix>-<x-request-id>"; the engine runs under the client's id
  // itself so that both legs of a P/D request carry the same id into the KV connector.
  const id = `${prefix}-${ctx.clientRequestId ?? randomUUID()}`;
  const request: GenerateRequest = {
    requestId: ctx.clientRequestId ?? id,
    promptIds: plan.promptIds,
    sampling: plan.sampling,
    maxTokens: plan.maxTokens,
    minTokens: plan.minTokens,
    stop: plan.stop,
    stopTokenIds: plan.stopTokenIds,
    ignoreEos: plan.ignoreEos,
    logprobs: plan.logprobs,
    cacheSalt: plan.cacheSalt,
    kvTransferParams: plan.kvTransferParams,
    arrivalTime: ctx.arrivalTime,
    includeStopStrInOutput: plan.includeStopStrInOutput,
  };
  const events = ctx.engine.submit(request, ctx.signal)[Symbol.asyncIterator]();
  // Pull the first event before committing to a status line: an engine that refuses lazily (on the
  // first next() rather than in submit()) still gets its 429/503/400 reported as such.
  const first = await events.next();
  const shape = new Shaper(plan, id, ctx.modelName, Math.floor(ctx.arrivalTime / 1000));
  if (plan.stream) await streamResponse(plan, shape, first, events, ctx, res);
  else await collectResponse(plan, shape, first, events, ctx, res);
}

async function* rest(first: IteratorResult<GenerateEvent>, events: AsyncIterator<GenerateEvent>): AsyncGenerator<GenerateEvent> {
  let r = first;
  try {
    while (!r.done) {
      yield r.value;
      r = await events.next();
    }
  } finally {
    // The consumer stopped early (client gone): let the engine's iterator clean up too.
    if (!r.done) await events.return?.();
  }
}

async function collectResponse(
  plan: GenerationPlan,
  shape: Shaper,
  first: IteratorResult<GenerateEvent>,
  events: AsyncIterator<GenerateEvent>,
  ctx: GenerationContext,
  res: ServerResponse,
): Promise<void> {
  let text = plan.echoText ?? '';
  const lps: TokenLogprob[] = [];
  let finish: Finish | undefined;
  for await (const ev of rest(first, events)) {
    if (ev.type === 'delta') {
      text += ev.text;
      if (ev.logprobs) lps.push(...ev.logprobs);
    } else finish = ev;
  }
  if (ctx.signal.aborted) return; // nobody is listening
  if (!finish) throw new ApiError(500, 'the engine ended the request without a finish event');
  if (finish.reason === 'error') throw finishError(finish);
  const usage = usageOf(finish);
  const logprobs = plan.logprobs === undefined ? null : shape.logprobs(lps, plan.echoText?.length ?? 0);
  const choice =
    plan.kind === 'chat'
      ? {
          index: 0,
          message: { role: 'assistant', content: text, refusal: null, annotations: null, audio: null, function_call: null, tool_calls: [], reasoning_content: null },
          logprobs,
          finish_reason: finish.reason,
          stop_reason: stopReason(finish, ctx.engine),
        }
      : { index: 0, text, logprobs, finish_reason: finish.reason, stop_reason: stopReason(finish, ctx.engine), prompt_logprobs: null };
  sendJson(
    res,
    200,
    {
      id: shape.id,
      object: plan.kind === 'chat' ? 'chat.completion' : 'text_completion',
      created: shape.created,
      model: shape.model,
      choices: [choice],
      service_tier: null,
      system_fingerprint: null,
      usage,
      prompt_logprobs: null,
      kv_transfer_params: finish.kvTransferParams ?? null,
    },
    ctx.headers,
  );
}

async function streamResponse(
  plan: GenerationPlan,
  shape: Shaper,
  first: IteratorResult<GenerateEvent>,
  events: AsyncIterator<GenerateEvent>,
  ctx: GenerationContext,
  res: ServerResponse,
): Promise<void> {
  const sse = new SseWriter(res);
  sse.open(ctx.headers);
  let completionTokens = 0;
  let promptTokens = plan.promptIds.length;
  let textOffset = 0;
  const partialUsage = () =>
    plan.continuousUsage ? { usage: { prompt_tokens: promptTokens, completion_tokens: completionTokens, total_tokens: promptTokens + completionTokens } } : {};

  if (plan.kind === 'chat') {
    await sse.send(shape.chunk({ index: 0, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }, partialUsage()));
  } else if (plan.echoText) {
    await sse.send(shape.chunk({ index: 0, text: plan.echoText, logprobs: null, finish_reason: null, stop_reason: null }, partialUsage()));
    textOffset = plan.echoText.length;
  }
  let finish: Finish | undefined;
  try {
    for await (const ev of rest(first, events)) {
      if (res.destroyed) break;
      if (ev.type === 'finish') {
        finish = ev;
        break;
      }
      completionTokens += ev.ids.length;
      const wantLogprobs = plan.logprobs !== undefined;
      // Stop strings hold text back, so a delta may carry ids but no text: skip it unless the
      // client is owed its logprobs.
      if (ev.text === '' && !wantLogprobs) continue;
      const logprobs = wantLogprobs ? shape.logprobs(ev.logprobs ?? [], textOffset) : null;
      textOffset += (ev.logprobs ?? []).reduce((n, t) => n + t.token.length, 0);
      const choice =
        plan.kind === 'chat'
          ? { index: 0, delta: { content: ev.text }, logprobs, finish_reason: null }
          : { index: 0, text: ev.text, logprobs, finish_reason: null, stop_reason: null };
      await sse.send(shape.chunk(choice, partialUsage()));
    }
  } catch (err) {
    // Headers are out: the failure travels in the stream, as vLLM reports it.
    await sse.send(errorEvent(err));
    await sse.done();
    return;
  }
  if (res.destroyed) return;
  if (!finish) {
    await sse.send(errorEvent(new ApiError(500, 'the engine ended the request without a finish event')));
  } else if (finish.reason === 'error') {
    await sse.send(errorEvent(finishError(finish)));
  } else {
    promptTokens = finish.usage.promptTokens;
    completionTokens = finish.usage.completionTokens;
    const reason = stopReason(finish, ctx.engine);
    const choice =
      plan.kind === 'chat'
        ? { index: 0, delta: {}, logprobs: null, finish_reason: finish.reason, stop_reason: reason }
        : { index: 0, text: '', logprobs: null, finish_reason: finish.reason, stop_reason: reason };
    await sse.send(shape.chunk(choice, partialUsage()));
    if (plan.includeUsage) await sse.send({ ...shape.chunk(null), choices: [], usage: usageOf(finish) });
  }
  await sse.done();
}

class Shaper {
  constructor(
    private readonly plan: GenerationPlan,
    readonly id: string,
    readonly model: string,
    readonly created: number,
  ) {}

  chunk(choice: object | null, extra: object = {}): Record<string, unknown> {
    return {
      id: this.id,
      object: this.plan.kind === 'chat' ? 'chat.completion.chunk' : 'text_completion',
      created: this.created,
      model: this.model,
      choices: choice ? [choice] : [],
      ...extra,
    };
  }

  /** completions: {tokens, token_logprobs, top_logprobs, text_offset}; chat: {content: [...]} */
  logprobs(lps: TokenLogprob[], initialOffset: number): unknown {
    if (this.plan.kind === 'chat') {
      return {
        content: lps.map((t) => ({
          token: t.token,
          logprob: finite(t.logprob),
          bytes: bytesOf(t.token),
          top_logprobs: t.top.slice(0, this.plan.logprobs).map((c) => ({ token: c.token, logprob: finite(c.logprob), bytes: bytesOf(c.token) })),
        })),
      };
    }
    const textOffset: number[] = [];
    let offset = initialOffset;
    for (const t of lps) {
      textOffset.push(offset);
      offset += t.token.length;
    }
    return {
      text_offset: textOffset,
      token_logprobs: lps.map((t) => finite(t.logprob)),
      tokens: lps.map((t) => t.token),
      // vLLM's dict holds the sampled token and the top N (so N + 1 entries at most).
      top_logprobs: lps.map((t) => {
        const d: Record<string, number> = { [t.token]: finite(t.logprob) };
        for (const c of t.top.slice(0, this.plan.logprobs)) if (!(c.token in d)) d[c.token] = finite(c.logprob);
        return d;
      }),
    };
  }
}

function usageOf(finish: Finish): Usage {
  const u = finish.usage;
  return {
    prompt_tokens: u.promptTokens,
    total_tokens: u.promptTokens + u.completionTokens,
    completion_tokens: u.completionTokens,
    prompt_tokens_details: { cached_tokens: u.cachedTokens },
  };
}

/** vLLM's stop_reason: the stop string or stop token id that ended the request; null for EOS and length. */
function stopReason(finish: Finish, engine: Engine): string | number | null {
  if (finish.reason !== 'stop' || finish.stopReason === undefined) return null;
  if (finish.stopReason === engine.tokenizer.eos) return null;
  return finish.stopReason;
}

function finishError(finish: Finish): ApiError {
  const status = finish.error?.status ?? 500;
  const message = finish.error?.message ?? (typeof finish.stopReason === 'string' ? finish.stopReason : 'the engine failed the request');
  return new ApiError(status, message);
}

function errorEvent(err: unknown): object {
  const e = err instanceof ApiError ? err : new ApiError(500, `internal error: ${(err as Error)?.message ?? String(err)}`);
  return e.body();
}

function finite(x: number): number {
  return Number.isFinite(x) ? x : LOGPROB_FLOOR;
}

function bytesOf(s: string): number[] {
  return [...Buffer.from(s, 'utf8')];
}
