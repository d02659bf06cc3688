// What the experiments share: the two scales (real CPU engines, simulated GPU engines), the machine
// description, engine /metrics sampling, and how an experiment's outputs are written.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, totalmem } from 'node:os';
import { join } from 'node:path';
import { writeCharts, type LineChart } from '../plot.ts';
import { percentile } from '../serve-util.ts';
import { canPin } from './cluster.ts';

export type Mode = 'real' | 'sim';

export interface RunOptions {
  mode: Mode;
  quick: boolean;
  log: (line: string) => void;
}

/** The simulated GPU: Llama-3-8B step times on one H200 (profiles/h200-llama8b.json). */
export const SIM_PROFILE = 'h200-llama8b';

/** What `tandem up` needs for each scale. Real engines all share cores 0-1, so every configuration of an
 * experiment gets the same CPU budget whatever its engine count; simulated engines use almost no CPU. */
export function scale(mode: Mode): { model: string; vocab: number; upArgs: string[]; cpus?: string; describe: string } {
  if (mode === 'real') {
    return {
      model: 'synthetic:15m',
      vocab: 32000,
      // 16 sequences per batch: at the default 64 an overloaded 15M engine's WASM kernel workspace
      // outgrows the 4 GiB wasm32 memory ("cannot grow kernel memory") and the engine fails requests
      upArgs: ['--model', 'synthetic:15m', '--engine-arg=--max-num-seqs=16'],
      cpus: canPin() ? '0,1' : undefined,
      describe:
        'real CPU engines: `synthetic:15m` (stories15M shape, seeded random weights, f32 WASM SIMD kernels, `--max-num-seqs 16`); every engine and the gateway of a ' +
        `configuration share the same two cores${canPin() ? ' (`taskset -c 0,1` on `tandem up`)' : ''}`,
    };
  }
  return {
    model: 'synthetic:tiny',
    vocab: 512, // the simulated engines' tokenizer is synthetic:tiny's
    upArgs: ['--simulate', SIM_PROFILE],
    describe: `simulated engines: \`--simulate ${SIM_PROFILE}\` (Llama-3-8B step times and KV capacity of one H200, KV transfers timed over a 25 GB/s link; the real scheduler, block pool, gateway and P/D legs; vLLM's GPU defaults of 256 sequences and 8192 tokens per step)`,
  };
}

export interface Machine {
  nproc: number;
  cpu: string;
  memGiB: number;
  node: string;
  loadavg: number[];
}

export function machine(): Machine {
  let nproc = cpus().length;
  try {
    nproc = Number(execFileSync('nproc', { encoding: 'utf8' }).trim()) || nproc;
  } catch {
    // no coreutils: the OS count will do
  }
  return { nproc, cpu: cpus()[0]?.model ?? 'unknown', memGiB: Math.round(totalmem() / 2 ** 30), node: process.version, loadavg: loadavg().map((x) => +x.toFixed(2)) };
}

export interface EngineSample {
  t: number;
  waiting: number;
  running: number;
  kvUsage: number;
}

const GAUGES = { 'vllm:num_requests_waiting': 'waiting', 'vllm:num_requests_running': 'running', 'vllm:kv_cache_usage_perc': 'kvUsage' } as const;

/** The vLLM gauges and counters of one Prometheus text exposition (labels summed away). */
export function parseEngineMetrics(text: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][\w:]*)(?:\{[^}]*\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const v = Number(m[2]);
    if (Number.isFinite(v)) out[m[1]!] = (out[m[1]!] ?? 0) + v;
  }
  return out;
}

/** Scrape every engine's /metrics every `intervalMs` until stopped (like the seed's Grafana panels). */
export function sampleEngines(engines: { name: string; url: string }[], intervalMs = 100): { stop(): Promise<Record<string, EngineSample[]>> } {
  const series: Record<string, EngineSample[]> = Object.fromEntries(engines.map((e) => [e.name, []]));
  const t0 = performance.now();
  let stopped = false;
  const loops = engines.map(async (e) => {
    while (!stopped) {
      const started = performance.now();
      try {
        const r = await fetch(`${e.url}/metrics`, { signal: AbortSignal.timeout(2000) });
        const m = parseEngineMetrics(await r.text());
        const s: EngineSample = { t: (started - t0) / 1000, waiting: 0, running: 0, kvUsage: 0 };
        for (const [name, key] of Object.entries(GAUGES)) s[key] = m[name] ?? NaN;
        series[e.name]!.push(s);
      } catch {
        // a missed scrape is a gap in the series, not a failure of the experiment
      }
      await new Promise((r) => setTimeout(r, Math.max(0, intervalMs - (performance.now() - started))));
    }
  });
  return {
    async stop() {
      stopped = true;
      await Promise.all(loops);
      return series;
    },
  };
}

/** Sum of one counter over engines, scraped once. */
export async function scrapeCounters(urls: string[]): Promise<Record<string, number>> {
  const total: Record<string, number> = {};
  for (const u of urls) {
    let text: string;
    try {
      text = await (await fetch(`${u}/metrics`, { signal: AbortSignal.timeout(5000) })).text();
    } catch (err) {
      throw new Error(`cannot read ${u}/metrics: ${(err as Error).message} (did the engine exit? see its log)`);
    }
    for (const [k, v] of Object.entries(parseEngineMetrics(text))) total[k] = (total[k] ?? 0) + v;
  }
  return total;
}

export const p = percentile;
export const fmt = (x: unknown, digits = 1): string => (typeof x === 'number' && Number.isFinite(x) ? x.toFixed(digits) : '–');

/** A markdown table. */
export function table(header: string[], rows: unknown[][]): string {
  return [`| ${header.join(' | ')} |`, `|${header.map(() => '---').join('|')}|`, ...rows.map((r) => `| ${r.join(' | ')} |`)].join('\n');
}

export interface Figure {
  /** file name without extension, inside the experiment's folder */
  file: string;
  caption: string;
  charts: LineChart[];
  columns?: number;
}

/** What one mode of an experiment produced. */
export interface ModeReport {
  mode: Mode;
  setup: string;
  results: unknown;
  figures: Figure[];
  tables: string[];
  /** sentences computed from the data: what the numbers say, including where they disappoint */
  reading: string[];
  wallSeconds?: number;
}

export interface Experiment {
  name: string;
  title: string;
  /** what the seed showed and what this experiment compares */
  about: string;
  run(o: RunOptions): Promise<ModeReport>;
}

interface StoredMode {
  command: string;
  date: string;
  machine: Machine & { loadavgAfter: number[] };
  setup: string;
  wallSeconds?: number;
  figures: { file: string; caption: string }[];
  tables: string[];
  reading: string[];
  results: unknown;
}

/**
 * Write the figures (SVG + PNG), results.json and README.md into `dir`. A mode not run this time keeps
 * what an earlier run wrote (its own command, date and machine), so `--mode real` refreshes one half.
 */
export async function writeExperiment(
  dir: string,
  exp: Experiment,
  reports: ModeReport[],
  meta: { command: string; started: Date; machineBefore: Machine; machineAfter: Machine },
): Promise<string[]> {
  mkdirSync(dir, { recursive: true });
  const files: string[] = [];
  for (const r of reports) for (const f of r.figures) files.push((await writeCharts(join(dir, f.file), f.charts, { columns: f.columns })).png);
  const jsonFile = join(dir, 'results.json');
  let modes: Partial<Record<Mode, StoredMode>> = {};
  if (existsSync(jsonFile)) {
    try {
      const old = JSON.parse(readFileSync(jsonFile, 'utf8')) as { experiment?: string; modes?: Partial<Record<Mode, StoredMode>> };
      if (old.experiment === exp.name && old.modes) {
        for (const [k, v] of Object.entries(old.modes)) if (v && typeof v.command === 'string' && v.machine) modes[k as Mode] = v;
      }
    } catch {
      // unreadable: this run replaces it
    }
  }
  for (const r of reports) {
    modes[r.mode] = {
      command: meta.command,
      date: meta.started.toISOString(),
      machine: { ...meta.machineBefore, loadavgAfter: meta.machineAfter.loadavg },
      setup: r.setup,
      wallSeconds: r.wallSeconds,
      figures: r.figures.map((f) => ({ file: f.file, caption: f.caption })),
      tables: r.tables,
      reading: r.reading,
      results: r.results,
    };
  }
  writeFileSync(jsonFile, JSON.stringify({ experiment: exp.name, modes }, null, 1) + '\n');
  const section = (mode: Mode, m: StoredMode) => [
    `## ${mode === 'real' ? 'Real CPU engines (small scale)' : 'Simulated engines (seed scale)'}`,
    '',
    `Command: \`${m.command}\`  `,
    `Date: ${m.date}  `,
    `Machine: ${m.machine.nproc} vCPUs (${m.machine.cpu}), ${m.machine.memGiB} GiB, Node ${m.machine.node}; load average ` +
      `${m.machine.loadavg.join(' / ')} before, ${m.machine.loadavgAfter.join(' / ')} after (a shared VM: other work ran alongside; ` +
      'compare configurations within one run, not across runs).',
    '',
    m.setup + (m.wallSeconds ? ` Wall time ${Math.round(m.wallSeconds)} s.` : ''),
    '',
    ...m.figures.flatMap((f) => [`![${f.caption}](${f.file}.png)`, '', `*${f.caption}* ([SVG](${f.file}.svg))`, '']),
    ...m.tables.flatMap((t) => [t, '']),
    '**Reading.** ' + m.reading.join(' '),
    '',
  ];
  const md = [
    `# ${exp.title}`,
    '',
    exp.about,
    '',
    ...(['real', 'sim'] as const).flatMap((mode) => (modes[mode] ? section(mode, modes[mode]!) : [])),
    'Raw numbers: [results.json](results.json). The engines\' and gateway\'s logs are kept in the temp folder each run prints.',
    '',
  ].join('\n');
  writeFileSync(join(dir, 'README.md'), md);
  return [jsonFile, join(dir, 'README.md'), ...files];
}
