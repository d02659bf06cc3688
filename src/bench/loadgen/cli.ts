// `tandem bench --url URL …`: the load generator from the command line. Several --qps or
// --concurrency values run one after another (every combination), each a full measured point.
import { writeFileSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { parseFlags, UsageError } from '../../cli/args.ts';
import type { DatasetSpec } from './datasets.ts';
import type { Slo } from './metrics.ts';
import { runLoad, type BenchResult, type LoadOptions } from './run.ts';
import { formatSummary, formatSweep } from './summary.ts';

const FLAGS = {
  url: { type: 'string', help: 'base URL of an OpenAI-compatible server (gateway, engine, vLLM)' },
  model: { type: 'string', help: 'model name (default: the first of GET /v1/models)' },
  endpoint: { type: 'string', default: 'completions', help: 'completions | chat' },
  dataset: { type: 'string', default: 'random', help: 'random | shared-prefix | FILE.jsonl' },
  'input-len': { type: 'number', default: 256, help: 'random: prompt tokens' },
  'output-len': { type: 'number', help: 'output tokens (random, shared-prefix: default 64; JSONL: overrides each line)' },
  'range-ratio': { type: 'number', default: 0, help: 'random: lengths uniform in [len·(1−r), len·(1+r)]' },
  groups: { type: 'number', default: 4, help: 'shared-prefix: number of distinct prefixes' },
  'prefix-len': { type: 'number', default: 128, help: 'shared-prefix: tokens shared within a group' },
  'suffix-len': { type: 'number', default: 32, help: 'shared-prefix: tokens unique to each request' },
  'num-prompts': { type: 'number', help: 'requests per point (default 100; JSONL: its prompt count)' },
  duration: { type: 'number', help: 'seconds to send for, per point (instead of --num-prompts)' },
  qps: { type: 'string', default: 'inf', help: 'request rate(s), e.g. 1,2,4 or inf' },
  arrival: { type: 'string', default: 'poisson', help: 'poisson | constant' },
  burstiness: { type: 'number', default: 1, help: 'gamma shape of inter-arrival times (1 = Poisson, < 1 burstier)' },
  concurrency: { type: 'string', help: 'max requests in flight, e.g. 1,8,32' },
  seed: { type: 'number', default: 0, help: 'workload and arrival seed' },
  warmup: { type: 'number', default: 0, help: 'warm-up requests before each point, excluded from metrics' },
  slo: { type: 'string', help: 'goodput SLOs in ms, e.g. ttft=500,tpot=50,itl=100,e2el=5000' },
  'vocab-size': { type: 'number', default: 256, help: 'token ids of generated prompts are drawn in [100, vocab-size)' },
  'ignore-eos': { type: 'boolean', default: true, help: 'send ignore_eos so outputs have exactly --output-len tokens' },
  'save-detailed': { type: 'boolean', help: 'keep per-request arrays (ttfts, itls, input_lens, output_lens, errors, …)' },
  out: { type: 'string', help: 'write the result JSON here (an array for several points)' },
  progress: { type: 'boolean', default: true, help: 'progress on stderr' },
  help: { type: 'boolean' },
} as const;

export function usage(): string {
  const lines = ['usage: tandem bench --url URL [options]', '', 'Load generator with the metrics of `vllm bench serve` (docs/bench-loadgen.md).', ''];
  for (const [k, s] of Object.entries(FLAGS)) {
    if (k === 'help') continue;
    const d = 'default' in s && s.default !== undefined ? ` (default ${String(s.default)})` : '';
    lines.push(`  --${k.padEnd(14)} ${'help' in s ? s.help : ''}${d}`);
  }
  return lines.join('\n');
}

/** "ttft=500,tpot=50" (vLLM's "ttft:500" also accepted) → Slo. */
export function parseSlo(text: string): Slo {
  const names: Record<string, keyof Slo> = { ttft: 'ttftMs', itl: 'itlMs', tpot: 'tpotMs', e2el: 'e2elMs' };
  const slo: Slo = {};
  for (const part of text.split(',').map((s) => s.trim()).filter(Boolean)) {
    const m = /^(\w+)\s*[=:]\s*(.+)$/.exec(part);
    if (!m) throw new UsageError(`--slo: '${part}' is not NAME=MS (e.g. ttft=500,tpot=50)`);
    const key = names[m[1]!.toLowerCase()];
    if (!key) throw new UsageError(`--slo: unknown metric '${m[1]}' (use ttft, itl, tpot or e2el)`);
    const v = Number(m[2]!.replace(/ms$/, ''));
    if (!Number.isFinite(v) || v < 0) throw new UsageError(`--slo: ${m[1]} must be a number of milliseconds ≥ 0, got '${m[2]}'`);
    slo[key] = v;
  }
  if (!Object.keys(slo).length) throw new UsageError('--slo: give at least one of ttft=MS, itl=MS, tpot=MS, e2el=MS');
  return slo;
}

function list(flag: string, text: string, allowInf: boolean): number[] {
  return text.split(',').map((s) => {
    const t = s.trim().toLowerCase();
    if (allowInf && (t === 'inf' || t === 'infinity')) return Infinity;
    const v = Number(t);
    if (!t || !Number.isFinite(v) || v <= 0) throw new UsageError(`--${flag}: '${s}' is not a positive number${allowInf ? ' or inf' : ''}`);
    if (!allowInf && !Number.isInteger(v)) throw new UsageError(`--${flag}: '${s}' is not a whole number`);
    return v;
  });
}

function datasetSpec(f: ReturnType<typeof parseFlags<typeof FLAGS>>): DatasetSpec {
  const d = f.dataset!;
  const outputLen = f['output-len'];
  if (d === 'random') return { kind: 'random', inputLen: f['input-len']!, outputLen: outputLen ?? 64, rangeRatio: f['range-ratio'] };
  if (d === 'shared-prefix') {
    return { kind: 'shared-prefix', groups: f.groups!, prefixLen: f['prefix-len']!, suffixLen: f['suffix-len']!, outputLen: outputLen ?? 64 };
  }
  if (d.endsWith('.jsonl') || d.includes('/')) return { kind: 'jsonl', path: d, outputLen };
  throw new UsageError(`--dataset must be random, shared-prefix or a .jsonl file, got '${d}'`);
}

export async function main(argv: string[]): Promise<number> {
  const f = parseFlags(argv, FLAGS);
  if (f.help) {
    console.log(usage());
    return 0;
  }
  if (f._.length) throw new UsageError(`unexpected argument '${f._[0]}'\n${usage()}`);
  if (!f.url) throw new UsageError(`--url is required\n${usage()}`);
  if (f.endpoint !== 'completions' && f.endpoint !== 'chat') throw new UsageError(`--endpoint must be completions or chat, got '${f.endpoint}'`);
  if (f.arrival !== 'poisson' && f.arrival !== 'constant') throw new UsageError(`--arrival must be poisson or constant, got '${f.arrival}'`);
  const qpsList = list('qps', f.qps!, true);
  const concList: (number | undefined)[] = f.concurrency ? list('concurrency', f.concurrency, false) : [undefined];
  const base: Omit<LoadOptions, 'qps' | 'concurrency'> = {
    url: f.url,
    model: f.model,
    endpoint: f.endpoint,
    dataset: datasetSpec(f),
    numPrompts: f['num-prompts'],
    durationS: f.duration,
    arrival: f.arrival,
    burstiness: f.burstiness,
    seed: f.seed,
    warmup: f.warmup,
    slo: f.slo ? parseSlo(f.slo) : undefined,
    ignoreEos: f['ignore-eos'],
    saveDetailed: f['save-detailed'],
    vocabSize: f['vocab-size'],
    progress: f.progress,
  };

  // Ctrl-C ends the current point cleanly (in-flight requests count as failed) and skips the rest.
  const ac = new AbortController();
  const onSig = () => ac.abort();
  process.once('SIGINT', onSig);
  const results: BenchResult[] = [];
  try {
    for (const concurrency of concList) {
      for (const qps of qpsList) {
        if (ac.signal.aborted) break;
        const r = await runLoad({ ...base, qps, concurrency, signal: ac.signal });
        results.push(r);
        console.log(formatSummary(r));
      }
    }
  } finally {
    process.off('SIGINT', onSig);
  }
  if (results.length > 1) console.log('\n' + formatSweep(results));
  if (f.out) {
    mkdirSync(dirname(f.out), { recursive: true });
    writeFileSync(f.out, JSON.stringify(results.length === 1 ? results[0] : results, null, 2) + '\n');
    console.error(`wrote ${f.out}`);
  }
  // a point where nothing completed measured nothing: say so in the exit status
  return results.some((r) => r.completed === 0) ? 1 : 0;
}
