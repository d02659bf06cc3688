// A small deterministic Engine for testing the HTTP layer on its own: it "generates" by echoing the
// prompt's bytes back, one token per tick, and honours the contract's admission rules (400/429/503),
// maxTokens, minTokens, stop strings, stop token ids, EOS, logprobs, abort and drain.

import { EngineError, type Engine, type EngineInfo, type GenerateEvent, type GenerateRequest } from '../../src/engine/api.ts';
import type { StreamDecoder, Tokenizer } from '../../src/tokenizer/types.ts';

/** Byte-level tokenizer: id = byte + 3; 0 unk, 1 BOS "<s>", 2 EOS "</s>". */
export class ByteTokenizer implements Tokenizer {
  readonly vocabSize = 259;
  readonly bos = 1;
  readonly eos = 2;
  readonly stopIds = [2];

  encode(text: string, opts: { addBos?: boolean; parseSpecial?: boolean } = {}): number[] {
    const ids: number[] = [];
    if (opts.addBos ?? true) ids.push(this.bos);
    let rest = text;
    while (rest.length > 0) {
      if (opts.parseSpecial && rest.startsWith('</s>')) {
        ids.push(this.eos);
        rest = rest.slice(4);
        continue;
      }
      if (opts.parseSpecial && rest.startsWith('<s>')) {
        ids.push(this.bos);
        rest = rest.slice(3);
        continue;
      }
      const cp = rest.codePointAt(0)!;
      const ch = String.fromCodePoint(cp);
      for (const b of Buffer.from(ch, 'utf8')) ids.push(b + 3);
      rest = rest.slice(ch.length);
    }
    return ids;
  }

  decode(ids: readonly number[], opts: { keepSpecial?: boolean } = {}): string {
    const d = this.streamDecoder(opts);
    let s = '';
    for (const id of ids) s += d.push(id);
    return s + d.flush();
  }

  streamDecoder(opts: { keepSpecial?: boolean } = {}): StreamDecoder {
    const td = new TextDecoder('utf-8');
    return {
      push: (id: number) => {
        if (id < 3) return opts.keepSpecial ? td.decode() + this.piece(id) : '';
        return td.decode(Uint8Array.of(id - 3), { stream: true });
      },
      flush: () => td.decode(),
    };
  }

  piece(id: number): string {
    if (id === 0) return '<unk>';
    if (id === 1) return '<s>';
    if (id === 2) return '</s>';
    const b = id - 3;
    return b < 0x80 ? String.fromCharCode(b) : `<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`;
  }
}

export interface FakeEngineOptions {
  maxModelLen?: number;
  /** ms between tokens (0 = as fast as possible, still asynchronous) */
  tokenDelayMs?: number;
  /** requests generating at once; more wait in the queue */
  maxRunning?: number;
  /** waiting requests beyond this → 429 */
  maxWaiting?: number;
  chatTemplate?: string;
  /** requests whose prompt contains this text finish with reason 'error' */
  failOn?: string;
  /** throw the admission error on the first next() instead of from submit() */
  lazyRefusal?: boolean;
  kvTransferParams?: Record<string, unknown>;
}

export class FakeEngine implements Engine {
  readonly tokenizer = new ByteTokenizer();
  readonly info: EngineInfo;
  readonly chatTemplate?: string;
  /** every request submitted, as the engine saw it */
  readonly submitted: GenerateRequest[] = [];
  /** ids of requests that ended by abort */
  readonly aborted: string[] = [];
  running = 0;
  waiting = 0;
  private draining = false;
  private readonly seenPrompts: { salt: string | undefined; ids: number[] }[] = [];
  private readonly slotFreed: (() => void)[] = [];

  constructor(private readonly opts: FakeEngineOptions = {}) {
    this.chatTemplate = opts.chatTemplate;
    this.info = {
      modelName: 'fake-echo',
      maxModelLen: opts.maxModelLen ?? 256,
      role: 'both',
      blockSize: 4,
      numBlocks: 64,
      kvDtype: 'f32',
      engineId: 'fake-engine-1',
      prefixCaching: true,
      kvBytesPerToken: 1024,
    };
  }

  submit(req: GenerateRequest, signal?: AbortSignal): AsyncIterable<GenerateEvent> {
    const refusal = this.admission(req);
    if (refusal && !this.opts.lazyRefusal) throw refusal;
    this.submitted.push(req);
    return this.run(req, refusal, signal);
  }

  private admission(req: GenerateRequest): EngineError | undefined {
    if (this.draining) return new EngineError(503, 'engine is draining');
    if (req.promptIds.length + req.maxTokens > this.info.maxModelLen) return new EngineError(400, 'too long');
    const maxRunning = this.opts.maxRunning ?? Infinity;
    if (this.running >= maxRunning && this.waiting >= (this.opts.maxWaiting ?? Infinity)) {
      return new EngineError(429, 'waiting queue is full', undefined, null, 2);
    }
    return undefined;
  }

  private async *run(req: GenerateRequest, refusal: EngineError | undefined, signal?: AbortSignal): AsyncGenerator<GenerateEvent> {
    if (refusal) throw refusal;
    const maxRunning = this.opts.maxRunning ?? Infinity;
    this.waiting++;
    while (this.running >= maxRunning) await new Promise<void>((r) => this.slotFreed.push(r));
    this.waiting--;
    this.running++;
    try {
      yield* this.generate(req, signal);
    } finally {
      this.running--;
      this.slotFreed.shift()?.();
    }
  }

  private async *generate(req: GenerateRequest, signal?: AbortSignal): AsyncGenerator<GenerateEvent> {
    const cachedTokens = this.cachedPrefix(req);
    const usage = (n: number) => ({ promptTokens: req.promptIds.length, completionTokens: n, cachedTokens });
    const tok = this.tokenizer;
    if (this.opts.failOn && tok.decode(req.promptIds).includes(this.opts.failOn)) {
      yield { type: 'finish', reason: 'error', usage: usage(0), error: { status: 500, message: 'model runner failed' } };
      return;
    }
    // Echo the prompt without BOS, cycling; a BOS in the prompt is echoed as EOS so tests can make EOS appear.
    const source = req.promptIds.filter((_, i) => i > 0 || req.promptIds[0] !== tok.bos).map((t) => (t === tok.bos ? tok.eos : t));
    if (source.length === 0) source.push(tok.eos);
    const decoder = tok.streamDecoder();
    let text = '';
    let emitted = 0; // chars of `text` already sent
    const stops = req.stop ?? [];
    const holdBack = Math.max(0, ...stops.map((s) => s.length - 1));
    for (let n = 0; ; ) {
      if (signal?.aborted) {
        this.aborted.push(req.requestId);
        yield { type: 'finish', reason: 'abort', usage: usage(n) };
        return;
      }
      await new Promise((r) => setTimeout(r, this.opts.tokenDelayMs ?? 0));
      if (signal?.aborted) continue;
      const id = source[n % source.length]!;
      n++;
      const lp =
        req.logprobs === undefined
          ? undefined
          : [{ id, token: tok.piece(id), logprob: -0.5, top: [...Array(req.logprobs)].map((_, k) => ({ id: 3 + 97 + k, token: tok.piece(3 + 97 + k), logprob: -1 - k })) }];
      const minDone = n > (req.minTokens ?? 0);
      if (minDone && !req.ignoreEos && id === tok.eos) {
        yield { type: 'delta', ids: [id], text: text.slice(emitted), logprobs: lp };
        yield { type: 'finish', reason: 'stop', stopReason: id, usage: usage(n) };
        return;
      }
      if (minDone && req.stopTokenIds?.includes(id)) {
        yield { type: 'delta', ids: [id], text: text.slice(emitted), logprobs: lp };
        yield { type: 'finish', reason: 'stop', stopReason: id, usage: usage(n) };
        return;
      }
      text += decoder.push(id);
      const hit = minDone ? stops.map((s) => ({ s, at: text.indexOf(s) })).find((x) => x.at >= 0) : undefined;
      if (hit) {
        const end = req.includeStopStrInOutput ? hit.at + hit.s.length : hit.at;
        yield { type: 'delta', ids: [id], text: text.slice(emitted, Math.max(emitted, end)), logprobs: lp };
        yield { type: 'finish', reason: 'stop', stopReason: hit.s, usage: usage(n) };
        return;
      }
      if (n >= req.maxTokens) {
        text += decoder.flush();
        yield { type: 'delta', ids: [id], text: text.slice(emitted), logprobs: lp };
        const finish: GenerateEvent = { type: 'finish', reason: 'length', usage: usage(n) };
        if (this.opts.kvTransferParams && req.kvTransferParams) finish.kvTransferParams = this.opts.kvTransferParams;
        yield finish;
        return;
      }
      const safe = Math.max(emitted, text.length - holdBack);
      yield { type: 'delta', ids: [id], text: text.slice(emitted, safe), logprobs: lp };
      emitted = safe;
    }
  }

  /** prefix caching in miniature: whole 4-token blocks shared with an earlier prompt of the same salt */
  private cachedPrefix(req: GenerateRequest): number {
    let best = 0;
    for (const p of this.seenPrompts) {
      if (p.salt !== req.cacheSalt) continue;
      let i = 0;
      while (i < p.ids.length && i < req.promptIds.length && p.ids[i] === req.promptIds[i]) i++;
      best = Math.max(best, i);
    }
    this.seenPrompts.push({ salt: req.cacheSalt, ids: req.promptIds });
    return Math.min(Math.floor(best / this.info.blockSize) * this.info.blockSize, req.promptIds.length - 1);
  }

  async drain(timeoutMs: number): Promise<void> {
    this.draining = true;
    const deadline = Date.now() + timeoutMs;
    while ((this.running > 0 || this.waiting > 0) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
  }

  async close(): Promise<void> {
    this.draining = true;
  }
}
