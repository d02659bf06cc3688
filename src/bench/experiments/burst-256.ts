// Seed Figure 5: 256 concurrent long-input requests over 2 prefill + 2 decode engines, watched the way
// the seed's Grafana dashboard did — waiting and running requests and KV-cache use of every engine,
// sampled from each engine's /metrics every 100 ms; prefill engines dashed, decode engines solid.
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { LineChart } from '../plot.ts';
import { schedulerConfig, startUp } from './cluster.ts';
import { fmt, sampleEngines, scale, table, type EngineSample, type Experiment, type ModeReport, type RunOptions } from './common.ts';
import { runLoad } from '../loadgen/index.ts';

function plan(o: RunOptions) {
  if (o.mode === 'real') {
    return { requests: o.quick ? 8 : 48, inputLen: o.quick ? 128 : 512, outputLen: o.quick ? 8 : 32, engineArgs: [] as string[] };
  }
  return {
    requests: o.quick ? 32 : 256,
    inputLen: 8192,
    outputLen: o.quick ? 16 : 256,
    engineArgs: [] as string[],
  };
}

async function run(o: RunOptions): Promise<ModeReport> {
  const t0 = performance.now();
  const s = scale(o.mode);
  const pl = plan(o);
  const cfg = join(mkdtempSync(join(tmpdir(), 'tandem-exp-burst-')), 'scheduler.yaml');
  o.log(`burst-256 ${o.mode}: configs and cluster logs in ${cfg.replace(/scheduler\.yaml$/, '')}`);
  // the default scheduler: long prompts exceed the 16-token threshold, so every request is split and
  // both stages pick their engine by queue depth, KV use, prefix match and in-flight requests
  writeFileSync(cfg, schedulerConfig({ decider: { type: 'prefix-based-pd-decider', nonCachedTokens: 16 } }));
  const cluster = await startUp(['--prefill', '2', '--decode', '2', ...s.upArgs, '--port', '0', '--config', cfg, ...pl.engineArgs], { cpus: s.cpus, logFile: cfg.replace(/\.yaml$/, '.log') });
  let samples: Record<string, EngineSample[]>;
  let result;
  try {
    const sampler = sampleEngines(cluster.engines, 100);
    await new Promise((r) => setTimeout(r, 500)); // an idle baseline before the burst
    o.log(`burst-256 ${o.mode}: ${pl.requests} concurrent requests, ${pl.inputLen}-token prompts, ${pl.outputLen} output tokens`);
    result = await runLoad({
      url: cluster.url,
      vocabSize: s.vocab,
      dataset: { kind: 'random', inputLen: pl.inputLen, outputLen: pl.outputLen },
      numPrompts: pl.requests,
      qps: Infinity,
      concurrency: pl.requests,
      seed: 256,
    });
    await new Promise((r) => setTimeout(r, 1000)); // the tail: queues drain, leases expire
    samples = await sampler.stop();
  } finally {
    await cluster.stop();
  }
  o.log(`  completed ${result.completed} failed ${result.failed} in ${fmt(result.duration, 1)} s; TTFT p99 ${fmt(result.p99_ttft_ms, 0)} ms`);
  if (result.failed) o.log(`  errors: ${[...new Set(result.errors)].slice(0, 3).join(' | ')}`);
  const series = (key: 'waiting' | 'running' | 'kvUsage') =>
    cluster.engines.map((e) => ({
      name: e.name,
      dashed: e.role === 'prefill',
      points: (samples[e.name] ?? []).map((x) => ({ x: x.t, y: key === 'kvUsage' ? x[key] * 100 : x[key] })),
    }));
  const chart = (title: string, key: 'waiting' | 'running' | 'kvUsage', y: string): LineChart => ({
    title,
    x: { title: 'time (s)' },
    y: { title: y, zero: true },
    points: false,
    width: 360,
    height: 200,
    series: series(key),
  });
  const peak = (name: string, key: 'waiting' | 'running' | 'kvUsage') => Math.max(0, ...(samples[name] ?? []).map((x) => x[key]).filter(Number.isFinite));
  const rows = cluster.engines.map((e) => [e.name, e.role, peak(e.name, 'waiting'), peak(e.name, 'running'), fmt(peak(e.name, 'kvUsage') * 100, 0), (samples[e.name] ?? []).length]);
  const reading: string[] = [];
  const byRole = (role: string, key: 'waiting' | 'running' | 'kvUsage') => cluster.engines.filter((e) => e.role === role).map((e) => peak(e.name, key));
  reading.push(
    `All ${result.completed} of ${pl.requests} requests completed (${result.failed} failed) in ${fmt(result.duration, 1)} s.`,
    `Peak running requests: prefill engines ${byRole('prefill', 'running').join(' and ')}, decode engines ${byRole('decode', 'running').join(' and ')}; ` +
      `peak waiting: prefill ${byRole('prefill', 'waiting').join(' and ')}, decode ${byRole('decode', 'waiting').join(' and ')}.`,
    `Peak KV-cache use: prefill ${byRole('prefill', 'kvUsage').map((x) => fmt(x * 100, 0) + '%').join(' and ')}, decode ${byRole('decode', 'kvUsage').map((x) => fmt(x * 100, 0) + '%').join(' and ')}.`,
  );
  const dec = byRole('decode', 'running');
  if (dec.length === 2) {
    const ratio = Math.min(...dec) / Math.max(1, Math.max(...dec));
    reading.push(ratio > 0.7 ? 'The two decode engines carried a similar share of the streams: the scheduler spread the burst.' : `The decode engines were unevenly loaded (peak running ${dec.join(' vs ')}).`);
  }
  return {
    mode: o.mode,
    setup:
      `${s.describe}. \`tandem up --prefill 2 --decode 2\`, default scorers and the threshold decider (every long prompt is split). ` +
      `${pl.requests} requests sent at once (concurrency ${pl.requests}), ${pl.inputLen}-token distinct prompts, ${pl.outputLen} output tokens; ` +
      `engine flags ${pl.engineArgs.map((a) => `\`${a}\``).join(' ') || 'defaults'}. Every engine's \`/metrics\` sampled every 100 ms ` +
      '(`vllm:num_requests_waiting`, `vllm:num_requests_running`, `vllm:kv_cache_usage_perc`).',
    results: { load: result, engines: cluster.engines, samples },
    figures: [
      {
        file: `burst-256-${o.mode}`,
        caption: `Waiting and running requests and KV-cache use per engine during the burst; prefill dashed, decode solid (${o.mode === 'real' ? 'real CPU engines' : 'simulated H200 engines'})`,
        columns: 2,
        charts: [chart('requests waiting', 'waiting', 'requests'), chart('requests running', 'running', 'requests'), chart('KV-cache usage', 'kvUsage', '%')],
      },
    ],
    tables: [
      table(['engine', 'role', 'peak waiting', 'peak running', 'peak KV %', 'samples'], rows),
      table(
        ['completed', 'failed', 'duration s', 'TTFT p50 ms', 'TTFT p99 ms', 'ITL mean ms', 'ITL p99 ms', 'output tok/s'],
        [[result.completed, result.failed, fmt(result.duration), fmt(result.median_ttft_ms, 0), fmt(result.p99_ttft_ms, 0), fmt(result.mean_itl_ms), fmt(result.p99_itl_ms), fmt(result.output_throughput, 0)]],
      ),
    ],
    reading,
    wallSeconds: (performance.now() - t0) / 1000,
  };
}

export const burst256: Experiment = {
  name: 'burst-256',
  title: '256 concurrent long requests over 2 prefill + 2 decode engines (seed Figure 5)',
  about:
    'The seed sent 256 concurrent requests with 8K-token inputs to Llama-3.1-8B on 2 prefill + 2 decode Gaudi nodes and showed, in Grafana, ' +
    'how queue depth, running requests and KV-cache use spread over the four engines (prefill dashed, decode solid). The same burst, the same panels.',
  run,
};
