// precise-prefix-cache-producer: a per-endpoint block index fed by the engines' KV events
// (ZMQ, vLLM format). As llm-d does (§5.3), the engine's block hashes are opaque: the gateway
// recomputes its own request keys from each BlockStored's token_ids and parent, so the engine's hash
// algorithm and seed do not matter. Matching needs the request's exact token ids, so pair this with
// token-producer backend vllm/auto against engines that serve POST /tokenize.
import type { DataProducer, Endpoint, PrefixMatch } from '../../types.ts';
import type { PluginContext, PluginFactory } from '../context.ts';
import { asParams, num, only } from '../params.ts';
import { BlockIndex } from '../../prefix/block-index.ts';
import { chainSeed, hashTokenBlock, tokenBlockKeys } from '../../prefix/hash.ts';
import { connectAddress, KvEventSubscriber, type EventBatch } from '../../kv-events.ts';

export interface PrecisePrefixProducer extends DataProducer {
  readonly index: BlockIndex;
  /** apply one batch as if it came from `endpointId` (the subscriber path; exposed for tests and replay) */
  apply(endpointId: string, model: string, batch: EventBatch): void;
  /** blocks known for an endpoint */
  blocks(endpointId: string): number;
}

/** Credit for a cached token by where it is (Dynamo's KV router: device 1.0, host 0.75, disk 0.25). */
const TIER_CREDIT: Record<string, number> = { CPU: 0.75, DISK: 0.25, REMOTE: 0.25 };

interface EngineState {
  engineToRequest: Map<string, number>;
  blockSize: number | undefined;
  sub?: KvEventSubscriber;
}

export const precisePrefixCacheProducer: PluginFactory = {
  type: 'precise-prefix-cache-producer',
  kind: 'producer',
  create(name, raw, ctx: PluginContext): PrecisePrefixProducer {
    const p = asParams(raw);
    only(p, ['indexCapacityPerServer', 'maxPrefixBlocksToMatch']);
    const capacity = num(p, 'indexCapacityPerServer', 1_000_000, { min: 1, int: true });
    const maxBlocks = num(p, 'maxPrefixBlocksToMatch', 8192, { min: 1, int: true });
    const index = new BlockIndex(capacity);
    const engines = new Map<string, EngineState>();
    const reported = new Set<string>();
    const problem = (m: string) => {
      if (reported.has(m)) return;
      // each message once, but some carry numbers (sequence gaps) and would accumulate forever
      if (reported.size >= 256) reported.clear();
      reported.add(m);
      ctx.log(`precise-prefix-cache-producer: ${m}`);
    };
    const state = (id: string): EngineState => {
      let s = engines.get(id);
      if (!s) engines.set(id, (s = { engineToRequest: new Map(), blockSize: undefined }));
      return s;
    };

    // Each storage medium of an endpoint (GPU block pool, CPU/DISK/REMOTE KV store tiers) is indexed
    // apart: the tiers use their own block sizes, and a hit there is worth less than one in the pool.
    const mediaOf = new Map<string, Set<string>>();
    const tierId = (endpointId: string, medium: string | undefined) => {
      const m = (medium ?? 'GPU').toUpperCase();
      let set = mediaOf.get(endpointId);
      if (!set) mediaOf.set(endpointId, (set = new Set()));
      set.add(m);
      return m === 'GPU' ? endpointId : `${endpointId}\u0000${m}`;
    };
    const clearEndpoint = (endpointId: string) => {
      for (const m of mediaOf.get(endpointId) ?? []) {
        const id = m === 'GPU' ? endpointId : `${endpointId}\u0000${m}`;
        index.clear(id);
        engines.get(id)?.engineToRequest.clear();
      }
    };

    // A restarted engine starts empty in memory (block pool, CPU tier); its disk and Redis tiers survive.
    const restarted = (endpointId: string, why: string) => {
      for (const m of ['GPU', 'CPU']) {
        const id = m === 'GPU' ? endpointId : `${endpointId}\u0000${m}`;
        index.clear(id);
        engines.get(id)?.engineToRequest.clear();
      }
      ctx.log(`precise-prefix-cache-producer: ${why}; its block-pool and CPU-tier entries are dropped`);
    };

    const apply = (endpointId: string, model: string, batch: EventBatch) => {
      const seed = chainSeed(model);
      for (const ev of batch.events) {
        if (ev.type === 'AllBlocksCleared') {
          // vLLM's prefix-cache reset: the block pool only; the KV store tiers keep their chunks
          index.clear(endpointId);
          engines.get(endpointId)?.engineToRequest.clear();
          continue;
        }
        const id = tierId(endpointId, ev.medium);
        const s = state(id);
        if (ev.type === 'BlockRemoved') {
          const keys: number[] = [];
          for (const h of ev.blockHashes) {
            const k = s.engineToRequest.get(h);
            if (k !== undefined) keys.push(k);
            s.engineToRequest.delete(h);
          }
          index.remove(id, keys);
        } else {
          const bs = ev.blockSize;
          if (!(bs > 0) || ev.tokenIds.length < ev.blockHashes.length * bs) {
            problem(`${endpointId}: BlockStored with ${ev.tokenIds.length} tokens for ${ev.blockHashes.length} blocks of ${bs}`);
            continue;
          }
          s.blockSize = bs;
          let parent = ev.parentBlockHash === null ? seed : s.engineToRequest.get(ev.parentBlockHash);
          if (parent === undefined) {
            problem(`${endpointId}: BlockStored whose parent block is unknown (missed events?); skipped`);
            continue;
          }
          const keys: number[] = [];
          for (let i = 0; i < ev.blockHashes.length; i++) {
            parent = hashTokenBlock(parent, ev.tokenIds, i * bs, (i + 1) * bs);
            s.engineToRequest.set(ev.blockHashes[i]!, parent);
            keys.push(parent);
          }
          index.add(id, keys);
        }
      }
    };

    ctx.endpoints.onEndpoint(
      (ep: Endpoint) => {
        if (!ep.kvEventsEndpoint) return;
        const s = state(ep.id);
        if (s.sub) return;
        const host = new URL(ep.url).hostname;
        const fallbackModel = () => ep.models[0] ?? '';
        s.sub = new KvEventSubscriber(
          connectAddress(ep.kvEventsEndpoint, host),
          (batch, topic) => {
            const parts = topic.split('@');
            apply(ep.id, parts.length >= 3 ? parts.slice(2).join('@') : fallbackModel(), batch);
          },
          problem,
          (why) => restarted(ep.id, why),
        );
      },
      (ep: Endpoint) => {
        engines.get(ep.id)?.sub?.close();
        clearEndpoint(ep.id);
        for (const m of mediaOf.get(ep.id) ?? []) engines.delete(m === 'GPU' ? ep.id : `${ep.id}\u0000${m}`);
        mediaOf.delete(ep.id);
      },
    );

    return {
      type: 'precise-prefix-cache-producer',
      name,
      kind: 'producer',
      index,
      apply,
      blocks: (id) => index.size(id), // the block pool (GPU) only
      produce(req, endpoints) {
        const ids = req.tokens?.ids;
        if (!ids) {
          problem('requests carry no exact token ids (token-producer could not tokenize); precise prefix matching is off for them');
          return;
        }
        const seed = chainSeed(req.model);
        const keysBySize = new Map<number, number[]>();
        const matches = new Map<string, PrefixMatch>();
        const keysFor = (bs: number) => {
          let keys = keysBySize.get(bs);
          if (!keys) keysBySize.set(bs, (keys = tokenBlockKeys(seed, ids, bs, maxBlocks)));
          return keys;
        };
        for (const ep of endpoints) {
          const bs = engines.get(ep.id)?.blockSize ?? ep.blockSize;
          const keys = keysFor(bs);
          const gpuTokens = index.longestPrefix(ep.id, keys) * bs;
          // Tokens found only in slower tiers count with Dynamo's credits (CPU 0.75, DISK/REMOTE 0.25).
          let credited = gpuTokens;
          let covered = gpuTokens;
          for (const m of ['CPU', 'DISK', 'REMOTE']) {
            if (!mediaOf.get(ep.id)?.has(m)) continue;
            const tid = `${ep.id}\u0000${m}`;
            const tbs = engines.get(tid)?.blockSize;
            if (!tbs) continue;
            const tokens = index.longestPrefix(tid, keysFor(tbs)) * tbs;
            if (tokens > covered) {
              credited += (tokens - covered) * TIER_CREDIT[m]!;
              covered = tokens;
            }
          }
          matches.set(ep.id, { matchBlocks: credited / bs, totalBlocks: keys.length, blockSize: bs });
        }
        req.prefix.set(name, matches);
      },
      close() {
        for (const s of engines.values()) s.sub?.close();
      },
    };
  },
};
