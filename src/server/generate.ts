// The generation loop behind /v1/completions and /v1/chat/completions: submit a GenerationPlan to
// the engine (n engine requests for n choices), then shape the event streams into vLLM's response
// objects (one JSON body, or SSE chunks ending in `data: [DONE]`).

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
}

interface Usage {
  prompt_tokens: number;
  total_tokens: number;
  completion_tokens: number;
  prompt_tokens_details: { cached_tokens: number };
}

/** vLLM replaces -inf logprobs (impossible tokens) by this, since JSON has no infinity. */
const LOGPROB_FLOOR = -9999;

/** One choice: an engine request's event stream, its first event already pulled. */
interface Choice {
  index: number;
  first: IteratorResult<GenerateEvent>;
  events: AsyncIterator<GenerateEvent>;
}

export async function runGeneration(plan: GenerationPlan, ctx: GenerationContext, res: ServerResponse): Promise<void> {
  const prefix = plan.kind === 'chat' ? 'chatcmpl' : 'cmpl';
  // As vLLM: the response id is "<prefix>-<x-request-id>"; the engine runs under the client's id
  // itself so that both legs of a P/D request carry the same id into the KV connector.
  const id = `${prefix}-${ctx.clientRequestId ?? randomUUID()}`;
  const requestId = ctx.clientRequestId ?? id;
  // vLLM (--enable-request-id-headers) answers with the id it used, generated or not.
  if (!res.hasHeader('x-request-id')) res.setHeader('x-request-id', requestId);

  // The client's signal aborts everything; a refusal of one of n choices aborts its siblings.
  const aborter = new AbortController();
  const onClientGone = () => aborter.abort();
  ctx.signal.addEventListener('abort', onClientGone, { once: true });
  try {
    const choices = await submitAll(plan, ctx, requestId, aborter.signal);
    const shape = new Shaper(plan, id, ctx.modelName, Math.floor(ctx.arrivalTime / 1000));
    if (plan.stream) await streamResponse(plan, shape, choices, ctx, res, () => aborter.abort());
    else await collectResponse(plan, shape, choices, ctx, res);
  } catch (err) {
    aborter.abort();
    throw err;
  } finally {
    ctx.signal.removeEventListener('abort', onClientGone);
  }
}

async function submitAll(plan: GenerationPlan, ctx: GenerationContext, requestId: string, signal: AbortSignal): Promise<Choice[]> {
  const streams: AsyncIterator<GenerateEvent>[] = [];
  for (let i = 0; i < plan.n; i++) {
    const sampling = { ...plan.sampling };
    // Each choice needs its own random stream, yet the same request must stay reproducible.
    if (sampling.seed !== undefined && i > 0) sampling.seed += i;
    const request: GenerateRequest = {
      requestId: plan.n === 1 ? requestId : `${requestId}-${i}`,
      promptIds: plan.promptIds,
      sampling,
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
    streams.push(ctx.engine.submit(request, signal)[Symbol.asyncIterator]());
  }
  // Pull each first event before committing to a status line: an engine that refuses lazily (on
  // the first next() rather than in submit()) still gets its 429/503/400 reported as such.
  const firsts = await Promise.all(streams.map((s) => s.next()));
  return streams.map((events, index) => ({ index, events, first: firsts[index]! }));
}

async function* eventsOf(c: Choice): AsyncGenerator<GenerateEvent> {
  let r = c.first;
  try {
    while (!r.done) {
      yield r.value;
      r = await c.events.next();
    }
  } finally {
    // The consumer stopped early (client gone): let the engine's iterator clean up too.
    if (!r.done) await c.events.return?.();
  }
}

async function collectResponse(plan: GenerationPlan, shape: Shaper, choices: Choice[], ctx: GenerationContext, res: ServerResponse): Promise<void> {
  const results = await Promise.all(
    choices.map(async (c) => {
      let text = plan.echoText ?? '';
      const lps: TokenLogprob[] = [];
      let finish: Finish | undefined;
      for await (const ev of eventsOf(c)) {
        if (ev.type === 'delta') {
          text += ev.text;
          if (ev.logprobs) lps.push(...ev.logprobs);
        } else finish = ev;
      }
      return { index: c.index, text, lps, finish };
    }),
  );
  if (ctx.signal.aborted) return; // nobody is listening
  const finishes: Finish[] = [];
  for (const r of results) {
    if (!r.finish) throw new ApiError(500, 'the engine ended the request without a finish event');
    if (r.finish.reason === 'error') throw finishError(r.finish);
    finishes.push(r.finish);
  }
  const out = results.map((r, i) => {
    const finish = finishes[i]!;
    const logprobs = plan.logprobs === undefined ? null : shape.logprobs(r.lps, plan.echoText?.length ?? 0);
    const stop = stopReason(finish, ctx.engine);
    return plan.kind === 'chat'
      ? {
          index: r.index,
          message: { role: 'assistant', content: r.text, refusal: null, annotations: null, audio: null, function_call: null, tool_calls: [], reasoning_content: null },
          logprobs,
          finish_reason: finish.reason,
          stop_reason: stop,
        }
      : { index: r.index, text: r.text, logprobs, finish_reason: finish.reason, stop_reason: stop, prompt_logprobs: null };
  });
  sendJson(res, 200, {
    id: shape.id,
    object: plan.kind === 'chat' ? 'chat.completion' : 'text_completion',
    created: shape.created,
    model: shape.model,
    choices: out,
    service_tier: null,
    system_fingerprint: null,
    usage: usageOf(finishes),
    prompt_logprobs: null,
    kv_transfer_params: finishes[0]!.kvTransferParams ?? null,
  });
}

async function streamResponse(
  plan: GenerationPlan,
  shape: Shaper,
  choices: Choice[],
  ctx: GenerationContext,
  res: ServerResponse,
  abortAll: () => void,
): Promise<void> {
  const sse = new SseWriter(res);
  sse.open();
  const promptTokens = plan.promptIds.length;
  let completionTokens = 0;
  const usage = () =>
    plan.continuousUsage ? { usage: { prompt_tokens: promptTokens, completion_tokens: completionTokens, total_tokens: promptTokens + completionTokens } } : {};
  // n choices produce concurrently; their chunks go out one whole event at a time.
  let queue = Promise.resolve();
  const emit = (value: object) => (queue = queue.then(() => sse.send(value)));

  const finishes: Finish[] = [];
  let failure: unknown;
  const pump = async (c: Choice) => {
    let textOffset = 0;
    if (plan.kind === 'chat') {
      await emit(shape.chunk({ index: c.index, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }, usage()));
    } else if (plan.echoText) {
      await emit(shape.chunk({ index: c.index, text: plan.echoText, logprobs: null, finish_reason: null, stop_reason: null }, usage()));
      textOffset = plan.echoText.length;
    }
    for await (const ev of eventsOf(c)) {
      if (res.destroyed || failure !== undefined) return;
      if (ev.type === 'finish') {
        if (ev.reason === 'error') throw finishError(ev);
        finishes.push(ev);
        const reason = stopReason(ev, ctx.engine);
        const choice =
          plan.kind === 'chat'
            ? { index: c.index, delta: {}, logprobs: null, finish_reason: ev.reason, stop_reason: reason }
            : { index: c.index, text: '', logprobs: null, finish_reason: ev.reason, stop_reason: reason };
        await emit(shape.chunk(choice, usage()));
        return;
      }
      completionTokens += ev.ids.length;
      const wantLogprobs = plan.logprobs !== undefined;
      // Stop strings hold text back, so a delta may carry ids but no text: skip it unless the
      // client is owed its logprobs.
      if (ev.text === '' && !wantLogprobs) continue;
      const logprobs = wantLogprobs ? shape.logprobs(ev.logprobs ?? [], textOffset) : null;
      for (const t of ev.logprobs ?? []) textOffset += t.token.length;
      const choice =
        plan.kind === 'chat'
          ? { index: c.index, delta: { content: ev.text }, logprobs, finish_reason: null }
          : { index: c.index, text: ev.text, logprobs, finish_reason: null, stop_reason: null };
      await emit(shape.chunk(choice, usage()));
    }
    throw new ApiError(500, 'the engine ended the request without a finish event');
  };
  await Promise.all(
    choices.map((c) =>
      pump(c).catch((err) => {
        failure ??= err;
        // One choice failed: the response is lost, so stop its siblings' work now.
        abortAll();
      }),
    ),
  );
  await queue;
  if (res.destroyed) return;
  // Headers are out: a failure travels in the stream, as vLLM reports it.
  if (failure !== undefined) await sse.send(errorEvent(failure));
  else if (plan.includeUsage) await sse.send({ ...shape.chunk(null), usage: usageOf(finishes) });
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

/** n choices share one prompt: it counts once, their completions add up (vLLM's accounting). */
function usageOf(finishes: Finish[]): Usage {
  const prompt = finishes[0]?.usage.promptTokens ?? 0;
  const completion = finishes.reduce((n, f) => n + f.usage.completionTokens, 0);
  return {
    prompt_tokens: prompt,
    total_tokens: prompt + completion,
    completion_tokens: completion,
    prompt_tokens_details: { cached_tokens: finishes[0]?.usage.cachedTokens ?? 0 },
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
