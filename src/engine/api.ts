// The contract between the engine core (scheduler, KV cache, model runner) and its front ends
// (the OpenAI HTTP server, `tandem generate`, tests). Plain data in, an async stream of events out.

import type { Tokenizer } from '../tokenizer/types.ts';

export interface SamplingParams {
  /** 0 = greedy (ties → lowest id) */
  temperature: number;
  topP: number; // 1 = off
  topK: number; // 0 or -1 = off
  minP: number; // 0 = off
  repetitionPenalty: number; // 1 = off
  presencePenalty: number; // 0 = off
  frequencyPenalty: number; // 0 = off
  /** Seed for this request's sampler. The same seed gives the same tokens on any machine. */
  seed?: number;
}

export const GREEDY: SamplingParams = {
  temperature: 0,
  topP: 1,
  topK: 0,
  minP: 0,
  repetitionPenalty: 1,
  presencePenalty: 0,
  frequencyPenalty: 0,
};

export interface GenerateRequest {
  requestId: string;
  promptIds: number[];
  sampling: SamplingParams;
  maxTokens: number;
  /** minimum tokens before EOS/stop ids may end the request */
  minTokens?: number;
  stop?: string[];
  stopTokenIds?: number[];
  ignoreEos?: boolean;
  /** number of top logprobs to return per generated token (0 = only the chosen token's logprob; undefined = none) */
  logprobs?: number;
  /** tenant isolation for prefix caching, as vLLM's cache_salt */
  cacheSalt?: string;
  /** vLLM P/D protocol: parameters received from the client/router (see src/kvconnector) */
  kvTransferParams?: Record<string, unknown>;
  /** wall-clock ms when the front end received the request (for queue-time metrics) */
  arrivalTime?: number;
  /** include the stop string in the output text */
  includeStopStrInOutput?: boolean;
}

export interface TokenLogprob {
  id: number;
  token: string;
  logprob: number;
  top: { id: number; token: string; logprob: number }[];
}

export type FinishReason = 'stop' | 'length' | 'abort' | 'error';

export type GenerateEvent =
  | {
      type: 'delta';
      /** ids generated since the last event */
      ids: number[];
      /** text that became final since the last event (stop strings held back until resolved) */
      text: string;
      logprobs?: TokenLogprob[];
    }
  | {
      type: 'finish';
      reason: FinishReason;
      /** why: the matched stop string or stop token id, or an error message */
      stopReason?: string | number;
      usage: { promptTokens: number; completionTokens: number; cachedTokens: number };
      /** for P/D leg 1: what the decode engine needs to pull this prompt's KV */
      kvTransferParams?: Record<string, unknown>;
      /** error details when reason is 'error' */
      error?: { status: number; message: string };
    };

/** Thrown synchronously by submit() when a request is refused up front. */
export class EngineError extends Error {
  constructor(
    readonly status: 400 | 404 | 413 | 429 | 500 | 503,
    message: string,
    readonly type = status === 429 ? 'rate_limit_exceeded' : status >= 500 ? 'server_error' : 'invalid_request_error',
    readonly param: string | null = null,
    /** seconds, for 429 */
    readonly retryAfter?: number,
  ) {
    super(message);
    this.name = 'EngineError';
  }
}

export interface EngineInfo {
  modelName: string;
  maxModelLen: number;
  role: 'prefill' | 'decode' | 'both';
  blockSize: number;
  numBlocks: number;
  kvDtype: 'f32' | 'f16';
  engineId: string;
  prefixCaching: boolean;
  /** port of the KV transfer service (P/D), when running */
  kvPort?: number;
  /** KV bytes one token occupies (a simulated engine: its profile's model) */
  kvBytesPerToken: number;
  /** name of the GPU timing profile when this is a simulated engine */
  simulated?: string;
}

export interface Engine {
  readonly info: EngineInfo;
  /** when present: changes whenever the engine's metrics may have (lets /metrics reuse its last rendering) */
  readonly metricsVersion?: number;
  readonly tokenizer: Tokenizer;
  readonly chatTemplate?: string;
  /** Admit a request or throw EngineError (context too long: 400; queue full: 429; draining: 503). */
  submit(req: GenerateRequest, signal?: AbortSignal): AsyncIterable<GenerateEvent>;
  /** Tokens of a prompt's prefix this engine holds, per tier (GPU = block pool; memory/disk/redis = KV store). */
  kvLookup?(promptIds: number[], cacheSalt?: string): Promise<{ tokens: number; perTier: Record<string, number> }>;
  /** A P/D decode leg with these kv_transfer_params was refused before `submit` admitted it: free the prefill side's lease. */
  declineRemoteKv?(kvTransferParams: Record<string, unknown>): void;
  /** Stop admitting; resolve when running requests have finished or `timeoutMs` passed (the rest are aborted). */
  drain(timeoutMs: number): Promise<void>;
  close(): Promise<void>;
}

/** Everything `tandem serve` can configure about an engine (flags map 1:1, see src/server/cli.ts). */
export interface EngineOptions {
  /** built-in name, path, or synthetic:<preset> */
  model: string;
  tokenizer?: string;
  servedModelName?: string;
  role: 'prefill' | 'decode' | 'both';
  kernels: 'wasm' | 'reference';
  blockSize: number; // default 16
  /** pool size: numBlocks wins over kvCacheMemoryBytes; default 256 MiB worth of blocks */
  numBlocks?: number;
  kvCacheMemoryBytes?: number;
  kvCacheDtype: 'f32' | 'f16';
  prefixCaching: boolean;
  maxNumSeqs: number; // default 64
  maxNumBatchedTokens: number; // default 512
  maxModelLen?: number; // default: the model's context length
  maxWaiting: number; // waiting-queue bound → 429 beyond it; default 256
  /** P/D */
  kvHost?: string; // bind address of the KV transfer service (default 127.0.0.1)
  kvPort?: number; // 0 = any free port
  kvAdvertiseHost?: string; // remote_host put in kv_transfer_params (default: kvHost)
  kvLeaseSeconds: number; // default 30
  kvLoadFailurePolicy: 'recompute' | 'fail';
  kvSecret?: string;
  /** KV events (ZMQ PUB), e.g. tcp://*:5557 */
  kvEventsEndpoint?: string;
  /** KV store tiers, e.g. memory:1GiB,disk:/tmp/kv:10GiB,redis://127.0.0.1:6379 */
  kvStore?: string;
  kvChunkTokens: number; // default 256
  /** simulated engine: replace the model arithmetic by a GPU timing profile (shipped name or JSON path) */
  simulate?: string;
  /** simulated engines: KV transfer link bandwidth in bytes/s (default: the profile's) */
  kvBandwidthBytesPerSec?: number;
}
