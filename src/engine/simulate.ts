// Simulated engines: the same engine — HTTP, scheduler, block pool, prefix cache, P/D legs, KV
// transfer leases and timing — with the model arithmetic replaced by a GPU timing profile. A step
// takes as long as the profile says that batch would take on the GPU (the worker thread sleeps in
// Atomics.wait, which costs no CPU), so router and P/D experiments at GPU scale (8K prompts, 256
// streams, 16 engines) run on a laptop. Tokens are a deterministic function of the sequence (never a
// stop token), so outputs are reproducible and equal with or without P/D.

import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { UsageError } from '../cli/args.ts';
import type { StepResult, StepRunner } from './step-runner.ts';
import type { WireChunk } from './worker-protocol.ts';

/** The documented JSON schema of a profile (docs/simulation.md). */
export interface GpuProfile {
  name: string;
  description?: string;
  provenance?: string;
  /** KV bytes per token of the simulated model (Llama-3-8B bf16: 32 × 8 × 128 × 2 × 2 = 128 KiB) */
  kvBytesPerToken: number;
  /** KV-cache capacity in tokens when neither --num-blocks nor --kv-cache-memory is given */
  kvCacheTokens: number;
  /** longest context the simulated engine accepts */
  maxModelLen: number;
  /** fixed cost added to every step (scheduling, launch) */
  stepOverheadMs?: number;
  /** [prompt tokens in one forward pass, ms]: interpolated, extrapolated linearly */
  prefill: [number, number][];
  /** [batch, context, ms] for one decode step of `batch` sequences at mean context `context` */
  decode: [number, number, number][];
  /** the P/D link: KV transfers take latency + bytes / bandwidth, transfers share the link */
  kvTransfer: { bandwidthGBps: number; latencyMs: number };
}

const PROFILE_DIR = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'profiles');
/** Older names kept working. */
const ALIASES: Record<string, string> = { 'h200-llama3-8b': 'h200-llama8b' };

/** Names of the profiles shipped in profiles/. */
export function builtinProfiles(): string[] {
  return readdirSync(PROFILE_DIR)
    .filter((f) => f.endsWith('.json'))
    .map((f) => f.slice(0, -'.json'.length))
    .sort();
}

/** A shipped profile name (profiles/<name>.json) or a path to a JSON profile, validated. */
export function loadProfile(ref: string): GpuProfile {
  const name = ALIASES[ref] ?? ref;
  const shipped = join(PROFILE_DIR, `${name}.json`);
  const path = /^[\w.-]+$/.test(name) && existsSync(shipped) ? shipped : ref;
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    throw new UsageError(
      `--simulate ${ref}: not a shipped profile (${builtinProfiles().join(', ')}) nor a readable JSON profile: ${(err as Error).message}`,
    );
  }
  return validateProfile(raw, ref);
}

export function validateProfile(raw: unknown, where: string): GpuProfile {
  const bad = (msg: string): never => {
    throw new UsageError(`profile ${where}: ${msg} (schema: docs/simulation.md)`);
  };
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) bad('must be a JSON object');
  const p = raw as Record<string, unknown>;
  const posNum = (k: string, v: unknown) => {
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) bad(`${k} must be a positive number`);
    return v as number;
  };
  if (typeof p.name !== 'string' || !p.name) bad('name must be a non-empty string');
  posNum('kvBytesPerToken', p.kvBytesPerToken);
  posNum('kvCacheTokens', p.kvCacheTokens);
  posNum('maxModelLen', p.maxModelLen);
  if (p.stepOverheadMs !== undefined && (typeof p.stepOverheadMs !== 'number' || p.stepOverheadMs < 0)) bad('stepOverheadMs must be ≥ 0');
  const rows = (k: string, width: number) => {
    const v = p[k];
    if (!Array.isArray(v) || v.length === 0) bad(`${k} must be a non-empty array of [${width === 2 ? 'tokens, ms' : 'batch, context, ms'}] rows`);
    (v as unknown[]).forEach((r, i) => {
      if (!Array.isArray(r) || r.length !== width || r.some((x) => typeof x !== 'number' || !Number.isFinite(x) || x <= 0)) {
        bad(`${k}[${i}] must be ${width} positive numbers`);
      }
    });
  };
  rows('prefill', 2);
  rows('decode', 3);
  const t = p.kvTransfer as Record<string, unknown> | undefined;
  if (typeof t !== 'object' || t === null) bad('kvTransfer must be {bandwidthGBps, latencyMs}');
  posNum('kvTransfer.bandwidthGBps', t!.bandwidthGBps);
  if (typeof t!.latencyMs !== 'number' || t!.latencyMs < 0) bad('kvTransfer.latencyMs must be ≥ 0');
  return p as unknown as GpuProfile;
}

/** Piecewise-linear interpolation over sorted points, linear extrapolation past the last one. */
function interp(pts: readonly [number, number][], x: number): number {
  if (pts.length === 1 || x <= pts[0]![0]) return pts[0]![1];
  for (let i = 1; i < pts.length; i++) {
    const [x1, y1] = pts[i]!;
    if (x <= x1) {
      const [x0, y0] = pts[i - 1]!;
      return y0 + ((y1 - y0) * (x - x0)) / (x1 - x0);
    }
  }
  const [xa, ya] = pts[pts.length - 2]!;
  const [xb, yb] = pts[pts.length - 1]!;
  return Math.max(0, yb + ((yb - ya) / (xb - xa || 1)) * (x - xb));
}

/** A prefill chunk of a step: `tokens` new prompt tokens after `context` already computed ones. */
export interface PrefillChunk {
  tokens: number;
  context: number;
}

/** The profile as fast lookups (sorted once; steps run thousands of times). */
export class TimingModel {
  private readonly prefillPts: [number, number][];
  private readonly contexts: number[];
  private readonly decodeByContext: [number, number][][];

  constructor(readonly profile: GpuProfile) {
    this.prefillPts = profile.prefill.slice().sort((a, b) => a[0] - b[0]);
    this.contexts = [...new Set(profile.decode.map((d) => d[1]))].sort((a, b) => a - b);
    this.decodeByContext = this.contexts.map((c) =>
      profile.decode
        .filter((d) => d[1] === c)
        .map((d): [number, number] => [d[0], d[2]])
        .sort((a, b) => a[0] - b[0]),
    );
  }

  /** One forward pass over `tokens` prompt tokens from an empty context. */
  prefillMs(tokens: number): number {
    return tokens > 0 ? interp(this.prefillPts, tokens) : 0;
  }

  /** A decode step of `batch` sequences at mean context `meanContext`: over batch at each profiled context, then over context. */
  decodeMs(batch: number, meanContext: number): number {
    if (batch <= 0) return 0;
    const atContext = this.decodeByContext.map((rows, i): [number, number] => [this.contexts[i]!, interp(rows, batch)]);
    return interp(atContext, meanContext);
  }

  /**
   * A whole step. Prefill chunks run as one batch: a forward pass over all their new tokens, T(N).
   * A chunk deep into a long prompt also attends to its context: it pays the excess of its marginal
   * cost T(context + tokens) − T(context) over a standalone pass T(tokens). The sum telescopes, so a
   * prompt prefilled in chunks costs at least one pass over the whole prompt. Decode rows add the
   * profiled decode step: a mixed step stalls the decoding streams by the prefill's time.
   */
  stepMs(decodeRows: number, meanContext: number, prefill: readonly PrefillChunk[]): number {
    let ms = this.profile.stepOverheadMs ?? 0;
    ms += this.decodeMs(decodeRows, meanContext);
    if (prefill.length) {
      let tokens = 0;
      let attention = 0;
      for (const c of prefill) {
        tokens += c.tokens;
        if (c.context > 0) attention += Math.max(0, this.prefillMs(c.context + c.tokens) - this.prefillMs(c.context) - this.prefillMs(c.tokens));
      }
      ms += this.prefillMs(tokens) + attention;
    }
    return ms;
  }
}

/** The simulated model's next token: a hash of (seed, position, previous token), never a special id. */
export function simulatedToken(seed: number, position: number, prev: number, vocab: number): number {
  let h = (seed ^ Math.imul(position + 1, 0x9e3779b1) ^ Math.imul(prev + 7, 0x85ebca6b)) >>> 0;
  h ^= h >>> 16;
  h = Math.imul(h, 0x7feb352d);
  h ^= h >>> 15;
  h = Math.imul(h, 0x846ca68b);
  h ^= h >>> 16;
  return 3 + ((h >>> 0) % (vocab - 3));
}

const sleeper = new Int32Array(new SharedArrayBuffer(4));
/** Block this (worker) thread for `ms` without using CPU: the simulated GPU is busy. */
function gpuBusyFor(ms: number): void {
  if (ms > 0) Atomics.wait(sleeper, 0, 0, ms);
}

/** The timing-model StepRunner: no arithmetic, the profile's GPU time, deterministic tokens. */
export class SimulatedStepRunner implements StepRunner {
  private readonly timing: TimingModel;

  constructor(
    profile: GpuProfile,
    private readonly vocabSize: number,
  ) {
    this.timing = new TimingModel(profile);
  }

  step(chunks: readonly WireChunk[], sentAt?: number): { results: StepResult[]; ms: number } {
    // The step's clock starts when the scheduler sent it: building and posting the plan happens while
    // the GPU would already be busy (vLLM overlaps CPU scheduling with the forward pass).
    const t0 = sentAt !== undefined ? sentAt - performance.timeOrigin : performance.now();
    let decodeRows = 0;
    let contextSum = 0;
    const prefill: PrefillChunk[] = [];
    const results: StepResult[] = [];
    for (const ch of chunks) {
      const end = ch.start + ch.tokens.length;
      // One token after a context is a decode row, also the last prompt token a P/D decode engine computes
      // after pulling the KV: on a GPU it rides in the decode batch.
      if (ch.tokens.length === 1 && ch.start > 0) {
        decodeRows++;
        contextSum += end;
      } else prefill.push({ tokens: ch.tokens.length, context: ch.start });
      if (ch.wantLogits) results.push({ rid: ch.rid, id: simulatedToken(ch.sample!.seed, end, ch.tokens[ch.tokens.length - 1]!, this.vocabSize) });
    }
    const ms = this.timing.stepMs(decodeRows, decodeRows ? contextSum / decodeRows : 0, prefill);
    gpuBusyFor(ms - (performance.now() - t0));
    // Report the GPU's time, not this thread's: the engine's measured prefill rate (which the
    // gateway's cost model reads) must be the simulated hardware's.
    return { results, ms };
  }

  free(): void {}
}
