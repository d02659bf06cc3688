// Token sampling from one row of logits.
//
// Reproducibility: the random number for a request's i-th generated token is a pure function of
// (seed, i) — a counter-based generator, not a stateful stream — so the same seed gives the same
// tokens on any machine, after a preemption, and on a decode engine that continues a prompt
// another engine prefilled.

import type { SamplingParams, TokenLogprob } from './api.ts';

/** Per-request sampling state: token counts for the penalties. */
export class SamplerState {
  /** occurrences in the generated output */
  readonly outputCounts = new Map<number, number>();
  /** tokens seen in prompt or output (for the repetition penalty) */
  readonly seen = new Set<number>();
  generated = 0;

  constructor(
    readonly params: SamplingParams,
    promptIds: readonly number[],
    readonly seed: number,
  ) {
    if (params.repetitionPenalty !== 1) for (const id of promptIds) this.seen.add(id);
  }

  accept(id: number): void {
    this.outputCounts.set(id, (this.outputCounts.get(id) ?? 0) + 1);
    this.seen.add(id);
    this.generated++;
  }
}

/** 32-bit finalizer (murmur3 fmix32): good avalanche, integer-only, identical everywhere. */
function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** Uniform in [0, 1) from (seed, counter), 53 bits. */
export function counterUniform(seed: number, counter: number): number {
  const s = seed >>> 0;
  const hi = fmix32(s ^ fmix32(counter * 2 + 0x9e3779b9));
  const lo = fmix32(Math.imul(s, 0x27d4eb2f) ^ fmix32(counter * 2 + 1));
  return ((hi >>> 5) * 67108864 + (lo >>> 6)) / 9007199254740992;
}

export function isGreedy(p: SamplingParams): boolean {
  return p.temperature <= 0 || p.topK === 1;
}

/** argmax with ties to the lowest id */
export function argmax(logits: Float32Array, offset: number, n: number): number {
  let best = 0;
  let bestV = logits[offset]!;
  for (let i = 1; i < n; i++) {
    const v = logits[offset + i]!;
    if (v > bestV) {
      bestV = v;
      best = i;
    }
  }
  return best;
}

function applyPenalties(row: Float32Array, st: SamplerState): void {
  const p = st.params;
  if (p.repetitionPenalty !== 1) {
    for (const id of st.seen) {
      const v = row[id]!;
      row[id] = v > 0 ? v / p.repetitionPenalty : v * p.repetitionPenalty;
    }
  }
  if (p.presencePenalty !== 0 || p.frequencyPenalty !== 0) {
    for (const [id, n] of st.outputCounts) row[id] = row[id]! - p.presencePenalty - p.frequencyPenalty * n;
  }
}

function hasPenalties(p: SamplingParams): boolean {
  return p.repetitionPenalty !== 1 || p.presencePenalty !== 0 || p.frequencyPenalty !== 0;
}

/** log-softmax normalizer: log Σ exp(x) computed stably (fixed order). */
function logSumExp(row: Float32Array, offset: number, n: number): number {
  let max = -Infinity;
  for (let i = 0; i < n; i++) if (row[offset + i]! > max) max = row[offset + i]!;
  let sum = 0;
  for (let i = 0; i < n; i++) sum += Math.exp(row[offset + i]! - max);
  return max + Math.log(sum);
}

/** ids of the n largest values, largest first (ties → lower id first). */
function topIds(row: Float32Array, offset: number, len: number, n: number): number[] {
  const ids: number[] = [];
  for (let i = 0; i < len; i++) {
    const v = row[offset + i]!;
    if (ids.length < n) {
      ids.push(i);
      ids.sort((a, b) => row[offset + b]! - row[offset + a]! || a - b);
    } else if (v > row[offset + ids[n - 1]!]!) {
      ids[n - 1] = i;
      ids.sort((a, b) => row[offset + b]! - row[offset + a]! || a - b);
    }
  }
  return ids;
}

export interface SampleResult {
  id: number;
  logprob?: TokenLogprob;
}

/**
 * Pick the next token from logits[offset .. offset+vocab).
 * `banned` ids (e.g. EOS before min_tokens) are excluded. `logprobs` = number of top alternatives to report
 * (undefined: none). Logprobs are the model's raw distribution (vLLM's default "raw_logprobs").
 */
export function sample(
  logits: Float32Array,
  offset: number,
  vocab: number,
  st: SamplerState,
  opts: { banned?: readonly number[]; logprobs?: number; pieceOf?: (id: number) => string } = {},
): SampleResult {
  const p = st.params;
  let lp: { lse: number } | undefined;
  if (opts.logprobs !== undefined) lp = { lse: logSumExp(logits, offset, vocab) };

  let row: Float32Array;
  let rowOff: number;
  if (hasPenalties(p) || opts.banned?.length) {
    row = logits.slice(offset, offset + vocab);
    rowOff = 0;
    applyPenalties(row, st);
    for (const id of opts.banned ?? []) if (id >= 0 && id < vocab) row[id] = -Infinity;
  } else {
    row = logits;
    rowOff = offset;
  }

  let id: number;
  if (isGreedy(p)) {
    id = argmax(row, rowOff, vocab);
  } else {
    id = sampleStochastic(row, rowOff, vocab, p, counterUniform(st.seed, st.generated));
  }

  let logprob: TokenLogprob | undefined;
  if (lp) {
    const piece = opts.pieceOf ?? String;
    const top = opts.logprobs! > 0 ? topIds(logits, offset, vocab, opts.logprobs!) : [];
    logprob = {
      id,
      token: piece(id),
      logprob: logits[offset + id]! - lp.lse,
      top: top.map((t) => ({ id: t, token: piece(t), logprob: logits[offset + t]! - lp!.lse })),
    };
  }
  return { id, logprob };
}

function sampleStochastic(row: Float32Array, off: number, vocab: number, p: SamplingParams, u: number): number {
  const invT = 1 / p.temperature;
  let max = -Infinity;
  for (let i = 0; i < vocab; i++) if (row[off + i]! > max) max = row[off + i]!;
  // Unnormalized probabilities at temperature T.
  const probs = new Float64Array(vocab);
  let sum = 0;
  for (let i = 0; i < vocab; i++) {
    const e = Math.exp((row[off + i]! - max) * invT);
    probs[i] = e;
    sum += e;
  }
  // Candidates that can matter, largest first (ties → lower id). Tokens below 1e-12 of the total
  // mass cannot change a top-p cut or a draw noticeably; skipping them keeps the sort short.
  const floor = sum * 1e-12;
  let cand: number[] = [];
  for (let i = 0; i < vocab; i++) if (probs[i]! > floor) cand.push(i);
  cand.sort((a, b) => probs[b]! - probs[a]! || a - b);
  if (p.topK > 0 && cand.length > p.topK) cand = cand.slice(0, p.topK);
  if (p.minP > 0) {
    const cut = probs[cand[0]!]! * p.minP;
    let n = cand.length;
    while (n > 1 && probs[cand[n - 1]!]! < cut) n--;
    cand.length = n;
  }
  let total = 0;
  for (const i of cand) total += probs[i]!;
  if (p.topP < 1) {
    let acc = 0;
    let n = 0;
    while (n < cand.length) {
      acc += probs[cand[n]!]!;
      n++;
      if (acc >= p.topP * total) break;
    }
    cand.length = n;
    total = acc;
  }
  let target = u * total;
  for (const i of cand) {
    target -= probs[i]!;
    if (target < 0) return i;
  }
  return cand[cand.length - 1]!;
}
