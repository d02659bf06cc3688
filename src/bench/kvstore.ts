// `npm run bench:kvstore`: TTFT of one long prompt on synthetic:100m served five ways, in one run:
// cold (full prefill), block-pool hit, KV store memory tier, disk tier and Redis tier (the last two
// read by a second engine from what the first stored: LMCache's cross-engine reuse).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseFlags } from '../cli/args.ts';
import { loadModel } from '../model/index.ts';
import { measuredBy, writeReport } from './report.ts';
import { repoRoot, startServe, streamCompletion, type Served } from './serve-util.ts';

export async function main(argv: string[]): Promise<number> {
  const f = parseFlags(argv, {
    model: { type: 'string', default: 'synthetic:100m' },
    tokens: { type: 'string', default: '4096,8190' }, // 8190 + 2 output tokens = the 8192 context
    'kv-cache-memory': { type: 'string', default: '1536MiB' },
    out: { type: 'string', default: join(repoRoot, 'docs/bench-results/kvstore.md') },
  });
  const model = f.model!;
  const vocab = (await loadModel(model)).config.vocabSize;
  // @ts-expect-error plain JS helper shared with the tests and .ci/run
  const { startRedis } = (await import('../../scripts/redis-test-server.js')) as {
    startRedis(): Promise<{ url: string; stop(): Promise<void> }>;
  };
  const redis = await startRedis();
  const dir = mkdtempSync(join(tmpdir(), 'tandem-bench-kvstore-'));
  const servers: Served[] = [];
  const serve = async (...args: string[]) => {
    const s = await startServe(['--model', model, '--kv-cache-memory', f['kv-cache-memory']!, '--max-num-batched-tokens', '512', ...args]);
    servers.push(s);
    return s;
  };
  const rows: string[] = [];
  try {
    const pool = await serve();
    const writer = await serve('--no-prefix-caching', '--kv-store', `memory:3GiB,disk:${dir}:8GiB,${redis.url}`);
    const diskReader = await serve('--no-prefix-caching', '--kv-store', `disk:${dir}:8GiB`);
    const redisReader = await serve('--no-prefix-caching', '--kv-store', redis.url);
    for (const n of f.tokens!.split(',').map(Number)) {
      const prompt = (salt: number) => Array.from({ length: n }, (_, i) => 3 + ((i * 7919 + salt * 104729 + salt) % (vocab - 3)));
      const ttft = async (s: Served, p: number[]) => {
        const r = await streamCompletion(s.url, { prompt: p, max_tokens: 2, temperature: 0, ignore_eos: true });
        return r.ttftMs;
      };
      process.stderr.write(`bench:kvstore ${n} tokens: cold + block pool…\n`);
      const a = prompt(n + 1);
      const cold = await ttft(pool, a);
      const poolHit = await ttft(pool, a);
      process.stderr.write(`bench:kvstore ${n} tokens: store tiers…\n`);
      const b = prompt(n + 2);
      const coldWriter = await ttft(writer, b);
      const memHit = await ttft(writer, b);
      // let the background writers reach disk and Redis
      await new Promise((r) => setTimeout(r, 2000 + n));
      const diskHit = await ttft(diskReader, b);
      const redisHit = await ttft(redisReader, b);
      const recompute = (cold + coldWriter) / 2;
      const fmt = (ms: number) => `${ms.toFixed(0)} | ${(recompute / ms).toFixed(1)}×`;
      rows.push(
        `| ${n} | ${cold.toFixed(0)} / ${coldWriter.toFixed(0)} | ${fmt(poolHit)} | ${fmt(memHit)} | ${fmt(diskHit)} | ${fmt(redisHit)} |`,
      );
      process.stderr.write(rows[rows.length - 1] + '\n');
    }
  } finally {
    await Promise.all(servers.map((s) => s.stop()));
    await redis.stop();
    rmSync(dir, { recursive: true, force: true });
  }
  const report = [
    measuredBy('bench:kvstore'),
    `Model \`${model}\`, f32 KV, chunks of 256 tokens. TTFT in ms of one streamed request (2 output tokens) per cell; ` +
      'the speed-up is against recompute (mean of the two cold runs). Disk and Redis hits are read by a *second* engine ' +
      'from what the first one stored (cross-engine reuse); memory hits by the engine that stored them (prefix caching off, so the store is what hits).',
    '',
    '| prompt tokens | cold (recompute) ms | block-pool hit ms | × | memory tier ms | × | disk tier ms | × | Redis tier ms | × |',
    '|---|---|---|---|---|---|---|---|---|---|',
    ...rows.map((r) => r),
  ].join('\n');
  console.log(report);
  writeReport(f.out!, report);
  return 0;
}
