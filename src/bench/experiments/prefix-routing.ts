// Prefix-aware routing: a shared-prefix workload (G groups of requests that share a long system
// prompt) over several engines, whose caches together hold every prefix but each alone holds only a
// part. Round-robin and queue-only scheduling spread each group over all engines and keep evicting;
// prefix + load scoring keeps a group where its prefix is cached. Approximate = the gateway's own
// routing history; precise = the engines' KV events.
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { LineChart } from '../plot.ts';
import { DEFAULT_SCORERS, schedulerConfig, startUp, type SchedulerSpec } from './cluster.ts';
import { fmt, scrapeCounters, scale, table, type Experiment, type Figure, type Mode, type ModeReport, type RunOptions } from './common.ts';
import { runLoad, type BenchResult } from '../loadgen/index.ts';

const POLICIES: { name: string; spec: Omit<SchedulerSpec, 'decider'> }[] = [
  { name: 'round-robin', spec: { scorers: [{ type: 'round-robin', weight: 1 }] } },
  { name: 'queue only', spec: { scorers: [{ type: 'queue-scorer', weight: 1 }] } },
  { name: 'prefix + load (approximate)', spec: { scorers: DEFAULT_SCORERS, prefix: 'approx' } },
  { name: 'prefix + load (precise, KV events)', spec: { scorers: DEFAULT_SCORERS, prefix: 'precise' } },
];

function plan(o: RunOptions) {
  if (o.mode === 'real') {
    // 2 engines × 320 blocks × 16 = 5,120 tokens each; 12 prefixes × 512 = 6,144 tokens in all
    return {
      engines: 2,
      groups: 12,
      prefixLen: 512,
      suffixLen: 32,
      outputLen: o.quick ? 4 : 16,
      qps: 1.5,
      seconds: o.quick ? 4 : 40,
      engineArgs: ['--engine-arg=--num-blocks=320'],
    };
  }
  // 4 engines × 4,096 blocks × 16 = 65,536 tokens each; 32 prefixes × 4,096 = 131,072 tokens in all
  return {
    engines: 4,
    groups: 32,
    prefixLen: 4096,
    suffixLen: 128,
    outputLen: o.quick ? 16 : 64,
    qps: 24,
    seconds: o.quick ? 3 : 25,
    engineArgs: ['--engine-arg=--num-blocks=4096'],
  };
}

type Row = { policy: string; result: BenchResult; hitRate: number };

/** TTFT p50/p90, hit rate and throughput per policy, one bar each. */
export function prefixFigure(mode: Mode, rows: Row[]): Figure {
  const bar = (title: string, y: string, f: (r: Row) => number): LineChart => ({
    kind: 'bar',
    title,
    x: { title: '' },
    y: { title: y, zero: true },
    width: 300,
    height: 200,
    series: rows.map((r) => ({ name: r.policy, points: [{ x: 0, y: f(r) }] })),
  });
  return {
    file: `prefix-routing-${mode}`,
    caption: `TTFT p50 and p90, prefix-cache hit rate and output throughput per routing policy (${mode === 'real' ? 'real CPU engines' : 'simulated H200 engines'})`,
    columns: 2,
    charts: [
      bar('TTFT p50', 'ms', (r) => r.result.median_ttft_ms),
      bar('TTFT p90', 'ms', (r) => r.result.p90_ttft_ms),
      bar('prefix-cache hit rate', '%', (r) => r.hitRate * 100),
      bar('output throughput', 'tok/s', (r) => r.result.output_throughput),
    ],
  };
}

async function run(o: RunOptions): Promise<ModeReport> {
  const t0 = performance.now();
  const s = scale(o.mode);
  const pl = plan(o);
  const dir = mkdtempSync(join(tmpdir(), 'tandem-exp-prefix-'));
  o.log(`prefix-routing ${o.mode}: configs and cluster logs in ${dir}`);
  const rows: Row[] = [];
  for (const [k, pol] of POLICIES.entries()) {
    const cfg = join(dir, `${k}.yaml`);
    writeFileSync(cfg, schedulerConfig({ decider: 'never-disagg-pd-decider', ...pol.spec }));
    const cluster = await startUp(['--prefill', '0', '--decode', '0', '--both', String(pl.engines), ...s.upArgs, '--port', '0', '--config', cfg, ...pl.engineArgs], {
      cpus: s.cpus,
      logFile: join(dir, `${k}.log`),
    });
    try {
      o.log(`prefix-routing ${o.mode}: ${pol.name}, ${pl.groups} groups × ${pl.prefixLen}-token prefix at ${pl.qps} QPS for ${pl.seconds} s`);
      const before = await scrapeCounters(cluster.engines.map((e) => e.url));
      const result = await runLoad({
        url: cluster.url,
        vocabSize: s.vocab,
        dataset: { kind: 'shared-prefix', groups: pl.groups, prefixLen: pl.prefixLen, suffixLen: pl.suffixLen, outputLen: pl.outputLen },
        qps: pl.qps,
        arrival: 'poisson',
        durationS: pl.seconds,
        seed: 7, // the same prefixes and arrival times for every policy
      });
      const after = await scrapeCounters(cluster.engines.map((e) => e.url));
      const d = (k: string) => (after[k] ?? 0) - (before[k] ?? 0);
      const hitRate = d('vllm:prefix_cache_hits_total') / Math.max(1, d('vllm:prefix_cache_queries_total'));
      if (result.failed) o.log(`  errors: ${[...new Set(result.errors)].slice(0, 3).join(' | ')}`);
      rows.push({ policy: pol.name, result, hitRate });
      o.log(`  completed ${result.completed} failed ${result.failed}; TTFT p50 ${fmt(result.median_ttft_ms)} p90 ${fmt(result.p90_ttft_ms)} ms; prefix hit rate ${fmt(hitRate * 100, 0)}%`);
    } finally {
      await cluster.stop();
    }
  }
  const rr = rows[0];
  const best = rows.reduce((a, b) => ((b.result.median_ttft_ms as number) < (a.result.median_ttft_ms as number) ? b : a));
  return {
    mode: o.mode,
    setup:
      `${s.describe}. \`tandem up --both ${pl.engines}\` (decode-only routing, no P/D split), engine flags ${pl.engineArgs.map((a) => `\`${a}\``).join(' ')}: ` +
      `each engine's KV cache holds about half of the ${pl.groups} shared prefixes (${pl.prefixLen} tokens each), all engines together hold them all. ` +
      `Requests: a random group's prefix + ${pl.suffixLen} distinct tokens, ${pl.outputLen} output tokens, Poisson at ${pl.qps} QPS for ${pl.seconds} s, the same seed for every policy. ` +
      'Prefix + load = the default weights (queue 2, KV-cache 2, prefix 3, active requests 1). Hit rate = Δ`vllm:prefix_cache_hits_total` / Δ`vllm:prefix_cache_queries_total` over all engines.',
    results: rows.map((r) => ({ policy: r.policy, prefixCacheHitRate: r.hitRate, ...r.result })),
    figures: [prefixFigure(o.mode, rows)],
    tables: [
      table(
        ['policy', 'completed', 'failed', 'TTFT p50 ms', 'TTFT p90 ms', 'TTFT p99 ms', 'ITL mean ms', 'prefix hit %', 'req/s', 'output tok/s'],
        rows.map((r) => [
          r.policy,
          r.result.completed,
          r.result.failed,
          fmt(r.result.median_ttft_ms),
          fmt(r.result.p90_ttft_ms),
          fmt(r.result.p99_ttft_ms),
          fmt(r.result.mean_itl_ms),
          fmt(r.hitRate * 100, 0),
          fmt(r.result.request_throughput, 2),
          fmt(r.result.output_throughput, 0),
        ]),
      ),
    ],
    reading: [
      `Lowest TTFT p50: ${best.policy} (${fmt(best.result.median_ttft_ms)} ms${rr && best !== rr ? `, ${fmt((rr.result.median_ttft_ms as number) / (best.result.median_ttft_ms as number), 1)}× lower than round-robin` : ''}).`,
      `Prefix-cache hit rates: ${rows.map((r) => `${r.policy} ${fmt(r.hitRate * 100, 0)}%`).join(', ')}.`,
      'Throughput is set by the offered load (the same Poisson arrivals for every policy) unless a policy saturates the engines; compare TTFT and hit rate.',
    ],
    wallSeconds: (performance.now() - t0) / 1000,
  };
}

export const prefixRouting: Experiment = {
  name: 'prefix-routing',
  title: 'Prefix-aware routing on a shared-prefix workload',
  about:
    'llm-d\'s headline scheduling result: on workloads where many requests share a long prefix (system prompts, few-shot examples, multi-turn chat), ' +
    'routing a request to the engine that already caches its prefix cuts TTFT. Four policies over the same engines and the same request stream.',
  run,
};
