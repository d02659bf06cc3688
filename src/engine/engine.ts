// The serving engine: admission, the step loop (scheduler on this thread, model in a worker),
// and the output side (detokenization, stop conditions, streaming events, metrics).

import { randomUUID } from 'node:crypto';
import { Worker } from 'node:worker_threads';
import type { KvPoolLayout } from '../kernels/types.ts';
import type { ModelConfig } from '../model/types.ts';
import { createTokenizer } from '../tokenizer/index.ts';
import type { StreamDecoder, Tokenizer } from '../tokenizer/types.ts';
import {
  type Engine,
  EngineError,
  type EngineInfo,
  type EngineOptions,
  type FinishReason,
  type GenerateEvent,
  type GenerateRequest,
  type TokenLogprob,
} from './api.ts';
import { loadProfile, type GpuProfile } from './simulate.ts';
import { BlockPool, blockHashes, type BlockEvents } from './block-pool.ts';
import { Channel } from './channel.ts';
import { EngineMetrics } from './metrics.ts';
import { Scheduler, SeqState, type ExternalKvSource, type StepPlan } from './scheduler.ts';
import type { WireChunk, WorkerReply, WorkerRequest } from './worker-protocol.ts';
import type { KvConnector } from './pd.ts';
import type { KvStoreLink } from './kv-store-link.ts';
import type { KvEventPublisher } from './kv-events.ts';

/** A request in flight: its sequence state plus everything the output side needs. */
export class RequestContext {
  readonly channel = new Channel<GenerateEvent>();
  readonly decoder: StreamDecoder;
  /** decoded text not yet emitted (held back while it could be the start of a stop string) */
  pending = '';
  samplerStarted = false;
  firstTokenAt?: number;
  lastTokenAt?: number;
  /** finish hook for P/D leg 1: returns kv_transfer_params and takes over the blocks */
  onFinish?: (ctx: RequestContext, reason: FinishReason) => Record<string, unknown> | undefined;
  finished = false;
  /** aborted when the request ends for any reason: work on its behalf (e.g. a KV pull) stops */
  readonly cancelled = new AbortController();

  constructor(
    readonly req: GenerateRequest,
    readonly seq: SeqState,
    tokenizer: Tokenizer,
  ) {
    this.decoder = tokenizer.streamDecoder({ prefix: req.promptIds });
  }
}

class WorkerClient {
  private readonly worker: Worker;
  private nextSeq = 1;
  private readonly pending = new Map<number, { resolve: (r: WorkerReply) => void; reject: (e: Error) => void }>();
  private readyWaiter?: { resolve: (r: WorkerReply) => void; reject: (e: Error) => void };
  failed?: Error;

  constructor() {
    this.worker = new Worker(new URL('./worker-boot.mjs', import.meta.url));
    this.worker.on('message', (m: WorkerReply) => {
      if (m.type === 'ready') this.readyWaiter?.resolve(m);
      else if (m.type === 'result') {
        const p = this.pending.get(m.seq);
        this.pending.delete(m.seq);
        p?.resolve(m);
      } else if (m.type === 'error') {
        const err = Object.assign(new Error(m.message), { name: m.name, stack: m.stack });
        if (m.seq !== undefined && this.pending.has(m.seq)) {
          const p = this.pending.get(m.seq)!;
          this.pending.delete(m.seq);
          p.reject(err);
        } else this.readyWaiter?.reject(err);
      }
    });
    this.worker.on('error', (e) => this.fail(e));
    this.worker.on('exit', (code) => this.fail(new Error(`model worker exited with code ${code}`)));
  }

  private fail(e: Error): void {
    this.failed ??= e;
    this.readyWaiter?.reject(e);
    for (const p of this.pending.values()) p.reject(e);
    this.pending.clear();
  }

  init(msg: Extract<WorkerRequest, { type: 'init' }>): Promise<Extract<WorkerReply, { type: 'ready' }>> {
    return new Promise((resolve, reject) => {
      this.readyWaiter = { resolve: resolve as (r: WorkerReply) => void, reject };
      this.worker.postMessage(msg);
    });
  }

  step(chunks: WireChunk[], plannedAt: number): Promise<Extract<WorkerReply, { type: 'result' }>> {
    if (this.failed) return Promise.reject(this.failed);
    const seq = this.nextSeq++;
    return new Promise((resolve, reject) => {
      this.pending.set(seq, { resolve: resolve as (r: WorkerReply) => void, reject });
      this.worker.postMessage({ type: 'step', seq, chunks, sentAt: plannedAt } satisfies WorkerRequest);
    });
  }

  free(rids: string[]): void {
    if (rids.length && !this.failed) this.worker.postMessage({ type: 'free', rids } satisfies WorkerRequest);
  }

  async terminate(): Promise<void> {
    this.worker.removeAllListeners('exit');
    await this.worker.terminate();
  }
}

export interface EngineInternals {
  /** the GPU timing profile of a simulated engine (its pool has no KV memory behind it) */
  profile?: GpuProfile;
  memory: WebAssembly.Memory;
  pool: KvPoolLayout;
  config: ModelConfig;
  fingerprint: string;
  scheduler: Scheduler;
  blockPool: BlockPool;
  metrics: EngineMetrics;
  contexts: Map<string, RequestContext>;
}

export class TandemEngine implements Engine {
  info!: EngineInfo;
  tokenizer!: Tokenizer;
  chatTemplate?: string;
  internals!: EngineInternals;
  metrics!: EngineMetrics;
  /** extension points used by the KV connector and KV store */
  readonly blockEvents: BlockEvents = {};
  private connector?: KvConnector;
  private storeLink?: KvStoreLink;
  kvEvents?: KvEventPublisher;

  private worker = new WorkerClient();
  private scheduler!: Scheduler;
  private readonly contexts = new Map<string, RequestContext>();
  private readonly bySeq = new Map<SeqState, RequestContext>();
  private looping = false;
  private wakeUp?: () => void;
  private draining = false;
  private closed = false;
  private prefillRate = 0;

  private constructor(readonly opts: EngineOptions) {}

  static async create(opts: EngineOptions): Promise<TandemEngine> {
    const e = new TandemEngine(opts);
    await e.init();
    return e;
  }

  private async init(): Promise<void> {
    const o = this.opts;
    const profile = o.simulate !== undefined ? loadProfile(o.simulate) : undefined;
    let ready;
    try {
      ready = await this.worker.init({
        type: 'init',
        model: o.model,
        tokenizer: o.tokenizer,
        kernels: o.kernels,
        blockSize: o.blockSize,
        numBlocks: o.numBlocks,
        kvCacheMemoryBytes: o.kvCacheMemoryBytes,
        kvDtype: o.kvCacheDtype,
        maxModelLen: o.maxModelLen,
        simulate: profile,
      });
    } catch (err) {
      await this.worker.terminate();
      throw err;
    }
    this.tokenizer = createTokenizer(ready.tokenizer);
    this.chatTemplate = ready.chatTemplate;
    const name = o.servedModelName ?? ready.name;
    this.metrics = new EngineMetrics(name);
    const blockPool = new BlockPool(ready.pool.numBlocks, o.prefixCaching, {
      stored: (e) => this.blockEvents.stored?.(e),
      removed: (h) => this.blockEvents.removed?.(h),
    });
    this.scheduler = new Scheduler(
      { blockSize: o.blockSize, maxNumSeqs: o.maxNumSeqs, maxNumBatchedTokens: o.maxNumBatchedTokens },
      blockPool,
    );
    this.info = {
      modelName: name,
      maxModelLen: ready.config.contextLength,
      role: o.role,
      blockSize: o.blockSize,
      numBlocks: ready.pool.numBlocks,
      kvDtype: o.kvCacheDtype,
      engineId: randomUUID(),
      prefixCaching: o.prefixCaching,
      simulated: profile?.name,
      kvBytesPerToken:
        profile?.kvBytesPerToken ?? ready.config.nLayers * 2 * ready.config.nKvHeads * ready.config.headDim * (o.kvCacheDtype === 'f16' ? 2 : 4),
    };
    this.internals = {
      profile,
      memory: ready.memory,
      pool: ready.pool,
      config: ready.config,
      fingerprint: ready.fingerprint,
      scheduler: this.scheduler,
      blockPool,
      metrics: this.metrics,
      contexts: this.contexts,
    };
    const m = this.metrics;
    m.cacheConfig.set(
      {
        model_name: name,
        block_size: String(o.blockSize),
        num_gpu_blocks: String(ready.pool.numBlocks),
        cache_dtype: o.kvCacheDtype,
        enable_prefix_caching: String(o.prefixCaching),
      },
      1,
    );
    this.updateGauges();
  }

  submit(req: GenerateRequest, signal?: AbortSignal): AsyncIterable<GenerateEvent> {
    if (this.draining || this.closed) throw new EngineError(503, 'The engine is shutting down.');
    if (this.worker.failed) throw new EngineError(503, `The model worker failed: ${this.worker.failed.message}`);
    const maxLen = this.info.maxModelLen;
    const n = req.promptIds.length;
    if (n === 0) throw new EngineError(400, 'The prompt is empty.', 'invalid_request_error', 'prompt');
    if (!Number.isInteger(req.maxTokens) || req.maxTokens < 1)
      throw new EngineError(400, 'max_tokens must be at least 1.', 'invalid_request_error', 'max_tokens');
    if (n + req.maxTokens > maxLen) {
      throw new EngineError(
        400,
        `This model's maximum context length is ${maxLen} tokens. However, you requested ${n + req.maxTokens} tokens ` +
          `(${n} in the messages, ${req.maxTokens} in the completion). Please reduce the length of the messages or completion.`,
        'invalid_request_error',
        'max_tokens',
      );
    }
    const vocab = this.internals.config.vocabSize;
    for (const id of req.promptIds) {
      if (!Number.isInteger(id) || id < 0 || id >= vocab)
        throw new EngineError(400, `Token id ${id} is out of vocabulary (size ${vocab}).`, 'invalid_request_error', 'prompt');
    }
    if (this.scheduler.blocksFor(n + req.maxTokens) > this.info.numBlocks) {
      throw new EngineError(
        400,
        `The request needs ${this.scheduler.blocksFor(n + req.maxTokens)} KV blocks but the cache has only ${this.info.numBlocks}; ` +
          'reduce the prompt or max_tokens.',
        'invalid_request_error',
        'max_tokens',
      );
    }
    if (this.scheduler.waiting.length >= this.opts.maxWaiting) {
      throw new EngineError(429, `The waiting queue is full (${this.opts.maxWaiting} requests); retry later.`, 'rate_limit_exceeded', null, 1);
    }
    let rid = req.requestId;
    if (this.contexts.has(rid)) rid = `${rid}-${randomUUID().slice(0, 8)}`;
    const seq = new SeqState(rid, req.promptIds, req.maxTokens, req.cacheSalt);
    const ctx = new RequestContext({ ...req, requestId: rid }, seq, this.tokenizer);
    this.contexts.set(rid, ctx);
    this.bySeq.set(seq, ctx);
    if (signal) {
      if (signal.aborted) queueMicrotask(() => this.abort(ctx));
      else signal.addEventListener('abort', () => this.abort(ctx), { once: true });
    }
    this.connector?.admit(ctx);
    this.storeLink?.admit(ctx);
    this.scheduler.add(seq);
    this.updateGauges();
    this.kick();
    return ctx.channel;
  }

  /** P/D leg 2 refused before admission: the prefill engine need not keep the KV it leased for it. */
  declineRemoteKv(kvTransferParams: Record<string, unknown>): void {
    this.connector?.decline(kvTransferParams);
  }

  /** P/D: the KV connector takes part in admission (leg 1 leases, leg 2 pulls). */
  attachConnector(c: KvConnector): void {
    this.connector = c;
    this.wireExternalSources();
  }

  /** KV events: block pool changes go out as vLLM BlockStored/BlockRemoved events with medium GPU. */
  attachKvEvents(pub: KvEventPublisher): void {
    this.kvEvents = pub;
    this.blockEvents.stored = (e) => pub.blockStored(e.hashes, e.parentHash, e.tokenIds, e.blockSize, 'GPU');
    this.blockEvents.removed = (h) => pub.blockRemoved(h, 'GPU');
  }

  /** The HTTP address routers know this engine by (the KV-event topic names it). */
  setAdvertisedAddress(host: string, port: number): void {
    if (this.kvEvents) this.kvEvents.topic = `kv@${host}:${port}@${this.info.modelName}`;
  }

  /** KV store: loads on prefix misses, saves finished prefills. */
  attachKvStore(link: KvStoreLink): void {
    this.storeLink = link;
    this.wireExternalSources();
  }

  /** Sources of KV from outside the block pool, asked in order (as vLLM's MultiConnector): the first that can
   * supply tokens loads them. A remote prefill (P/D) comes first; the KV store second. */
  private wireExternalSources(): void {
    const sources = [this.connector, this.storeLink].filter((x): x is KvConnector | KvStoreLink => x !== undefined);
    const chosen = new WeakMap<SeqState, ExternalKvSource>();
    this.scheduler.external = {
      match: (seq, numComputed) => {
        for (const src of sources) {
          const n = src.match(seq, numComputed);
          if (n === null) return null;
          if (n > 0) {
            chosen.set(seq, src);
            return n;
          }
        }
        return 0;
      },
      load: (seq, start, count, done) => chosen.get(seq)!.load(seq, start, count, done),
    };
  }

  /** Resolves when every KV store write queued so far has reached its tier. */
  async flushKvStore(): Promise<void> {
    await this.storeLink?.store.flush();
  }

  /** Tokens of this prompt's prefix held in the block pool (GPU) and in each KV store tier. */
  async kvLookup(promptIds: number[], cacheSalt?: string): Promise<{ tokens: number; perTier: Record<string, number> }> {
    const bs = this.info.blockSize;
    let gpu = 0;
    for (const h of blockHashes(promptIds, bs, cacheSalt)) {
      if (!this.internals.blockPool.lookup(h)) break;
      gpu += bs;
    }
    const perTier: Record<string, number> = { GPU: gpu };
    let best = gpu;
    if (this.storeLink) {
      const s = await this.storeLink.lookup(promptIds, cacheSalt);
      for (const [k, v] of Object.entries(s.perTier)) if (k !== 'GPU') perTier[k] = v;
      best = Math.max(best, s.tokens);
    }
    return { tokens: best, perTier };
  }

  /** Abort a request: its blocks are released at once. */
  abort(ctx: RequestContext): void {
    if (ctx.finished) return;
    this.finishRequest(ctx, 'abort');
    this.kick();
  }

  /** Wake the step loop (new work, a finished load, released blocks). */
  kick(): void {
    if (this.wakeUp) {
      const w = this.wakeUp;
      this.wakeUp = undefined;
      w();
    }
    if (!this.looping) void this.loop();
  }

  private async loop(): Promise<void> {
    this.looping = true;
    try {
      while (!this.closed && this.scheduler.hasWork) {
        const plan = this.scheduler.schedule();
        if (plan.preempted.length) this.metrics.preemptions.inc(this.metrics.labels(), plan.preempted.length);
        this.updateGauges();
        if (plan.chunks.length === 0) {
          // Nothing can run now (e.g. every request is waiting on a KV load or on blocks under lease).
          await new Promise<void>((resolve) => {
            this.wakeUp = resolve;
            setTimeout(resolve, 50).unref();
          });
          continue;
        }
        await this.runStep(plan);
      }
    } catch (err) {
      // The worker died or a step failed: fail every request explicitly rather than hang.
      const e = err as Error;
      for (const ctx of [...this.contexts.values()]) this.finishRequest(ctx, 'error', { status: 500, message: `engine failure: ${e.message}` });
    } finally {
      this.looping = false;
      this.updateGauges();
    }
  }

  private async runStep(plan: StepPlan): Promise<void> {
    const plannedAt = performance.timeOrigin + performance.now();
    const wire: WireChunk[] = [];
    let prefillTokens = 0;
    let decodeRows = 0;
    for (const ch of plan.chunks) {
      const ctx = this.bySeq.get(ch.seq)!;
      const seq = ch.seq;
      const w: WireChunk = {
        rid: seq.id,
        tokens: seq.tokens.slice(ch.start, ch.start + ch.count),
        start: ch.start,
        blockTable: seq.blocks.map((b) => b.id),
        wantLogits: ch.sample,
      };
      if (ch.start < seq.numPromptTokens) prefillTokens += Math.min(ch.count, seq.numPromptTokens - ch.start);
      else decodeRows++;
      if (ch.sample) {
        const r = ctx.req;
        const minTokens = r.minTokens ?? 0;
        w.sample = {
          params: r.sampling,
          seed: r.sampling.seed ?? hashSeed(seq.id),
          logprobs: r.logprobs,
          banned: seq.numOutputTokens < minTokens ? [...this.tokenizer.stopIds, ...(r.stopTokenIds ?? [])] : undefined,
        };
        if (!ctx.samplerStarted) {
          w.sample.promptIds = r.promptIds;
          ctx.samplerStarted = true;
        }
      }
      wire.push(w);
    }
    const res = await this.worker.step(wire, plannedAt);
    // The prefill rate routers read: only from steps that are mostly prefill. A few tokens measure the
    // step's fixed cost, and decode rows in the step are not prompt work.
    if (prefillTokens >= 64 && decodeRows * 16 <= prefillTokens && res.ms > 0) {
      const rate = prefillTokens / (res.ms / 1000);
      this.prefillRate = this.prefillRate ? 0.8 * this.prefillRate + 0.2 * rate : rate;
      this.metrics.prefillRate.set(this.metrics.labels(), this.prefillRate);
    }
    this.metrics.promptTokens.inc(this.metrics.labels(), prefillTokens);
    const sampled = new Map<SeqState, number>();
    const lps = new Map<SeqState, TokenLogprob | undefined>();
    const byRid = new Map(res.results.map((r) => [r.rid, r]));
    for (const ch of plan.chunks) {
      if (!ch.sample) continue;
      const r = byRid.get(ch.seq.id);
      if (r) {
        sampled.set(ch.seq, r.id);
        lps.set(ch.seq, r.logprob);
      }
    }
    this.scheduler.commit(plan, sampled);
    this.syncPrefixMetrics();
    this.storeLink?.afterStep(plan.chunks.map((c) => c.seq));
    for (const [seq, id] of sampled) {
      const ctx = this.bySeq.get(seq);
      if (ctx && !ctx.finished) this.onToken(ctx, id, lps.get(seq));
    }
  }

  private lastQueries = 0;
  private lastHits = 0;
  private syncPrefixMetrics(): void {
    const s = this.scheduler;
    if (s.prefixQueries > this.lastQueries) this.metrics.prefixQueries.inc(this.metrics.labels(), s.prefixQueries - this.lastQueries);
    if (s.prefixHits > this.lastHits) this.metrics.prefixHits.inc(this.metrics.labels(), s.prefixHits - this.lastHits);
    this.lastQueries = s.prefixQueries;
    this.lastHits = s.prefixHits;
  }

  private onToken(ctx: RequestContext, id: number, logprob?: TokenLogprob): void {
    const now = performance.now();
    const m = this.metrics;
    const L = m.labels();
    m.generationTokens.inc(L);
    if (ctx.firstTokenAt === undefined) {
      ctx.firstTokenAt = now;
      m.ttft.observe(L, (now - ctx.seq.arrival) / 1000);
    } else m.itl.observe(L, (now - ctx.lastTokenAt!) / 1000);
    ctx.lastTokenAt = now;

    const r = ctx.req;
    const seq = ctx.seq;
    const nOut = seq.numOutputTokens;
    if (logprob) {
      logprob.token = this.tokenizer.piece(logprob.id);
      for (const t of logprob.top) t.token = this.tokenizer.piece(t.id);
    }
    const minOk = nOut >= (r.minTokens ?? 0);
    const isEos = !r.ignoreEos && this.tokenizer.stopIds.includes(id);
    const isStopId = r.stopTokenIds?.includes(id) ?? false;
    if (minOk && (isEos || isStopId)) {
      // the stop token itself is not part of the text
      const text = ctx.pending + ctx.decoder.flush();
      ctx.pending = '';
      ctx.channel.push({ type: 'delta', ids: [id], text, logprobs: logprob ? [logprob] : undefined });
      this.finishRequest(ctx, 'stop', undefined, id);
      return;
    }
    ctx.pending += ctx.decoder.push(id);
    let text: string;
    let stopHit: string | undefined;
    const stops = r.stop ?? [];
    if (stops.length && minOk) {
      let at = -1;
      for (const s of stops) {
        if (!s) continue;
        const i = ctx.pending.indexOf(s);
        if (i >= 0 && (at < 0 || i < at)) {
          at = i;
          stopHit = s;
        }
      }
      if (stopHit !== undefined) {
        text = ctx.pending.slice(0, at + (r.includeStopStrInOutput ? stopHit.length : 0));
        ctx.pending = '';
      } else {
        // Hold back the longest tail that could still grow into a stop string.
        let hold = 0;
        for (const s of stops) {
          for (let k = Math.min(s.length - 1, ctx.pending.length); k > hold; k--) {
            if (ctx.pending.endsWith(s.slice(0, k))) {
              hold = k;
              break;
            }
          }
        }
        text = ctx.pending.slice(0, ctx.pending.length - hold);
        ctx.pending = ctx.pending.slice(ctx.pending.length - hold);
      }
    } else {
      text = ctx.pending;
      ctx.pending = '';
    }
    const lengthDone = nOut >= seq.maxTokens || seq.tokens.length >= this.info.maxModelLen;
    if (stopHit === undefined && lengthDone) {
      text += ctx.pending + ctx.decoder.flush();
      ctx.pending = '';
    }
    ctx.channel.push({ type: 'delta', ids: [id], text, logprobs: logprob ? [logprob] : undefined });
    if (stopHit !== undefined) this.finishRequest(ctx, 'stop', undefined, stopHit);
    else if (lengthDone) this.finishRequest(ctx, 'length');
  }

  finishRequest(ctx: RequestContext, reason: FinishReason, error?: { status: number; message: string }, stopReason?: string | number): void {
    if (ctx.finished) return;
    ctx.finished = true;
    ctx.cancelled.abort();
    const seq = ctx.seq;
    let kvTransferParams: Record<string, unknown> | undefined;
    try {
      kvTransferParams = ctx.onFinish?.(ctx, reason);
    } catch (err) {
      kvTransferParams = undefined;
      console.error(`tandem: finish hook failed for ${seq.id}: ${(err as Error).message}`);
    }
    this.scheduler.finish(seq);
    this.contexts.delete(seq.id);
    this.bySeq.delete(seq);
    this.worker.free([seq.id]);
    const now = performance.now();
    const m = this.metrics;
    const L = m.labels();
    if (reason === 'stop' || reason === 'length' || reason === 'abort') {
      m.success.inc({ model_name: m.modelName, finished_reason: reason });
    }
    if (reason !== 'error') {
      m.e2e.observe(L, (now - seq.arrival) / 1000);
      if (seq.firstScheduled !== undefined) m.queueTime.observe(L, (seq.firstScheduled - seq.arrival) / 1000);
      if (ctx.firstTokenAt !== undefined && seq.firstScheduled !== undefined) {
        m.prefillTime.observe(L, (ctx.firstTokenAt - seq.firstScheduled) / 1000);
        m.decodeTime.observe(L, (now - ctx.firstTokenAt) / 1000);
      }
    }
    ctx.channel.push({
      type: 'finish',
      reason,
      stopReason,
      usage: {
        promptTokens: seq.numPromptTokens,
        completionTokens: seq.numOutputTokens,
        cachedTokens: Math.max(0, seq.numCachedTokens) + seq.numExternalTokens,
      },
      kvTransferParams,
      error,
    });
    ctx.channel.end();
    this.updateGauges();
  }

  /** Grows whenever the engine's own metrics may have changed (every step, admission and finish end in updateGauges). */
  metricsVersion = 0;

  updateGauges(): void {
    this.metricsVersion++;
    if (!this.metrics) return;
    const L = this.metrics.labels();
    const s = this.scheduler;
    this.metrics.running.set(L, s.running.length);
    this.metrics.waiting.set(L, s.waiting.length);
    this.metrics.kvUsage.set(L, this.internals.blockPool.usage);
  }

  async drain(timeoutMs: number): Promise<void> {
    this.draining = true;
    const deadline = Date.now() + timeoutMs;
    while (this.contexts.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    for (const ctx of [...this.contexts.values()]) this.finishRequest(ctx, 'abort');
  }

  get isDraining(): boolean {
    return this.draining;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.draining = true;
    for (const ctx of [...this.contexts.values()]) this.finishRequest(ctx, 'abort');
    this.closed = true;
    this.kick();
    await this.connector?.close();
    await this.storeLink?.store.close();
    await this.kvEvents?.close();
    await this.worker.terminate();
  }
}

/** A per-request seed when the client gave none: derived from the request id, so a retry with the same id is reproducible. */
function hashSeed(id: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < id.length; i++) h = Math.imul(h ^ id.charCodeAt(i), 0x01000193);
  return h >>> 0;
}
