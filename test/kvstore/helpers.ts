// Shared fixtures for the KV store tests: a small model shape, deterministic prompts and payloads,
// metric reads, and a child-process runner for cross-engine tests.
import { spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Registry } from 'prom-client';
import { KvStore, type KvStoreOptions, type TierName } from '../../src/kvstore/index.ts';

export const LAYOUT = { nLayers: 2, nKvHeads: 2, headDim: 8 };
export const CHUNK = 16;
/** 2 layers × K,V × 16 tokens × 16 elements × 4 bytes */
export const CHUNK_BYTES = 2 * 2 * CHUNK * 16 * 4;

export const ROOT = new URL('../..', import.meta.url).pathname;

export function prompt(nTokens: number, seed = 1): number[] {
  return Array.from({ length: nTokens }, (_, i) => (i * 2654435761 + seed * 40503) % 32000);
}

/** The "KV" of chunk i of a prompt: a function of the prompt's tokens up to the chunk's end. */
export function payloadFor(tokens: ArrayLike<number>, i: number, bytes = CHUNK_BYTES): Uint8Array {
  let h = 2166136261;
  for (let t = 0; t < (i + 1) * CHUNK; t++) h = Math.imul(h ^ tokens[t]!, 16777619) >>> 0;
  const out = new Uint8Array(bytes);
  for (let j = 0; j < bytes; j++) {
    h = Math.imul(h ^ j, 16777619) >>> 0;
    out[j] = h & 255;
  }
  return out;
}

export function tmpDir(tag: string): string {
  return mkdtempSync(join(tmpdir(), `tandem-kvstore-${tag}-`));
}

export interface Recorded {
  stored: { keys: string[]; tier: TierName }[];
  removed: { keys: string[]; tier: TierName }[];
  logs: string[];
}

export async function openStore(
  spec: string,
  extra: Partial<KvStoreOptions> = {},
): Promise<{ store: KvStore; registry: Registry; rec: Recorded }> {
  const registry = new Registry();
  const rec: Recorded = { stored: [], removed: [], logs: [] };
  const store = await KvStore.fromSpec(spec, {
    modelFingerprint: 'fp-test',
    kvDtype: 'f32',
    chunkTokens: CHUNK,
    layout: LAYOUT,
    registry,
    log: (l) => rec.logs.push(l),
    onStored: (keys, tier) => rec.stored.push({ keys, tier }),
    onRemoved: (keys, tier) => rec.removed.push({ keys, tier }),
    redis: { minBackoffMs: 50, maxBackoffMs: 400 },
    ...extra,
  });
  return { store, registry, rec };
}

/** Store every full chunk of `tokens` and wait for the background tiers. */
export async function storeAll(store: KvStore, tokens: number[], salt = '', from = 0): Promise<void> {
  store.store(tokens, salt, from, (i) => payloadFor(tokens, i));
  await store.flush();
}

export async function metric(registry: Registry, name: string, labels: Record<string, string> = {}): Promise<number> {
  const m = registry.getSingleMetric(name);
  if (!m) return 0;
  const { values } = await m.get();
  let sum = 0;
  for (const v of values) {
    if ((v as { metricName?: string }).metricName?.endsWith('_bucket')) continue;
    if (Object.entries(labels).every(([k, x]) => (v.labels as Record<string, unknown>)[k] === x)) sum += v.value;
  }
  return sum;
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Run test/kvstore/child.ts in its own process (a second "engine") and return its JSON answer. */
export function runChild(args: Record<string, unknown>): Promise<any> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'test/kvstore/child.ts'), JSON.stringify(args)], {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    child.on('close', (code) => {
      if (code !== 0) return reject(new Error(`child exited ${code}: ${err}`));
      try {
        resolve(JSON.parse(out.trim().split('\n').pop()!));
      } catch {
        reject(new Error(`child printed no JSON: ${out} ${err}`));
      }
    });
  });
}

export interface TestRedis {
  url: string;
  port: number;
  pid: number;
  stop(): Promise<void>;
  kill(signal?: NodeJS.Signals): Promise<void>;
}

/** scripts/redis-test-server.js (plain JS, so typed here). */
export async function startRedis(opts: { port?: number } = {}): Promise<TestRedis> {
  const mod = (await import(join(ROOT, 'scripts/redis-test-server.js') as string)) as {
    startRedis(o: { port?: number }): Promise<TestRedis>;
  };
  return mod.startRedis(opts);
}
