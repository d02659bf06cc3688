// The engine's public surface.
export * from './api.ts';
export { TandemEngine, RequestContext } from './engine.ts';
export { EngineMetrics } from './metrics.ts';
import type { Registry } from 'prom-client';
import type { Engine, EngineOptions } from './api.ts';
import { TandemEngine } from './engine.ts';

export const DEFAULT_ENGINE_OPTIONS: Omit<EngineOptions, 'model'> = {
  role: 'both',
  kernels: 'wasm',
  blockSize: 16,
  kvCacheDtype: 'f32',
  prefixCaching: true,
  maxNumSeqs: 64,
  maxNumBatchedTokens: 512,
  maxWaiting: 256,
  kvLeaseSeconds: 30,
  kvLoadFailurePolicy: 'recompute',
  kvChunkTokens: 256,
};

/** Start an engine (model worker, scheduler, and the P/D and KV-store attachments its options ask for). */
export async function createEngine(opts: EngineOptions): Promise<{ engine: Engine & TandemEngine; registry: Registry }> {
  const engine = await TandemEngine.create({ ...DEFAULT_ENGINE_OPTIONS, ...opts });
  return { engine, registry: engine.metrics.registry };
}
