// The llama.cpp side of tandem's benchmarks: the same figures as tandem's, on the same GGUF, in a child process.
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { ensureNodeLlamaCpp } from './install.ts';
import { LlamaCppWorkerError, numberField, runWorker, type RunWorkerOptions } from './worker-process.ts';

/** llama.cpp has two attention paths on CPU; 'best' measures both and keeps the faster per figure. */
export type FlashAttentionChoice = 'best' | boolean;

interface CommonOptions extends Pick<RunWorkerOptions, 'timeoutMs' | 'onStderr'> {
  /** ggml threads; default 1 (the benchmarks are single-threaded). */
  threads?: number;
  /** Timed runs per figure after one warm-up run; the median is reported. Default 3. */
  repeats?: number;
  flashAttention?: FlashAttentionChoice;
  /** A node-llama-cpp install to use instead of the one ensureNodeLlamaCpp() manages. */
  packageDir?: string;
}

export interface LlamaCppEngineOptions extends CommonOptions {
  /** Per-sequence context for the prefill and batch-1 runs; default 1024 (the shipped models train on 512). */
  contextSize?: number;
  /** Prompt length for prefill; default 512, clamped to the context. */
  prefillTokens?: number;
  /** Prompt length before the decode runs; default 16. */
  decodePromptTokens?: number;
  /** Tokens timed at batch 1; default 128. */
  decodeTokens?: number;
  /** Sequences decoding together in the batch run; default 32. */
  batchSequences?: number;
  /** Tokens timed per sequence in the batch run; default 64. */
  batchDecodeTokens?: number;
}

export interface LlamaCppEngineResult {
  prefillTokPerS: number;
  /** Greedy decode at batch 1, one token per step including llama.cpp's greedy sampler. */
  decodeTokPerS1: number;
  /** Aggregate greedy decode over `batchSequences` (default 32) sequences stepping together. */
  decodeTokPerS32: number;
  /** Peak RSS of the llama.cpp process (node + llama.cpp + model + KV), MiB. */
  peakRssMiB: number;
  /** RSS of that process before node-llama-cpp was loaded, MiB: subtract for llama.cpp's own share. */
  baseRssMiB: number;
  prefillTokens: number;
  decodeTokens: number;
  batchSequences: number;
  batchDecodeTokens: number;
  /** Which attention path produced each figure. */
  flashAttention: { prefill: boolean; decode1: boolean; decodeBatch: boolean };
  /**
   * The same three figures per CPU-second of the llama.cpp process instead of per wall-clock second: insensitive to
   * other processes taking the core, so a sanity check for wall-clock figures taken on a busy machine.
   */
  perCpuSecond: { prefillTokPerS: number; decodeTokPerS1: number; decodeTokPerS32: number };
  threads: number;
  repeats: number;
  nodeLlamaCppVersion: string;
  /** The worker's full JSON (per-run timings, per-attention-path figures, context sizes). */
  raw: Record<string, unknown>;
}

export interface LlamaCppServeOptions extends CommonOptions {
  /** Parallel sequences in one llama.cpp context (the streams). */
  concurrency: number;
  /** Prompt tokens per sequence. */
  promptTokens: number;
  /** Generated tokens per sequence (EOS is ignored, as with vLLM's --ignore-eos). */
  maxTokens: number;
  /** llama.cpp batch size for the prompt phase; default 512. */
  batchSize?: number;
}

export interface LlamaCppServeResult {
  /** concurrency · maxTokens / (last token − start), median over repeats. */
  outputTokPerS: number;
  /** The same per CPU-second of the llama.cpp process (see LlamaCppEngineResult.perCpuSecond). */
  outputTokPerCpuS: number;
  /** Gaps between consecutive tokens of one sequence, pooled over sequences and repeats; null when maxTokens is 1. */
  itlP50Ms: number | null;
  itlP99Ms: number | null;
  ttftP50Ms: number;
  ttftP99Ms: number;
  peakRssMiB: number;
  flashAttention: boolean;
  concurrency: number;
  promptTokens: number;
  maxTokens: number;
  raw: Record<string, unknown>;
}

function checkedGguf(gguf: string): string {
  const path = resolve(gguf);
  if (!existsSync(path)) throw new LlamaCppWorkerError(`GGUF file not found: ${path}`);
  return path;
}

function positiveInt(name: string, v: number | undefined): void {
  if (v !== undefined && (!Number.isInteger(v) || v < 1)) {
    throw new RangeError(`${name} must be a positive integer, got ${v}`);
  }
}

/** Prefill and decode throughput of llama.cpp on `gguf` (issue 2's engine figures), measured in a child process. */
export async function measureLlamaCppEngine(gguf: string, options: LlamaCppEngineOptions = {}): Promise<LlamaCppEngineResult> {
  const { timeoutMs, onStderr, packageDir, ...rest } = options;
  for (const [k, v] of Object.entries(rest)) if (typeof v === 'number') positiveInt(k, v);
  const args = { mode: 'engine', gguf: checkedGguf(gguf), packageDir: packageDir ?? (await ensureNodeLlamaCpp()), ...rest };
  const r = await runWorker(args, { timeoutMs, onStderr });
  const fa = (r.flashAttention ?? {}) as Record<string, unknown>;
  const cpu = (r.perCpuSecond ?? {}) as Record<string, unknown>;
  return {
    prefillTokPerS: numberField(r, 'prefillTokPerS'),
    decodeTokPerS1: numberField(r, 'decodeTokPerS1'),
    decodeTokPerS32: numberField(r, 'decodeTokPerS32'),
    peakRssMiB: numberField(r, 'peakRssMiB'),
    baseRssMiB: numberField(r, 'baseRssMiB'),
    prefillTokens: numberField(r, 'prefillTokens'),
    decodeTokens: numberField(r, 'decodeTokens'),
    batchSequences: numberField(r, 'batchSequences'),
    batchDecodeTokens: numberField(r, 'batchDecodeTokens'),
    flashAttention: { prefill: fa.prefill === true, decode1: fa.decode1 === true, decodeBatch: fa.decodeBatch === true },
    perCpuSecond: {
      prefillTokPerS: numberField(cpu, 'prefillTokPerS'),
      decodeTokPerS1: numberField(cpu, 'decodeTokPerS1'),
      decodeTokPerS32: numberField(cpu, 'decodeTokPerS32'),
    },
    threads: numberField(r, 'threads'),
    repeats: numberField(r, 'repeats'),
    nodeLlamaCppVersion: String(r.nodeLlamaCpp),
    raw: r,
  };
}

/** Output throughput and inter-token latency of llama.cpp with `concurrency` parallel sequences (issue 3's figures). */
export async function measureLlamaCppServe(gguf: string, options: LlamaCppServeOptions): Promise<LlamaCppServeResult> {
  const { timeoutMs, onStderr, packageDir, ...rest } = options;
  for (const [k, v] of Object.entries(rest)) if (typeof v === 'number') positiveInt(k, v);
  for (const k of ['concurrency', 'promptTokens', 'maxTokens'] as const) {
    if (rest[k] === undefined) throw new RangeError(`${k} is required`);
  }
  const args = { mode: 'serve', gguf: checkedGguf(gguf), packageDir: packageDir ?? (await ensureNodeLlamaCpp()), ...rest };
  const r = await runWorker(args, { timeoutMs, onStderr });
  const optionalMs = (key: string): number | null => (r[key] === null ? null : numberField(r, key));
  return {
    outputTokPerS: numberField(r, 'outputTokPerS'),
    outputTokPerCpuS: numberField(r, 'outputTokPerCpuS'),
    itlP50Ms: optionalMs('itlP50Ms'),
    itlP99Ms: optionalMs('itlP99Ms'),
    ttftP50Ms: numberField(r, 'ttftP50Ms'),
    ttftP99Ms: numberField(r, 'ttftP99Ms'),
    peakRssMiB: numberField(r, 'peakRssMiB'),
    flashAttention: r.flashAttention === true,
    concurrency: numberField(r, 'concurrency'),
    promptTokens: numberField(r, 'promptTokens'),
    maxTokens: numberField(r, 'maxTokens'),
    raw: r,
  };
}
