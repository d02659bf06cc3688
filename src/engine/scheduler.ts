// Continuous batching. Each step the scheduler builds one batch: every running request gets its
// next token(s) — one for decodes, a chunk for prefills still in progress — then waiting requests
// are admitted first-come first-served while the token budget (max_num_batched_tokens) and the
// sequence limit (max_num_seqs) allow. When blocks run out, the newest running request is
// preempted: its blocks are released and it is recomputed later (its cached prefix usually
// survives, so recomputation is cheap).
//
// The scheduler never touches tensors: it emits a plain StepPlan that the model runner executes,
// and takes back the sampled token per request (vLLM v1's SchedulerOutput / ModelRunnerOutput).

import { type Block, BlockPool, blockHashes } from './block-pool.ts';

export type RequestStatus = 'waiting' | 'loading' | 'running' | 'finished';

export class SeqState {
  status: RequestStatus = 'waiting';
  /** prompt + generated ids */
  readonly tokens: number[];
  readonly numPromptTokens: number;
  /** tokens whose KV is in the blocks */
  numComputed = 0;
  blocks: Block[] = [];
  hashes: string[] = [];
  /** prefix tokens found in the block pool cache at first admission (for usage.cached_tokens) */
  numCachedTokens = -1;
  /** tokens supplied from outside (KV connector / KV store) at admission */
  numExternalTokens = 0;
  numPreemptions = 0;
  readonly arrival: number;
  firstScheduled?: number;

  constructor(
    readonly id: string,
    promptIds: readonly number[],
    readonly maxTokens: number,
    readonly cacheSalt?: string,
  ) {
    this.tokens = promptIds.slice();
    this.numPromptTokens = promptIds.length;
    this.arrival = performance.now();
  }

  get numOutputTokens(): number {
    return this.tokens.length - this.numPromptTokens;
  }
}

export interface PlannedChunk {
  seq: SeqState;
  start: number;
  count: number;
  /** the chunk ends at the last known token: the runner samples the next token */
  sample: boolean;
}

export interface StepPlan {
  chunks: PlannedChunk[];
  preempted: SeqState[];
  numTokens: number;
}

export interface SchedulerConfig {
  blockSize: number;
  maxNumSeqs: number;
  maxNumBatchedTokens: number;
}

/** Hook for externally supplied KV (P/D pull, KV store). Asked once per admission; may claim that
 * tokens beyond the local prefix-cache hit can be loaded. The load runs between steps (status 'loading'). */
export interface ExternalKvSource {
  /** how many tokens starting at `numComputed` can be loaded for this sequence (0 = none;
   * null = not known yet, ask again on a later step — as vLLM's get_num_new_matched_tokens) */
  match(seq: SeqState, numComputed: number): number | null;
  /** start loading into the sequence's blocks; call done(ok) when finished */
  load(seq: SeqState, start: number, count: number, done: (loadedTokens: number) => void): void;
}

export class Scheduler {
  readonly waiting: SeqState[] = [];
  readonly running: SeqState[] = [];
  private readonly loading = new Set<SeqState>();
  numPreemptions = 0;
  prefixQueries = 0;
  prefixHits = 0;
  external?: ExternalKvSource;

  constructor(
    readonly config: SchedulerConfig,
    readonly pool: BlockPool,
  ) {}

  add(seq: SeqState): void {
    this.waiting.push(seq);
  }

  get hasWork(): boolean {
    return this.waiting.length > 0 || this.running.length > 0;
  }

  /** Blocks needed to hold `n` tokens. */
  blocksFor(n: number): number {
    return Math.ceil(n / this.config.blockSize);
  }

  schedule(): StepPlan {
    const plan: StepPlan = { chunks: [], preempted: [], numTokens: 0 };
    let budget = this.config.maxNumBatchedTokens;

    // 1. running requests, oldest first
    for (let i = 0; i < this.running.length && budget > 0; i++) {
      const seq = this.running[i]!;
      const want = Math.min(seq.tokens.length - seq.numComputed, budget);
      if (want <= 0) continue;
      let ok = this.grow(seq, seq.numComputed + want);
      while (!ok) {
        // preempt the newest running request (possibly this one)
        const victim = this.running[this.running.length - 1]!;
        this.preempt(victim);
        plan.preempted.push(victim);
        if (victim === seq) break;
        ok = this.grow(seq, seq.numComputed + want);
      }
      if (!ok) break;
      plan.chunks.push({ seq, start: seq.numComputed, count: want, sample: seq.numComputed + want === seq.tokens.length });
      budget -= want;
    }

    // 2. waiting requests, first come first served (no skipping: a request that doesn't fit blocks the queue)
    while (budget > 0 && plan.preempted.length === 0 && this.waiting.length > 0 && this.running.length < this.config.maxNumSeqs) {
      const seq = this.waiting[0]!;
      if (seq.numComputed === 0 && seq.blocks.length === 0) this.matchPrefix(seq);
      // External KV (P/D pull or KV store) for tokens past the local hit.
      if (this.external && seq.numExternalTokens === 0 && seq.numPreemptions === 0) {
        const n = this.external.match(seq, seq.numComputed);
        if (n === null) {
          this.unmatch(seq);
          break;
        }
        if (n > 0) {
          if (!this.grow(seq, seq.numComputed + n)) {
            this.unmatch(seq);
            break;
          }
          this.waiting.shift();
          seq.status = 'loading';
          seq.numExternalTokens = n;
          this.loading.add(seq);
          const start = seq.numComputed;
          this.external.load(seq, start, n, (loaded) => this.loadDone(seq, start, loaded));
          continue;
        }
      }
      const want = Math.min(seq.tokens.length - seq.numComputed, budget);
      if (!this.grow(seq, seq.numComputed + want)) {
        this.unmatch(seq);
        break;
      }
      this.waiting.shift();
      seq.status = 'running';
      seq.firstScheduled ??= performance.now();
      this.running.push(seq);
      plan.chunks.push({ seq, start: seq.numComputed, count: want, sample: seq.numComputed + want === seq.tokens.length });
      budget -= want;
    }
    plan.numTokens = this.config.maxNumBatchedTokens - budget;
    return plan;
  }

  /** Apply a step's results: computed tokens now have KV; sampled ids extend their sequences. */
  commit(plan: StepPlan, sampled: Map<SeqState, number>): void {
    for (const ch of plan.chunks) {
      const seq = ch.seq;
      if (seq.status !== 'running') continue; // finished/aborted meanwhile
      seq.numComputed = ch.start + ch.count;
      const id = sampled.get(seq);
      if (id !== undefined) seq.tokens.push(id);
      this.cacheFullBlocks(seq);
    }
  }

  /** Remove a sequence (finished or aborted) and release its blocks. */
  finish(seq: SeqState): void {
    if (seq.status === 'finished') return;
    const wasLoading = seq.status === 'loading';
    seq.status = 'finished';
    remove(this.running, seq);
    remove(this.waiting, seq);
    this.loading.delete(seq);
    // A sequence still loading keeps its blocks until the load callback returns (the transfer
    // writes into them); loadDone releases them then.
    if (!wasLoading) this.releaseBlocks(seq);
  }

  private loadDone(seq: SeqState, start: number, loaded: number): void {
    this.loading.delete(seq);
    if (seq.status === 'finished') {
      this.releaseBlocks(seq);
      return;
    }
    // Keep what arrived (whole prefix up to start+loaded); the rest is computed normally.
    // Never count the last token as loaded: it must run through the model to produce logits.
    const upTo = Math.min(start + loaded, seq.tokens.length - 1);
    seq.numComputed = Math.max(seq.numComputed, upTo);
    seq.numExternalTokens = Math.max(0, upTo - start);
    this.cacheFullBlocks(seq);
    seq.status = 'waiting';
    this.waiting.unshift(seq);
  }

  private releaseBlocks(seq: SeqState): void {
    this.pool.release(seq.blocks);
    seq.blocks = [];
  }

  private matchPrefix(seq: SeqState): void {
    const bs = this.config.blockSize;
    // hashes already known (an earlier admission attempt, or before a preemption) are kept
    seq.hashes = blockHashes(seq.tokens, bs, seq.cacheSalt, seq.hashes);
    // Leave at least one token to compute (its logits start generation).
    const maxBlocks = Math.floor((seq.tokens.length - 1) / bs);
    const hit: Block[] = [];
    if (this.pool.enableCaching) {
      for (let b = 0; b < Math.min(maxBlocks, seq.hashes.length); b++) {
        const block = this.pool.lookup(seq.hashes[b]!);
        if (!block) break;
        hit.push(block);
      }
    }
    if (seq.numCachedTokens < 0) {
      seq.numCachedTokens = hit.length * bs;
      this.prefixQueries += seq.tokens.length;
      this.prefixHits += hit.length * bs;
    }
    this.pool.touch(hit);
    seq.blocks = hit;
    seq.numComputed = hit.length * bs;
  }

  /** A waiting request that could not be admitted gives back the blocks it matched, so that
   * requests queued behind running ones never sit on blocks (which could deadlock the pool). */
  private unmatch(seq: SeqState): void {
    this.releaseBlocks(seq);
    seq.numComputed = 0;
  }

  private grow(seq: SeqState, tokens: number): boolean {
    const need = this.blocksFor(tokens) - seq.blocks.length;
    if (need <= 0) return true;
    const got = this.pool.allocate(need);
    if (!got) return false;
    seq.blocks.push(...got);
    return true;
  }

  private preempt(seq: SeqState): void {
    remove(this.running, seq);
    this.releaseBlocks(seq);
    seq.numComputed = 0;
    seq.status = 'waiting';
    seq.numPreemptions++;
    this.numPreemptions++;
    this.waiting.unshift(seq);
  }

  private cacheFullBlocks(seq: SeqState): void {
    if (!this.pool.enableCaching) return;
    const bs = this.config.blockSize;
    const full = Math.floor(seq.numComputed / bs);
    if (full <= 0) return;
    const known = seq.hashes.length;
    if (known < full) seq.hashes = blockHashes(seq.tokens.slice(0, full * bs), bs, seq.cacheSalt, seq.hashes);
    // cache blocks [0, full) that are not yet cached
    let first = 0;
    while (first < full && seq.blocks[first]!.hash !== undefined) first++;
    if (first < full) this.pool.cacheBlocks(seq.blocks.slice(0, full), seq.hashes.slice(0, full), seq.tokens, first, bs);
  }
}

function remove<T>(arr: T[], x: T): void {
  const i = arr.indexOf(x);
  if (i >= 0) arr.splice(i, 1);
}
