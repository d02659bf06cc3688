// The engine's side of the KV store (LMCache's role): on a prefix miss in the block pool, load the
// longest stored chunk prefix into the request's blocks instead of recomputing it; when a prompt's
// prefill completes, hand its full chunks to the store (asynchronously: the store copies them
// and writes the slower tiers in the background).

import type { KvStore, TierName } from '../kvstore/index.ts';
import type { RequestContext, TandemEngine } from './engine.ts';
import { gatherTokens, scatterTokens, sliceTokenMajor } from './kv-layout.ts';
import type { ExternalKvSource, SeqState } from './scheduler.ts';
import type { Medium } from './kv-events.ts';

/** KV-event medium of each store tier (Dynamo and llm-d weight tiers by it). */
export const MEDIUM: Record<TierName, Medium> = { memory: 'CPU', disk: 'DISK', redis: 'REMOTE' };

interface Pending {
  /** tokens the store holds for this prompt, from an async lookup; undefined while it runs */
  tokens?: number;
  stored: boolean;
}

export class KvStoreLink implements ExternalKvSource {
  private readonly state = new WeakMap<SeqState, Pending>();

  constructor(
    private readonly engine: TandemEngine,
    readonly store: KvStore,
  ) {}

  /** Start the (cheap) lookup as soon as a request arrives, so it is usually done by admission. */
  admit(ctx: RequestContext): void {
    const seq = ctx.seq;
    const p: Pending = { stored: false };
    this.state.set(seq, p);
    // Only a prompt with at least one full chunk can hit.
    if (seq.numPromptTokens <= this.store.chunkTokens) {
      p.tokens = 0;
      return;
    }
    this.store.lookup(seq.tokens.slice(0, seq.numPromptTokens), seq.cacheSalt ?? '').then(
      (r) => {
        p.tokens = r.tokens;
        this.engine.kick();
      },
      () => {
        p.tokens = 0;
        this.engine.kick();
      },
    );
  }

  match(seq: SeqState, numComputed: number): number | null {
    const p = this.state.get(seq);
    if (!p) return 0;
    if (p.tokens === undefined) return null;
    // The last prompt token must run through the model (its logits start generation).
    const upTo = Math.min(p.tokens, seq.numPromptTokens - 1);
    return Math.max(0, upTo - numComputed);
  }

  load(seq: SeqState, start: number, count: number, done: (loaded: number) => void): void {
    const i = this.engine.internals;
    const C = this.store.chunkTokens;
    const prompt = seq.tokens.slice(0, seq.numPromptTokens);
    // Load whole chunks (the store keeps full chunks only): a prompt whose last chunk is full still
    // gets it, even though its very last token is then computed here.
    const upTo = Math.min(prompt.length, Math.ceil((start + count) / C) * C);
    this.store.load(prompt, seq.cacheSalt ?? '', upTo).then(
      (r) => {
        if (seq.status === 'finished') return done(0);
        const pool = { buffer: i.memory.buffer, layout: i.pool };
        const table = seq.blocks.map((b) => b.id);
        const end = Math.min(start + count, r.tokens);
        for (let c = 0; c < r.chunks.length; c++) {
          const from = Math.max(start, c * C);
          const to = Math.min(end, (c + 1) * C);
          if (to <= from) continue;
          const part = sliceTokenMajor(i.pool, r.chunks[c]!, C, from - c * C, to - from, this.store.kvDtype);
          scatterTokens(pool, table, from, to - from, part, this.store.kvDtype);
        }
        done(Math.max(0, end - start));
        this.engine.kick();
      },
      () => {
        done(0);
        this.engine.kick();
      },
    );
  }

  /** After a step: store the full chunks of prompts whose prefill just completed. */
  afterStep(seqs: Iterable<SeqState>): void {
    const i = this.engine.internals;
    const C = this.store.chunkTokens;
    for (const seq of seqs) {
      const p = this.state.get(seq);
      if (!p || p.stored || seq.numComputed < seq.numPromptTokens) continue;
      p.stored = true;
      const full = Math.floor(seq.numPromptTokens / C);
      if (full === 0) continue;
      const prompt = seq.tokens.slice(0, seq.numPromptTokens);
      const pool = { buffer: i.memory.buffer, layout: i.pool };
      const table = seq.blocks.map((b) => b.id);
      // Chunks that came from the store are skipped by the store itself (already present).
      const taken = this.store.store(prompt, seq.cacheSalt, 0, (c) => gatherTokens(pool, table, c * C, C, this.store.kvDtype));
      const events = this.engine.kvEvents;
      if (taken > 0 && events) {
        // Announce the chunks as blocks of chunkTokens tokens on the fastest tier that holds them.
        const keys = this.store.chunkKeys(prompt, seq.cacheSalt ?? '');
        events.blockStored(keys.slice(0, full), null, prompt.slice(0, full * C), C, MEDIUM[this.store.tiers[0]!]);
      }
    }
  }

  /** For routers: matched tokens per tier, block pool first (POST /v1/kv/lookup). */
  async lookup(promptIds: number[], cacheSalt?: string): Promise<{ tokens: number; perTier: Record<'GPU' | TierName, number> }> {
    const s = await this.store.lookup(promptIds, cacheSalt ?? '');
    return { tokens: s.tokens, perTier: { GPU: 0, ...s.perTier } };
  }
}
