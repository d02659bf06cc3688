// KvStore: LMCache-style reuse of KV outside the engine's block pool, in up to three tiers tried
// fastest first — CPU memory, local disk, Redis.
//
// Chunks of `chunkTokens` tokens are the unit of storage; a chunk's key is a hash chain over the
// prompt (keys.ts), so "the longest stored prefix" is the longest run of consecutive keys found in
// any tier. Payloads are token-major KV (src/engine/kv-layout.ts) in the store's `kvDtype`, so engines
// with different block sizes share chunks.
//
// Write path: `store` is write-through to every tier. It takes the caller's bytes synchronously (the
// block pool may reuse those blocks the moment it returns), puts them in memory at once, and queues
// the disk and Redis writes, each on its own bounded queue; a full queue drops the write and counts it.
//
// Read path: `lookup` is cheap (memory map, disk index, one pipelined Redis EXISTS) and is what a
// router or the scheduler asks; `load` fetches and verifies the chunks, stops the prefix at the first
// missing or bad one (a bad one is deleted from its tier), and promotes disk/Redis hits into memory.
import { Registry } from 'prom-client';
import type { KvDtype } from '../kernels/types.ts';
import { tokenMajorBytes } from '../engine/kv-layout.ts';
import { ChunkError, decodeChunk, encodeHeader, HEADER_BYTES } from './chunk.ts';
import { DiskTier } from './disk-tier.ts';
import { chunkKeys, type KeySpace } from './keys.ts';
import { MemoryTier } from './memory-tier.ts';
import { createMetrics, type KvStoreMetrics } from './metrics.ts';
import { REDIS_DEFAULTS, RedisTier, type RedisTierOptions } from './redis-tier.ts';
import { parseKvStoreSpec, TIER_ORDER, type KvStoreSpec, type TierName } from './spec.ts';
import { WriteQueue } from './write-queue.ts';

export interface KvStoreOptions {
  /** LoadedModel.fingerprint: KV is only shared between identical weights. */
  modelFingerprint: string;
  /** Dtype of stored payloads (normally the engine's KV cache dtype). */
  kvDtype: KvDtype;
  /** Tokens per chunk; default 256 (LMCache's chunk_size). */
  chunkTokens?: number;
  /** Model dimensions, for the exact size of a chunk payload. */
  layout: { nLayers: number; nKvHeads: number; headDim: number };
  registry?: Registry;
  /** One line per notable event (tier down/up, disk full); default: stderr. */
  log?: (line: string) => void;
  /** Chunks waiting per background tier (disk, Redis) before writes are dropped; default 64. */
  writeQueueLimit?: number;
  /** A tier now holds these chunks (for KV events: memory → CPU, disk → DISK, redis → REMOTE). */
  onStored?: (keys: string[], tier: TierName) => void;
  /** A tier dropped these chunks (eviction or a corrupt object). Redis's own evictions are not seen. */
  onRemoved?: (keys: string[], tier: TierName) => void;
  redis?: Partial<RedisTierOptions>;
  /** After ENOSPC, how long the disk tier stops writing before trying again; default 60 s. */
  diskFullRetryMs?: number;
}

export type PerTier = Record<TierName, number>;

export interface LookupResult {
  /** Tokens in the longest stored chunk prefix (a multiple of chunkTokens). */
  tokens: number;
  /** Those tokens by the fastest tier holding each chunk; the values sum to `tokens`. */
  perTier: PerTier;
}

export interface LoadResult {
  /** Tokens loaded: chunks.length * chunkTokens. */
  tokens: number;
  /** Token-major payloads in order, chunk i covering tokens [i*chunkTokens, (i+1)*chunkTokens).
   * Read-only: a chunk served from memory is the store's own copy. */
  chunks: Uint8Array[];
  tierOfEach: TierName[];
}

export interface KvStoreStats {
  memory?: { chunks: number; bytes: number; capacityBytes: number };
  disk?: { chunks: number; bytes: number; capacityBytes: number; writable: boolean };
  redis?: { available: boolean };
  queued: { disk: number; redis: number };
}

interface WriteJob {
  key: string;
  payload: Uint8Array;
  /** Header computed once, lazily, by whichever background writer gets there first. */
  header?: Uint8Array;
}

function defaultLog(line: string): void {
  console.error(`kv-store: ${line}`);
}

export class KvStore {
  readonly chunkTokens: number;
  readonly kvDtype: KvDtype;
  /** Payload bytes of one chunk. */
  readonly chunkBytes: number;
  readonly tiers: readonly TierName[];
  private readonly space: KeySpace;
  private readonly metrics: KvStoreMetrics;
  private readonly log: (line: string) => void;
  private readonly memory?: MemoryTier;
  private readonly disk?: DiskTier;
  private readonly redis?: RedisTier;
  private readonly diskQueue?: WriteQueue<WriteJob>;
  private readonly redisQueue?: WriteQueue<WriteJob>;
  private closed = false;
  /** Keys Redis was recently seen to hold, so re-storing a prompt loaded from Redis gathers nothing.
   * Bounded; forgotten on a failed GET, so a key Redis evicted is written again next time. */
  private readonly redisKnown = new Set<string>();

  /** Build a store from a `--kv-store` spec: memory:<size>[,disk:<dir>:<size>][,redis://host:port[/db]]. */
  static async fromSpec(spec: string, opts: KvStoreOptions): Promise<KvStore> {
    const store = new KvStore(parseKvStoreSpec(spec), opts);
    await store.redis?.start();
    return store;
  }

  private constructor(spec: KvStoreSpec, private readonly opts: KvStoreOptions) {
    const chunkTokens = opts.chunkTokens ?? 256;
    if (!Number.isInteger(chunkTokens) || chunkTokens < 1 || chunkTokens > 1 << 20) {
      throw new RangeError(`kv store: chunkTokens must be an integer in [1, 2^20], got ${chunkTokens}`);
    }
    if (!opts.modelFingerprint) throw new RangeError('kv store: modelFingerprint is empty');
    if (opts.kvDtype !== 'f32' && opts.kvDtype !== 'f16') throw new RangeError(`kv store: unknown kvDtype '${String(opts.kvDtype)}'`);
    const { nLayers, nKvHeads, headDim } = opts.layout;
    for (const [k, v] of Object.entries({ nLayers, nKvHeads, headDim })) {
      if (!Number.isInteger(v) || v < 1) throw new RangeError(`kv store: layout.${k} must be a positive integer, got ${v}`);
    }
    this.chunkTokens = chunkTokens;
    this.kvDtype = opts.kvDtype;
    this.chunkBytes = tokenMajorBytes(opts.layout, chunkTokens, opts.kvDtype);
    this.space = { modelFingerprint: opts.modelFingerprint, kvDtype: opts.kvDtype, chunkTokens };
    this.metrics = createMetrics(opts.registry ?? new Registry());
    this.log = opts.log ?? defaultLog;
    const queueLimit = opts.writeQueueLimit ?? 64;

    if (spec.memory) {
      this.memory = new MemoryTier(spec.memory.capacityBytes, (keys, bytes) => {
        this.metrics.bytes.dec({ tier: 'memory' }, bytes);
        this.opts.onRemoved?.(keys, 'memory');
      });
      this.metrics.bytes.inc({ tier: 'memory' }, 0);
    }
    if (spec.disk) {
      this.disk = DiskTier.open(spec.disk.dir, spec.disk.capacityBytes, opts.diskFullRetryMs ?? 60_000, {
        log: this.log,
        error: (reason) => this.metrics.errors.inc({ tier: 'disk', reason }),
        bytesDelta: (d) => this.metrics.bytes.inc({ tier: 'disk' }, d),
        removed: (keys) => this.opts.onRemoved?.(keys, 'disk'),
      });
      this.metrics.bytes.inc({ tier: 'disk' }, 0);
      this.diskQueue = new WriteQueue(queueLimit, (job) => this.writeDisk(job));
    }
    if (spec.redis) {
      this.redis = new RedisTier(spec.redis.url, spec.redis, { ...REDIS_DEFAULTS, ...opts.redis }, {
        log: this.log,
        error: (reason) => this.metrics.errors.inc({ tier: 'redis', reason }),
        recovered: () => this.redisKnown.clear(),
      });
      this.redisQueue = new WriteQueue(queueLimit, (job) => this.writeRedis(job));
    }
    this.tiers = TIER_ORDER.filter((t) => spec[t] !== undefined);
  }

  /** Keys of the full chunks of a prompt. */
  chunkKeys(tokenIds: ArrayLike<number>, cacheSalt = ''): string[] {
    return chunkKeys(this.space, tokenIds, cacheSalt);
  }

  /** Longest stored chunk prefix of the prompt. Cheap: no payload is read. */
  async lookup(tokenIds: ArrayLike<number>, cacheSalt = ''): Promise<LookupResult> {
    const located = await this.locate(this.chunkKeys(tokenIds, cacheSalt));
    const perTier: PerTier = { memory: 0, disk: 0, redis: 0 };
    for (const t of located) perTier[t] += this.chunkTokens;
    return { tokens: located.length * this.chunkTokens, perTier };
  }

  /**
   * Load the longest stored prefix of at most `upToTokens` tokens. Every chunk from disk or Redis is
   * checked (header, key, CRC-32); the prefix ends before the first chunk that is missing or bad.
   */
  async load(tokenIds: ArrayLike<number>, cacheSalt = '', upToTokens = tokenIds.length): Promise<LoadResult> {
    const wanted = Math.floor(Math.min(upToTokens, tokenIds.length) / this.chunkTokens);
    const keys = chunkKeys(this.space, tokenIds, cacheSalt, wanted);
    const located = await this.locate(keys);
    // Local reads all start at once. Redis GETs go one after another: on one connection they would
    // queue anyway, and each gets its own deadline only if it is not waiting behind the others. A
    // failed chunk stops the chain, since nothing after it can be used.
    let stop = false;
    let redisChain: Promise<unknown> = Promise.resolve();
    const fetches = located.map((tier, i) => {
      if (tier !== 'redis') return this.fetch(keys[i]!, tier);
      const p = redisChain.then(() => (stop ? undefined : this.fetch(keys[i]!, tier)));
      redisChain = p;
      return p;
    });
    const chunks: Uint8Array[] = [];
    const tierOfEach: TierName[] = [];
    for (let i = 0; i < fetches.length; i++) {
      const payload = await fetches[i]!;
      if (!payload) {
        stop = true;
        break;
      }
      chunks.push(payload);
      tierOfEach.push(located[i]!);
    }
    const promoted: string[] = [];
    for (let i = 0; i < chunks.length; i++) {
      this.metrics.hits.inc({ tier: tierOfEach[i]! });
      if (tierOfEach[i] !== 'memory' && this.memory?.put(keys[i]!, chunks[i]!)) {
        this.metrics.bytes.inc({ tier: 'memory' }, chunks[i]!.byteLength + HEADER_BYTES);
        promoted.push(keys[i]!);
      }
    }
    if (promoted.length) this.opts.onStored?.(promoted, 'memory');
    if (wanted > chunks.length) this.metrics.misses.inc(wanted - chunks.length);
    return { tokens: chunks.length * this.chunkTokens, chunks, tierOfEach };
  }

  /**
   * Save chunks `fromChunk`.. of the prompt's full chunks. Returns at once: `getChunkBytes(i)` is called
   * synchronously, only for chunks some tier still needs, and must return a fresh token-major array
   * of `chunkBytes` bytes (e.g. gatherTokens without `out`), which the store keeps — do not reuse it.
   * Returns the number of chunks taken.
   */
  store(
    tokenIds: ArrayLike<number>,
    cacheSalt: string | undefined,
    fromChunk: number,
    getChunkBytes: (chunkIndex: number) => Uint8Array,
  ): number {
    if (this.closed) return 0;
    const keys = this.chunkKeys(tokenIds, cacheSalt ?? '');
    const inMemory: string[] = [];
    let taken = 0;
    for (let i = Math.max(0, fromChunk); i < keys.length; i++) {
      const key = keys[i]!;
      // Memory is write-through: a chunk there was already handed to the other tiers.
      if (this.memory?.has(key)) continue;
      const toDisk = this.disk !== undefined && !this.disk.known(key) && this.admit(this.diskQueue!, 'disk', this.disk.writable);
      const toRedis = this.redis !== undefined && !this.redisKnown.has(key) && this.admit(this.redisQueue!, 'redis', this.redis.available);
      if (!this.memory && !toDisk && !toRedis) continue;
      const payload = getChunkBytes(i);
      if (payload.byteLength !== this.chunkBytes) {
        throw new RangeError(`kv store: chunk ${i} has ${payload.byteLength} bytes, expected ${this.chunkBytes}`);
      }
      taken++;
      if (this.memory?.put(key, payload)) {
        this.metrics.bytes.inc({ tier: 'memory' }, payload.byteLength + HEADER_BYTES);
        inMemory.push(key);
      }
      const job: WriteJob = { key, payload };
      if (toDisk) this.diskQueue!.offer(job);
      if (toRedis) this.redisQueue!.offer(job);
    }
    if (inMemory.length) this.opts.onStored?.(inMemory, 'memory');
    return taken;
  }

  /** Resolves when every write queued so far has reached its tier (or failed). */
  async flush(): Promise<void> {
    await Promise.all([this.diskQueue?.idle(), this.redisQueue?.idle()]);
  }

  stats(): KvStoreStats {
    return {
      ...(this.memory && { memory: { chunks: this.memory.size, bytes: this.memory.usedBytes, capacityBytes: this.memory.capacityBytes } }),
      ...(this.disk && {
        disk: { chunks: this.disk.size, bytes: this.disk.usedBytes, capacityBytes: this.disk.capacityBytes, writable: this.disk.writable },
      }),
      ...(this.redis && { redis: { available: this.redis.available } }),
      queued: { disk: this.diskQueue?.pending ?? 0, redis: this.redisQueue?.pending ?? 0 },
    };
  }

  /** Stop taking writes; by default finish the queued ones first. Then disconnect from Redis. */
  async close(opts: { flush?: boolean } = {}): Promise<void> {
    this.closed = true;
    if (opts.flush === false) {
      this.diskQueue?.clear();
      this.redisQueue?.clear();
    }
    await this.flush();
    this.redis?.close();
  }

  /** Whether a background tier takes one more write; counts a drop if not. */
  private admit(queue: WriteQueue<WriteJob>, tier: 'disk' | 'redis', writable: boolean): boolean {
    if (writable && !queue.full) return true;
    this.metrics.writeDrops.inc({ tier });
    return false;
  }

  /** The fastest tier holding each key, for the longest run of keys held somewhere. */
  private async locate(keys: string[]): Promise<TierName[]> {
    const out: TierName[] = [];
    let remote: boolean[] | undefined;
    let remoteFrom = 0;
    for (let i = 0; i < keys.length; i++) {
      const key = keys[i]!;
      if (this.memory?.has(key)) out.push('memory');
      else if (this.disk?.has(key)) out.push('disk');
      else if (this.redis) {
        // One round trip for everything from the first local miss on.
        if (!remote) {
          remoteFrom = i;
          remote = (await this.redis.existsMany(keys.slice(i))) ?? [];
        }
        if (remote[i - remoteFrom]) {
          this.rememberInRedis(key);
          out.push('redis');
        } else {
          this.redisKnown.delete(key);
          break;
        }
      } else break;
    }
    return out;
  }

  /** Read and verify one chunk; undefined (after counting and discarding a bad object) if unusable. */
  private async fetch(key: string, tier: TierName): Promise<Uint8Array | undefined> {
    const started = performance.now();
    if (tier === 'memory') {
      const p = this.memory!.get(key);
      if (p) this.metrics.loadSeconds.observe({ tier }, (performance.now() - started) / 1000);
      return p;
    }
    const bytes = tier === 'disk' ? await this.disk!.read(key) : await this.redis!.get(key);
    if (!bytes) {
      // Gone since the lookup (evicted, another engine, Redis down): a plain miss.
      if (tier === 'redis') this.redisKnown.delete(key);
      return undefined;
    }
    try {
      const payload = decodeChunk(bytes, { key, dtype: this.kvDtype, tokens: this.chunkTokens, payloadBytes: this.chunkBytes });
      this.metrics.loadSeconds.observe({ tier }, (performance.now() - started) / 1000);
      return payload;
    } catch (e) {
      if (!(e instanceof ChunkError)) throw e;
      this.metrics.errors.inc({ tier, reason: e.reason });
      if (tier === 'disk') this.disk!.remove(key);
      else {
        this.redisKnown.delete(key);
        void this.redis!.remove(key);
      }
      this.opts.onRemoved?.([key], tier);
      return undefined;
    }
  }

  private header(job: WriteJob): Uint8Array {
    return (job.header ??= encodeHeader(job.key, this.kvDtype, this.chunkTokens, job.payload));
  }

  private async writeDisk(job: WriteJob): Promise<void> {
    const r = await this.disk!.write(job.key, this.header(job), job.payload);
    if (r === 'written') this.opts.onStored?.([job.key], 'disk');
    else if (r === 'full' || r === 'too-large') this.metrics.writeDrops.inc({ tier: 'disk' });
  }

  private async writeRedis(job: WriteJob): Promise<void> {
    const r = await this.redis!.put(job.key, this.header(job), job.payload);
    if (r === 'written' || r === 'present') {
      this.rememberInRedis(job.key);
      this.opts.onStored?.([job.key], 'redis');
    } else if (r === 'down') this.metrics.writeDrops.inc({ tier: 'redis' });
  }

  private rememberInRedis(key: string): void {
    this.redisKnown.delete(key);
    this.redisKnown.add(key);
    if (this.redisKnown.size > 65_536) this.redisKnown.delete(this.redisKnown.values().next().value!);
  }
}
