// The KV store: LMCache-style reuse of KV across requests and engines, in memory, disk and Redis tiers.
// See docs/kv-store.md.
export { KvStore } from './store.ts';
export type { KvStoreOptions, KvStoreStats, LoadResult, LookupResult, PerTier } from './store.ts';
export { parseKvStoreSpec, TIER_ORDER } from './spec.ts';
export type { KvStoreSpec, TierName } from './spec.ts';
export { chunkKeys, type KeySpace } from './keys.ts';
export { decodeChunk, encodeChunk, ChunkError, HEADER_BYTES } from './chunk.ts';
