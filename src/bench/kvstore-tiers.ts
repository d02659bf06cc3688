// Raw KV store tier throughput: how fast `KvStore.load` brings chunks back from memory, disk (warm page
// cache) and Redis, including the checksum check. `measureTierLoad` is what `bench kvstore` calls to
// put tier costs next to recompute; run this file directly for a table over chunk sizes:
//
//   node --import tsx src/bench/kvstore-tiers.ts [--redis redis://127.0.0.1:6379] [--dir /tmp/x] [--total 64MiB] [--json]
//
// Without --redis a throwaway redis-server is started (scripts/redis-test-server.js).
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, unlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Redis } from 'ioredis';
import { parseBytes, parseFlags } from '../cli/args.ts';
import { KvStore, parseKvStoreSpec, type TierName } from '../kvstore/index.ts';

export interface TierLoadResult {
  tier: TierName;
  /** Bytes loaded per measurement (payload, a whole number of chunks). */
  bytes: number;
  chunkBytes: number;
  chunks: number;
  /** Median wall time of one `load` of all chunks. */
  seconds: number;
  gbPerSecond: number;
}

const CHUNK_TOKENS = 256;
/** f32, one layer, one KV head: a chunk of 256 tokens is 2 KiB per element of headDim. */
const GRAIN = 2 * CHUNK_TOKENS * 4;

/**
 * Store `bytes` of KV (in chunks of `chunkBytes`, default min(bytes, 4 MiB), rounded to 2 KiB) into
 * the one tier `spec` names, then time loading it back `repeats` times. The data is removed afterwards.
 */
export async function measureTierLoad(
  spec: string,
  bytes: number,
  opts: { chunkBytes?: number; repeats?: number } = {},
): Promise<TierLoadResult> {
  const parsed = parseKvStoreSpec(spec);
  const tiers = (Object.keys(parsed) as TierName[]).filter((t) => parsed[t]);
  // With two tiers, the first load would promote into memory and the rest would time memory.
  if (tiers.length !== 1) throw new Error(`measureTierLoad: give exactly one tier, got '${spec}'`);
  const chunkBytes = Math.max(GRAIN, Math.round(Math.min(opts.chunkBytes ?? 4 << 20, bytes) / GRAIN) * GRAIN);
  const chunks = Math.max(1, Math.round(bytes / chunkBytes));
  const repeats = opts.repeats ?? 5;
  // A fresh fingerprint per run: nothing already stored can be reused, and cleanup knows every key.
  const store = await KvStore.fromSpec(spec, {
    modelFingerprint: `bench-${randomBytes(8).toString('hex')}`,
    kvDtype: 'f32',
    chunkTokens: CHUNK_TOKENS,
    layout: { nLayers: 1, nKvHeads: 1, headDim: chunkBytes / GRAIN },
    writeQueueLimit: chunks,
    log: () => {},
  });
  const tokens = Array.from({ length: chunks * CHUNK_TOKENS }, (_, i) => i % 50_000);
  const keys = store.chunkKeys(tokens);
  try {
    store.store(tokens, '', 0, () => randomBytes(chunkBytes));
    await store.flush();
    const times: number[] = [];
    for (let r = 0; r < repeats; r++) {
      const t0 = performance.now();
      const res = await store.load(tokens);
      times.push((performance.now() - t0) / 1000);
      if (res.chunks.length !== chunks) throw new Error(`measureTierLoad: ${tiers[0]} returned ${res.chunks.length}/${chunks} chunks`);
    }
    times.sort((a, b) => a - b);
    const seconds = times[Math.floor(times.length / 2)]!;
    return { tier: tiers[0]!, bytes: chunks * chunkBytes, chunkBytes, chunks, seconds, gbPerSecond: (chunks * chunkBytes) / seconds / 1e9 };
  } finally {
    await store.close({ flush: false });
    if (parsed.disk) {
      for (const k of keys) {
        try {
          unlinkSync(join(parsed.disk.dir, `${k}.kv`));
        } catch {
          // evicted already
        }
      }
    }
    if (parsed.redis) {
      const c = new Redis({ host: parsed.redis.host, port: parsed.redis.port, db: parsed.redis.db, lazyConnect: true });
      try {
        await c.connect();
        await c.del(...keys.map((k) => `tandem:kv:${k}`));
      } catch {
        // best effort
      } finally {
        c.disconnect();
      }
    }
  }
}

async function main(argv: string[]): Promise<void> {
  const f = parseFlags(argv, {
    redis: { type: 'string', help: 'redis://host:port of a running Redis (default: start one)' },
    dir: { type: 'string', help: 'directory for the disk tier (default: a temp dir)' },
    total: { type: 'string', default: '64MiB', help: 'bytes loaded per measurement' },
    json: { type: 'boolean' },
  });
  const total = parseBytes(f.total!);
  const dir = f.dir ?? mkdtempSync(join(tmpdir(), 'tandem-kvbench-'));
  let redisUrl = f.redis;
  let stopRedis: (() => Promise<void>) | undefined;
  if (!redisUrl) {
    const helper = new URL('../../scripts/redis-test-server.js', import.meta.url).pathname;
    const { startRedis } = (await import(helper as string)) as { startRedis(): Promise<{ url: string; stop(): Promise<void> }> };
    const r = await startRedis();
    redisUrl = r.url;
    stopRedis = r.stop;
  }
  const specs = [`memory:${total * 2}`, `disk:${dir}:${total * 2}`, redisUrl];
  const sizes = [256 << 10, 1 << 20, 4 << 20, 8 << 20];
  const rows: TierLoadResult[] = [];
  try {
    for (const spec of specs) for (const chunkBytes of sizes) rows.push(await measureTierLoad(spec, total, { chunkBytes }));
  } finally {
    await stopRedis?.();
    if (!f.dir) rmSync(dir, { recursive: true, force: true });
  }
  if (f.json) {
    for (const r of rows) console.log(JSON.stringify(r));
    return;
  }
  console.log(`KV store tier load throughput (GB/s, ${(total / 2 ** 20).toFixed(0)} MiB per load, median of 5, CRC-32 checked)`);
  console.log(`${'chunk'.padEnd(8)}${sizes.map(() => '').join('')}${['memory', 'disk', 'redis'].map((t) => t.padStart(10)).join('')}`);
  for (const s of sizes) {
    const cells = ['memory', 'disk', 'redis'].map((t) => rows.find((r) => r.tier === t && r.chunkBytes === s)!.gbPerSecond.toFixed(2).padStart(10));
    console.log(`${(s >= 1 << 20 ? `${s >> 20} MiB` : `${s >> 10} KiB`).padEnd(8)}${cells.join('')}`);
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  await main(process.argv.slice(2));
}
