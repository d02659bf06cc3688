// Seed Figures 3–4: the scheduler keeps a short prompt on one node and splits a longer one. First two
// single-user requests (5 and 59 prompt tokens) through the default-style threshold decider, with the
// route each took; then a sweep of prompt lengths comparing always-split, never-split, the threshold
// (prefix-based) decider and the cost-model decider, all on the same 1 prefill + 1 decode engines.
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { streamRequest } from '../loadgen/index.ts';
import type { LineChart } from '../plot.ts';
import { schedulerConfig, startUp, type Decider } from './cluster.ts';
import { fmt, p, scale, table, type Experiment, type ModeReport, type RunOptions } from './common.ts';

interface Probe {
  route: string;
  decision: string;
  ttftMs: number;
  itls: number[];
  e2eMs: number;
  tokens: number;
  error?: string;
}

/** One streamed completion through the gateway (the load generator's client), keeping the route it took. */
async function probe(url: string, body: Record<string, unknown>): Promise<Probe> {
  const r = await streamRequest({ url: new URL('/v1/completions', url), body: { ...body, stream: true }, promptLen: 0 }, performance.now());
  if (!r.success) return { route: 'error', decision: '', ttftMs: NaN, itls: [], e2eMs: NaN, tokens: 0, error: r.error };
  return {
    route: r.route?.route ?? 'unknown',
    decision: r.route?.decision ?? '',
    ttftMs: r.ttft * 1000,
    itls: r.itl.map((s) => s * 1000),
    e2eMs: r.latency * 1000,
    tokens: r.outputTokens,
  };
}

const DECIDERS: { name: string; decider: Decider }[] = [
  { name: 'never split', decider: 'never-disagg-pd-decider' },
  { name: 'always split', decider: 'always-disagg-pd-decider' },
  { name: 'threshold (16 uncached tokens)', decider: { type: 'prefix-based-pd-decider', nonCachedTokens: 16 } },
  { name: 'cost model', decider: { type: 'cost-model-pd-decider' } },
];

function plan(o: RunOptions) {
  if (o.mode === 'real') {
    return {
      lengths: o.quick ? [8, 128] : [8, 64, 256, 768, 1536],
      perLength: o.quick ? 2 : 6,
      concurrency: 2,
      outputLen: o.quick ? 8 : 24,
      engineArgs: [] as string[],
    };
  }
  return {
    lengths: o.quick ? [8, 2048] : [8, 128, 1024, 4096, 8192],
    perLength: o.quick ? 4 : 24,
    concurrency: 8,
    outputLen: o.quick ? 16 : 128,
    engineArgs: [] as string[],
  };
}

async function run(o: RunOptions): Promise<ModeReport> {
  const t0 = performance.now();
  const s = scale(o.mode);
  const pl = plan(o);
  const dir = mkdtempSync(join(tmpdir(), 'tandem-exp-adaptive-'));
  o.log(`adaptive-routing ${o.mode}: configs and cluster logs in ${dir}`);
  // every prompt distinct (a counter in the first tokens), so no request is helped by an earlier one's cache
  let serial = 0;
  const prompt = (n: number) => {
    const id = ++serial;
    return Array.from({ length: n }, (_, j) => 3 + ((j < 3 ? Math.floor(id / (s.vocab - 3) ** j) : id * 7919 + j * 104729) % (s.vocab - 3)));
  };
  const single: { promptTokens: number; route: string; decision: string; ttftMs: number; e2eMs: number }[] = [];
  const sweep: { decider: string; promptTokens: number; split: number; n: number; failed: number; meanTtftMs: number; p90TtftMs: number; meanItlMs: number; p99ItlMs: number }[] = [];
  for (const [k, d] of DECIDERS.entries()) {
    const cfg = join(dir, `${k}.yaml`);
    writeFileSync(cfg, schedulerConfig({ decider: d.decider }));
    const cluster = await startUp(['--prefill', '1', '--decode', '1', ...s.upArgs, '--port', '0', '--config', cfg, ...pl.engineArgs], { cpus: s.cpus, logFile: join(dir, `${k}.log`) });
    try {
      const model = ((await (await fetch(`${cluster.url}/v1/models`)).json()) as { data: { id: string }[] }).data[0]!.id;
      const body = (n: number) => ({ model, prompt: prompt(n), max_tokens: pl.outputLen, ignore_eos: true, temperature: 0 });
      // warm-up: the cost model learns rates from what it observes; give every decider the same start
      for (const n of [pl.lengths[0]!, pl.lengths[pl.lengths.length - 1]!]) await probe(cluster.url, body(n));
      if (d.name.startsWith('threshold')) {
        // Figures 3–4: the seed's two single-user requests, 5 and 59 prompt tokens
        for (const n of [5, 59]) {
          for (let rep = 0; rep < 3; rep++) {
            const r = await probe(cluster.url, body(n));
            single.push({ promptTokens: n, route: r.route, decision: r.decision, ttftMs: r.ttftMs, e2eMs: r.e2eMs });
          }
          const last = single[single.length - 1]!;
          o.log(`adaptive-routing ${o.mode}: ${n}-token prompt → ${last.route} (${last.decision})`);
        }
      }
      for (const n of pl.lengths) {
        const rs: Probe[] = [];
        let next = 0;
        await Promise.all(
          Array.from({ length: pl.concurrency }, async () => {
            while (next < pl.perLength) {
              next++;
              rs.push(await probe(cluster.url, body(n)));
            }
          }),
        );
        const ok = rs.filter((r) => !r.error);
        const ttfts = ok.map((r) => r.ttftMs);
        const itls = ok.flatMap((r) => r.itls);
        const row = {
          decider: d.name,
          promptTokens: n,
          split: ok.filter((r) => r.route === 'prefill-decode').length / Math.max(1, ok.length),
          n: ok.length,
          failed: rs.length - ok.length,
          meanTtftMs: ttfts.reduce((a, b) => a + b, 0) / Math.max(1, ttfts.length),
          p90TtftMs: p(ttfts, 90),
          meanItlMs: itls.reduce((a, b) => a + b, 0) / Math.max(1, itls.length),
          p99ItlMs: p(itls, 99),
        };
        sweep.push(row);
        o.log(`adaptive-routing ${o.mode}: ${d.name}, ${n} tokens: split ${fmt(row.split * 100, 0)}%, TTFT mean ${fmt(row.meanTtftMs)} ms, ITL mean ${fmt(row.meanItlMs)} ms`);
        if (row.failed) o.log(`  ${row.failed} failed: ${rs.find((r) => r.error)?.error}`);
      }
    } finally {
      await cluster.stop();
    }
  }
  const chart = (title: string, y: keyof (typeof sweep)[number], yTitle: string, log = false): LineChart => ({
    title,
    x: { title: 'prompt tokens', log: true },
    y: { title: yTitle, log },
    width: 300,
    height: 220,
    series: DECIDERS.map((d) => ({
      name: d.name,
      dashed: d.name.startsWith('always') || d.name.startsWith('never'),
      points: sweep.filter((r) => r.decider === d.name).map((r) => ({ x: r.promptTokens, y: (r[y] as number) * (y === 'split' ? 100 : 1) })),
    })),
  });
  return {
    mode: o.mode,
    setup:
      `${s.describe}. \`tandem up --prefill 1 --decode 1\` behind the gateway, one configuration per decider (same scorers: the default queue/KV/prefix/active-request weights). ` +
      `Single-user requests of 5 and 59 prompt tokens under the threshold decider (3 each), then for every decider and prompt length ${pl.perLength} requests ` +
      `at concurrency ${pl.concurrency}, ${pl.outputLen} output tokens each; every prompt distinct. Two warm-up requests per configuration are not counted.`,
    results: { single, sweep },
    figures: [
      {
        file: `adaptive-routing-${o.mode}`,
        caption: `Share of requests split, mean TTFT and mean ITL against prompt length, per decider (${o.mode === 'real' ? 'real CPU engines' : 'simulated H200 engines'})`,
        columns: 3,
        charts: [chart('requests split (%)', 'split', '%'), chart('TTFT mean', 'meanTtftMs', 'ms', true), chart('ITL mean', 'meanItlMs', 'ms')],
      },
    ],
    tables: [
      table(
        ['prompt tokens', 'route (x-tandem-route)', 'decision (x-tandem-decision)', 'TTFT ms', 'E2E ms'],
        single.map((r) => [r.promptTokens, r.route, `\`${r.decision}\``, fmt(r.ttftMs), fmt(r.e2eMs)]),
      ),
      table(
        ['decider', 'prompt tokens', 'split %', 'ok', 'failed', 'TTFT mean ms', 'TTFT p90 ms', 'ITL mean ms', 'ITL p99 ms'],
        sweep.map((r) => [r.decider, r.promptTokens, fmt(r.split * 100, 0), r.n, r.failed, fmt(r.meanTtftMs), fmt(r.p90TtftMs), fmt(r.meanItlMs), fmt(r.p99ItlMs)]),
      ),
    ],
    reading: readAdaptive(single, sweep),
    wallSeconds: (performance.now() - t0) / 1000,
  };
}

function readAdaptive(
  single: { promptTokens: number; route: string }[],
  sweep: { decider: string; promptTokens: number; split: number; meanTtftMs: number; meanItlMs: number }[],
): string[] {
  const out: string[] = [];
  const route = (n: number) => [...new Set(single.filter((r) => r.promptTokens === n).map((r) => r.route))].join('/');
  out.push(`The threshold decider kept the 5-token prompt ${route(5) === 'decode-only' ? 'on one engine' : `on route ${route(5)}`} and sent the 59-token prompt ${route(59) === 'prefill-decode' ? 'through prefill + decode' : `on route ${route(59)}`}, as in the seed's Figures 3–4.`);
  const lengths = [...new Set(sweep.map((r) => r.promptTokens))];
  for (const n of [lengths[0]!, lengths[lengths.length - 1]!]) {
    const at = sweep.filter((r) => r.promptTokens === n);
    const best = at.reduce((a, b) => (b.meanTtftMs < a.meanTtftMs ? b : a));
    out.push(`At ${n} prompt tokens the lowest mean TTFT is ${best.decider}'s (${fmt(best.meanTtftMs)} ms; ${at.map((r) => `${r.decider} ${fmt(r.meanTtftMs)}`).join(', ')}).`);
  }
  const cm = sweep.filter((r) => r.decider === 'cost model');
  if (cm.length) out.push(`The cost model split ${cm.map((r) => `${fmt(r.split * 100, 0)}% at ${r.promptTokens}`).join(', ')} tokens.`);
  return out;
}

export const adaptiveRouting: Experiment = {
  name: 'adaptive-routing',
  title: 'Adaptive P/D routing by prompt length (seed Figures 3–4)',
  about:
    'The seed\'s scheduler ran a 5-token single-user prompt on one node and split a 59-token one across a prefill and a decode node. ' +
    'tandem\'s gateway decides per request (`x-tandem-route` says which path was taken, `x-tandem-decision` why). This experiment shows the two ' +
    'requests, then compares four deciders over prompt lengths: when does splitting pay?',
  run,
};
