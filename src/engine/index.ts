// The engine's public surface.
export * from './api.ts';
export { TandemEngine, RequestContext } from './engine.ts';
export { EngineMetrics } from './metrics.ts';
import type { Registry } from 'prom-client';
import type { Engine, EngineOptions } from './api.ts';
import { TandemEngine } from './engine.ts';
import { KvConnector } from './pd.ts';
import { KvStoreLink } from './kv-store-link.ts';
import { KvStore } from '../kvstore/index.ts';
import { KvEventPublisher } from './kv-events.ts';
import { MEDIUM } from './kv-store-link.ts';
import { UsageError } from '../cli/args.ts';

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

/** A simulated engine stands for a GPU engine: vLLM's GPU defaults for batch shape and queue. */
export const SIMULATED_ENGINE_DEFAULTS: Partial<EngineOptions> = {
  maxNumSeqs: 256,
  maxNumBatchedTokens: 8192,
  maxWaiting: 1024,
};

/** Start an engine (model worker, scheduler, and the P/D and KV-store attachments its options ask for). */
export async function createEngine(opts: EngineOptions): Promise<{ engine: Engine & TandemEngine; registry: Registry }> {
  const o: EngineOptions = { ...DEFAULT_ENGINE_OPTIONS, ...(opts.simulate !== undefined ? SIMULATED_ENGINE_DEFAULTS : {}), ...opts };
  if (o.simulate !== undefined && o.kvStore) {
    throw new UsageError('--kv-store needs real KV bytes; a simulated engine (--simulate) has none');
  }
  const engine = await TandemEngine.create(o);
  try {
    const profile = engine.internals.profile;
    const log = (m: string) => console.error(`tandem serve: ${m}`);
    // Every role can serve every leg, so every engine runs the KV transfer service.
    const connector = await KvConnector.attach(engine, {
      host: o.kvHost ?? '127.0.0.1',
      port: o.kvPort ?? 0,
      advertiseHost: o.kvAdvertiseHost ?? (o.kvHost && o.kvHost !== '0.0.0.0' ? o.kvHost : '127.0.0.1'),
      leaseSeconds: o.kvLeaseSeconds,
      failurePolicy: o.kvLoadFailurePolicy,
      secret: o.kvSecret,
      log,
      // A simulated engine's transfers carry no payload; the link model gives them their duration.
      simulatedLink: profile && {
        bytesPerToken: profile.kvBytesPerToken,
        bandwidthBytesPerSec: o.kvBandwidthBytesPerSec ?? profile.kvTransfer.bandwidthGBps * 1e9,
        latencyMs: profile.kvTransfer.latencyMs,
      },
    });
    engine.attachConnector(connector);
    if (o.kvEventsEndpoint) {
      const pub = await KvEventPublisher.open(o.kvEventsEndpoint, `kv@127.0.0.1:0@${engine.info.modelName}`);
      engine.attachKvEvents(pub);
    }
    if (o.kvStore) {
      const i = engine.internals;
      const store = await KvStore.fromSpec(o.kvStore, {
        modelFingerprint: i.fingerprint,
        kvDtype: o.kvCacheDtype,
        chunkTokens: o.kvChunkTokens,
        layout: { nLayers: i.config.nLayers, nKvHeads: i.config.nKvHeads, headDim: i.config.headDim },
        registry: engine.metrics.registry,
        log,
        onRemoved: (keys, tier) => engine.kvEvents?.blockRemoved(keys, MEDIUM[tier]),
      });
      engine.attachKvStore(new KvStoreLink(engine, store));
    }
    engine.info.kvPort = connector.port;
    engine.metrics.engineInfo.set(
      { model_name: engine.info.modelName, role: o.role, engine_id: engine.info.engineId, kv_port: String(connector.port) },
      1,
    );
  } catch (err) {
    await engine.close();
    throw err;
  }
  return { engine, registry: engine.metrics.registry };
}
