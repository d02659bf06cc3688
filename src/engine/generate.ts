// Single-sequence generation straight on the model runner: what `tandem generate` and the engine
// benchmark use. (The serving engine batches many sequences through the scheduler instead.)

import { createKernels } from '../kernels/index.ts';
import type { LoadedModel } from '../model/types.ts';
import { GREEDY, type SamplingParams } from './api.ts';
import { ModelRunner } from './model-runner.ts';
import { SamplerState, sample } from './sampler.ts';

export interface GenerateOptions {
  maxTokens: number;
  sampling?: SamplingParams;
  stopIds?: readonly number[];
  ignoreEos?: boolean;
  kernels?: 'wasm' | 'reference';
  kvDtype?: 'f32' | 'f16';
  blockSize?: number;
  /** prefill chunk size (tokens per forward call) */
  chunkTokens?: number;
  onToken?: (id: number) => void;
}

export interface GenerateResult {
  outputIds: number[];
  timings: {
    setupMs: number;
    prefillMs: number;
    decodeMs: number;
    promptTokens: number;
    generatedTokens: number;
    prefillTokensPerS: number;
    decodeTokensPerS: number;
  };
}

export async function createRunner(
  model: LoadedModel,
  opts: { kernels?: 'wasm' | 'reference'; kvDtype?: 'f32' | 'f16'; blockSize?: number; numBlocks: number },
): Promise<ModelRunner> {
  const kernels = await createKernels(opts.kernels ?? 'wasm');
  return new ModelRunner(kernels, model, {
    blockSize: opts.blockSize ?? 16,
    numBlocks: opts.numBlocks,
    dtype: opts.kvDtype ?? 'f32',
  });
}

export async function generate(model: LoadedModel, promptIds: readonly number[], opts: GenerateOptions): Promise<GenerateResult> {
  const t0 = performance.now();
  const ctx = model.config.contextLength;
  if (promptIds.length === 0) throw new RangeError('empty prompt');
  if (promptIds.length >= ctx) throw new RangeError(`prompt of ${promptIds.length} tokens does not fit the context of ${ctx}`);
  const maxTokens = Math.min(opts.maxTokens, ctx - promptIds.length);
  const blockSize = opts.blockSize ?? 16;
  const total = promptIds.length + maxTokens;
  const numBlocks = Math.ceil(total / blockSize);
  const runner = await createRunner(model, { ...opts, blockSize, numBlocks });
  const blockTable = Array.from({ length: numBlocks }, (_, i) => i);
  const sampling = opts.sampling ?? GREEDY;
  const state = new SamplerState(sampling, promptIds, sampling.seed ?? 0);
  const vocab = model.config.vocabSize;
  const stopIds = new Set(opts.ignoreEos ? [] : (opts.stopIds ?? []));
  const t1 = performance.now();

  // Prefill in chunks; logits only for the last prompt token.
  const chunk = opts.chunkTokens ?? 512;
  let logits: Float32Array = new Float32Array(0);
  for (let s = 0; s < promptIds.length; s += chunk) {
    const tokens = promptIds.slice(s, Math.min(promptIds.length, s + chunk));
    const last = s + tokens.length === promptIds.length;
    logits = runner.forward([{ tokens, start: s, blockTable, wantLogits: last }]);
  }
  const t2 = performance.now();

  const out: number[] = [];
  let pos = promptIds.length;
  while (out.length < maxTokens) {
    const { id } = sample(logits, 0, vocab, state);
    state.accept(id);
    out.push(id);
    opts.onToken?.(id);
    if (stopIds.has(id) || out.length >= maxTokens) break;
    logits = runner.forward([{ tokens: [id], start: pos, blockTable, wantLogits: true }]);
    pos++;
  }
  const t3 = performance.now();
  const decodeSteps = Math.max(0, out.length - 1);
  return {
    outputIds: out,
    timings: {
      setupMs: t1 - t0,
      prefillMs: t2 - t1,
      decodeMs: t3 - t2,
      promptTokens: promptIds.length,
      generatedTokens: out.length,
      prefillTokensPerS: promptIds.length / ((t2 - t1) / 1000),
      decodeTokensPerS: decodeSteps > 0 ? decodeSteps / ((t3 - t2) / 1000) : 0,
    },
  };
}
