// Seed Figures 1–2: inter-token latency against offered load, coupled vs disaggregated. Both setups
// get two engines and the same gateway: coupled = two `both` engines (each interleaves prefills with
// its running decodes), disaggregated = one prefill + one decode engine with every request split.
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { LineChart, Series } from '../plot.ts';
import { schedulerConfig, startUp, type Decider } from './cluster.ts';
import { fmt, scale, table, type Experiment, type ModeReport, type RunOptions } from './common.ts';
import { runLoad, type BenchResult } from '../loadgen/index.ts';

const SETUPS: { name: string; topo: string[]; decider: Decider }[] = [
  { name: 'coupled (2 × both)', topo: ['--prefill', '0', '--decode', '0', '--both', '2'], decider: 'never-disagg-pd-decider' },
  { name: 'disaggregated (1 P + 1 D)', topo: ['--prefill', '1', '--decode', '1'], decider: 'always-disagg-pd-decider' },
];

function plan(o: RunOptions) {
  if (o.mode === 'real') {
    return {
      qps: o.quick ? [1] : [0.5, 1, 1.5, 2],
      seconds: o.quick ? 4 : 25,
      inputLen: o.quick ? 128 : 384,
      outputLen: o.quick ? 8 : 48,
      // one prompt per step (no chunking), like the simulated setup below
      engineArgs: ['--engine-arg=--max-num-batched-tokens=512'],
    };
  }
  return {
    qps: o.quick ? [4] : [2, 4, 6, 8, 10],
    seconds: o.quick ? 3 : 15,
    inputLen: 4096,
    outputLen: o.quick ? 32 : 256,
    // a whole 4K prompt per step, as vLLM schedules long prompts without chunked prefill (the seed's
    // setting); chunking would shrink the coupled engines' stalls, not remove them
    engineArgs: ['--engine-arg=--max-num-batched-tokens=4096'],
  };
}

async function run(o: RunOptions): Promise<ModeReport> {
  const t0 = performance.now();
  const s = scale(o.mode);
  const pl = plan(o);
  const dir = mkdtempSync(join(tmpdir(), 'tandem-exp-itl-'));
  o.log(`itl-vs-qps ${o.mode}: configs and cluster logs in ${dir}`);
  const points: { setup: string; qps: number; result: BenchResult }[] = [];
  for (const [k, setup] of SETUPS.entries()) {
    const cfg = join(dir, `${k}.yaml`);
    writeFileSync(cfg, schedulerConfig({ decider: setup.decider }));
    const cluster = await startUp([...setup.topo, ...s.upArgs, '--port', '0', '--config', cfg, ...pl.engineArgs], { cpus: s.cpus, logFile: join(dir, `${k}.log`) });
    try {
      for (const qps of pl.qps) {
        o.log(`itl-vs-qps ${o.mode}: ${setup.name} at ${qps} QPS for ${pl.seconds} s`);
        const result = await runLoad({
          url: cluster.url,
          vocabSize: s.vocab,
          dataset: { kind: 'random', inputLen: pl.inputLen, outputLen: pl.outputLen },
          qps,
          arrival: 'poisson',
          durationS: pl.seconds,
          seed: 1000 + Math.round(qps * 10),
        });
        o.log(`  completed ${result.completed} failed ${result.failed}; ITL mean ${fmt(result.mean_itl_ms)} p99 ${fmt(result.p99_itl_ms)} ms; TTFT p99 ${fmt(result.p99_ttft_ms, 0)} ms`);
        if (result.failed) o.log(`  errors: ${[...new Set(result.errors)].slice(0, 3).join(' | ')}`);
        points.push({ setup: setup.name, qps, result });
      }
    } finally {
      await cluster.stop();
    }
  }
  const series = (field: string): Series[] =>
    SETUPS.map((st) => ({ name: st.name, points: points.filter((x) => x.setup === st.name).map((x) => ({ x: x.qps, y: x.result[field] as number })) }));
  const chart = (title: string, field: string, log = false): LineChart => ({ title, x: { title: 'offered load (QPS, Poisson)' }, y: { title: 'ms', log }, series: series(field) });
  const rows = points.map((x) => [
    x.setup,
    x.qps,
    x.result.completed,
    x.result.failed,
    fmt(x.result.mean_itl_ms),
    fmt(x.result.median_itl_ms),
    fmt(x.result.p99_itl_ms),
    fmt(x.result.mean_tpot_ms),
    fmt(x.result.median_ttft_ms, 0),
    fmt(x.result.p99_ttft_ms, 0),
    fmt(x.result.output_throughput, 0),
  ]);
  return {
    mode: o.mode,
    setup:
      `${s.describe}. ${pl.inputLen}-token prompts (all distinct: no prefix-cache help), ${pl.outputLen} output tokens (ignore_eos), streamed; ` +
      `Poisson arrivals for ${pl.seconds} s per point, QPS ${pl.qps.join(', ')}. Coupled: \`tandem up --both 2\` with \`never-disagg-pd-decider\`; ` +
      `disaggregated: \`tandem up --prefill 1 --decode 1\` with \`always-disagg-pd-decider\`; engine flags ${pl.engineArgs.map((a) => `\`${a}\``).join(' ')}. ` +
      'ITL = every gap between streamed tokens, pooled over requests (vLLM `bench serve`).',
    results: points.map((x) => ({ setup: x.setup, qps: x.qps, ...x.result })),
    figures: [
      {
        file: `itl-vs-qps-${o.mode}`,
        caption: `ITL mean and p99, TTFT p99 against QPS (${o.mode === 'real' ? 'real CPU engines' : 'simulated H200 engines'}); lower is better`,
        columns: 3,
        charts: [chart('ITL mean', 'mean_itl_ms'), chart('ITL p99', 'p99_itl_ms'), chart('TTFT p99', 'p99_ttft_ms', true)].map((c) => ({ ...c, width: 300, height: 220 })),
      },
    ],
    tables: [table(['setup', 'QPS', 'completed', 'failed', 'ITL mean ms', 'ITL p50 ms', 'ITL p99 ms', 'TPOT mean ms', 'TTFT p50 ms', 'TTFT p99 ms', 'output tok/s'], rows)],
    reading: readItl(points),
    wallSeconds: (performance.now() - t0) / 1000,
  };
}

function readItl(points: { setup: string; qps: number; result: BenchResult }[]): string[] {
  const [c, d] = SETUPS.map((st) => points.filter((x) => x.setup === st.name));
  if (!c?.length || !d?.length) return ['Incomplete run.'];
  const out: string[] = [];
  const spread = (xs: typeof c, f: string) => {
    const v = xs.map((x) => x.result[f] as number).filter(Number.isFinite);
    return { min: Math.min(...v), max: Math.max(...v) };
  };
  for (const f of ['p99_itl_ms', 'mean_itl_ms'] as const) {
    const a = spread(c, f);
    const b = spread(d, f);
    out.push(
      `${f === 'p99_itl_ms' ? 'ITL p99' : 'ITL mean'} ranges ${fmt(a.min)}–${fmt(a.max)} ms coupled and ${fmt(b.min)}–${fmt(b.max)} ms disaggregated across the sweep.`,
    );
  }
  const wins = c.filter((x, i) => d[i] && (d[i]!.result.p99_itl_ms as number) < (x.result.p99_itl_ms as number)).length;
  out.push(`Disaggregated has the lower ITL p99 at ${wins} of ${c.length} load points.`);
  const lastC = c[c.length - 1]!.result;
  const lastD = d[d.length - 1]!.result;
  out.push(
    `At the highest load (${c[c.length - 1]!.qps} QPS) TTFT p99 is ${fmt(lastC.p99_ttft_ms, 0)} ms coupled vs ${fmt(lastD.p99_ttft_ms, 0)} ms disaggregated: ` +
      (lastD.p99_ttft_ms > lastC.p99_ttft_ms
        ? 'the single prefill engine is the bottleneck of the split setup (only half the engines prefill).'
        : 'the split setup also keeps TTFT lower here.'),
  );
  const failed = points.filter((x) => x.result.failed > 0);
  if (failed.length) {
    out.push(
      `Failed requests (counted, not dropped): ${failed.map((x) => `${x.result.failed} at ${x.qps} QPS ${x.setup.split(' ')[0]}`).join(', ')} ` +
        `(${[...new Set(failed.flatMap((x) => x.result.errors))].slice(0, 2).join('; ')}); latencies at those points are over the completed requests only.`,
    );
  }
  return out;
}

export const itlVsQps: Experiment = {
  name: 'itl-vs-qps',
  title: 'ITL vs QPS: coupled vs disaggregated (seed Figures 1–2)',
  about:
    'The seed measured inter-token latency across QPS on Gaudi with and without llm-d\'s prefill/decode split and found ITL flat when split, ' +
    'erratic when coupled (each prefill stalls the decodes sharing its engine). Here the same comparison runs behind `tandem gateway` with two engines per setup.',
  run,
};
