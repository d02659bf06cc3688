// Simulated engines: the same engine — HTTP, scheduler, block pool, prefix cache, P/D legs, KV
// transfers of real bytes — with the model arithmetic replaced by a GPU timing profile. A step takes
// as long as the profile says that batch would take on the GPU, so router and P/D experiments at
// GPU scale (8K prompts, 256 streams) run on a laptop. Tokens are a deterministic function of the
// sequence (never a stop token), so outputs are reproducible and equal with or without P/D.

import { readFileSync } from 'node:fs';
import { UsageError } from '../cli/args.ts';

export interface GpuProfile {
  name: string;
  /** [prompt tokens in the step, ms] — a compute-bound prefill; interpolated, extrapolated linearly */
  prefill: [number, number][];
  /** [batch, context, ms] for one decode step */
  decode: [number, number, number][];
  /** longest context the simulated engine accepts */
  maxModelLen: number;
}

/** Llama-3-8B shape on one H200, PyTorch eager bf16 (reference/gpu-profile.md, measured 2026-11-27). */
export const H200_LLAMA3_8B: GpuProfile = {
  name: 'h200-llama3-8b',
  prefill: [
    [128, 13.3],
    [512, 13.3],
    [1024, 25.9],
    [2048, 52.3],
    [4096, 106.0],
    [8192, 234.2],
  ],
  decode: [
    [1, 1024, 8.7],
    [8, 1024, 8.9],
    [32, 1024, 8.6],
    [64, 1024, 10.0],
    [128, 1024, 10.8],
    [256, 1024, 16.6],
    [1, 4096, 8.2],
    [8, 4096, 8.6],
    [32, 4096, 10.0],
    [64, 4096, 14.1],
    [128, 4096, 22.3],
  ],
  maxModelLen: 32768,
};

const BUILTIN: Record<string, GpuProfile> = { [H200_LLAMA3_8B.name]: H200_LLAMA3_8B };

/** A built-in profile name or a JSON file with the GpuProfile shape. */
export function loadProfile(ref: string): GpuProfile {
  const b = BUILTIN[ref];
  if (b) return b;
  let p: GpuProfile;
  try {
    p = JSON.parse(readFileSync(ref, 'utf8')) as GpuProfile;
  } catch (err) {
    throw new UsageError(`--simulate ${ref}: not a built-in profile (${Object.keys(BUILTIN).join(', ')}) nor a readable JSON profile: ${(err as Error).message}`);
  }
  if (!Array.isArray(p.prefill) || !Array.isArray(p.decode) || !p.prefill.length || !p.decode.length || !(p.maxModelLen > 0)) {
    throw new UsageError(`--simulate ${ref}: a profile needs prefill [[tokens, ms]…], decode [[batch, context, ms]…] and maxModelLen`);
  }
  return p;
}

/** Piecewise-linear interpolation over sorted points, linear extrapolation past the last one. */
function interp(points: [number, number][], x: number): number {
  const pts = points.slice().sort((a, b) => a[0] - b[0]);
  if (x <= pts[0]![0]) return pts[0]![1];
  for (let i = 1; i < pts.length; i++) {
    const [x1, y1] = pts[i]!;
    if (x <= x1) {
      const [x0, y0] = pts[i - 1]!;
      return y0 + ((y1 - y0) * (x - x0)) / (x1 - x0);
    }
  }
  const [xa, ya] = pts[pts.length - 2] ?? [0, 0];
  const [xb, yb] = pts[pts.length - 1]!;
  return yb + ((yb - ya) / (xb - xa || 1)) * (x - xb);
}

/** GPU time of one engine step: decode rows at their contexts plus the prefill tokens of the step. */
export function stepMs(profile: GpuProfile, decodeRows: number, meanContext: number, prefillTokens: number): number {
  let ms = 0;
  if (decodeRows > 0) {
    // interpolate over batch at the two nearest profiled contexts, then over context
    const contexts = [...new Set(profile.decode.map((d) => d[1]))].sort((a, b) => a - b);
    const at = (ctx: number) => interp(profile.decode.filter((d) => d[1] === ctx).map((d) => [d[0], d[2]]), decodeRows);
    ms += interp(contexts.map((c) => [c, at(c)]), meanContext);
  }
  if (prefillTokens > 0) ms += interp(profile.prefill, prefillTokens);
  return ms;
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
/** Block this (worker) thread for `ms`: the simulated GPU is busy. */
export function busyFor(ms: number): void {
  if (ms > 0) Atomics.wait(sleeper, 0, 0, ms);
}
