// Messages between the engine (main thread) and the model-runner worker.
import type { KvPoolLayout } from '../kernels/types.ts';
import type { ModelConfig, TokenizerSpec } from '../model/types.ts';
import type { SamplingParams, TokenLogprob } from './api.ts';
import type { GpuProfile } from './simulate.ts';

export interface WireChunk {
  rid: string;
  tokens: number[];
  start: number;
  blockTable: number[];
  wantLogits: boolean;
  sample?: {
    params: SamplingParams;
    seed: number;
    /** sent with a request's first sample only (repetition penalty needs the prompt) */
    promptIds?: number[];
    logprobs?: number;
    banned?: number[];
  };
}

export type WorkerRequest =
  | {
      type: 'init';
      model: string;
      tokenizer?: string;
      kernels: 'wasm' | 'reference';
      blockSize: number;
      numBlocks?: number;
      kvCacheMemoryBytes?: number;
      kvDtype: 'f32' | 'f16';
      maxModelLen?: number;
      /** GPU timing profile: replaces the model arithmetic */
      simulate?: GpuProfile;
    }
  /** sentAt: when the scheduler planned the step, as performance.timeOrigin + performance.now() (a clock both threads share) */
  | { type: 'step'; seq: number; chunks: WireChunk[]; sentAt: number }
  | { type: 'free'; rids: string[] };

export type WorkerReply =
  | {
      type: 'ready';
      name: string;
      config: ModelConfig;
      tokenizer: TokenizerSpec;
      chatTemplate?: string;
      fingerprint: string;
      memory: WebAssembly.Memory;
      pool: KvPoolLayout;
    }
  | { type: 'result'; seq: number; results: { rid: string; id: number; logprob?: TokenLogprob }[]; ms: number }
  | { type: 'error'; seq?: number; name: string; message: string; stack?: string };
