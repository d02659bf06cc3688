// `npm run bench:chaos`: what clients see while engines fail. A `tandem up` cluster (1 prefill + 2
// decode, real engines) serves a closed-loop streaming load; on a fixed timeline engine processes are
// killed (SIGKILL: `up` restarts them) and stopped/continued (SIGSTOP/SIGCONT: a hung process whose
// sockets stay open). Reported: requests completed, failed (by cause) and never ended, completions per
// window (no dead period), TTFT, and the gateway's own counters. The claim under test: every accepted
// request ends — with its answer or an explicit error — and the cluster keeps serving throughout.
import { readFileSync, readdirSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseFlags } from '../cli/args.ts';
import { startUp, type Cluster } from './experiments/cluster.ts';
import { runLoad } from './loadgen/index.ts';
import { measuredBy, writeReport } from './report.ts';
import { repoRoot } from './serve-util.ts';

const spec = {
  duration: { type: 'number', default: 40, help: 'seconds of load (the fault timeline scales with it)' },
  concurrency: { type: 'number', default: 8 },
  grace: { type: 'number', default: 30, help: 'seconds requests in flight get after the load stops; still running then = never ended' },
  out: { type: 'string', default: join(repoRoot, 'docs/bench-results/chaos.md') },
  help: { type: 'boolean' },
} as const;

/** The pid of the `tandem serve` listening on `port` (from /proc: no ss or lsof needed). */
export function servePid(port: number): number {
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    let argv: string[];
    try {
      argv = readFileSync(`/proc/${name}/cmdline`, 'utf8').split('\0');
    } catch {
      continue; // gone meanwhile
    }
    const at = argv.indexOf('--port');
    if (argv.includes('serve') && at >= 0 && argv[at + 1] === String(port)) return Number(name);
  }
  throw new Error(`no tandem serve on port ${port}`);
}

interface Fault {
  /** fraction of the load's duration */
  at: number;
  engine: string;
  signal: 'SIGKILL' | 'SIGSTOP' | 'SIGCONT';
  what: string;
}

const TIMELINE: Fault[] = [
  { at: 0.125, engine: 'decode-1', signal: 'SIGKILL', what: 'decode-1 killed (up restarts it)' },
  { at: 0.375, engine: 'prefill-0', signal: 'SIGSTOP', what: 'prefill-0 hangs' },
  { at: 0.625, engine: 'prefill-0', signal: 'SIGCONT', what: 'prefill-0 resumes' },
  { at: 0.75, engine: 'decode-0', signal: 'SIGSTOP', what: 'decode-0 hangs' },
  { at: 0.875, engine: 'decode-0', signal: 'SIGCONT', what: 'decode-0 resumes' },
];

/** An error message with its request-specific parts (ids, ports, counts) blanked, to group by cause. */
function cause(error: string): string {
  return error
    .replace(/[0-9a-f]{8}-[0-9a-f-]{27}/g, '<id>')
    .replace(/127\.0\.0\.1:\d+/g, '<engine>')
    .replace(/\d+/g, 'N')
    .slice(0, 140);
}

export async function main(argv: string[]): Promise<number> {
  const f = parseFlags(argv, spec);
  if (f.help) {
    console.log('usage: tandem bench chaos [--duration 40] [--concurrency 8] [--grace 30] [--out docs/bench-results/chaos.md]');
    return 0;
  }
  const durationS = f.duration!;
  const logFile = join(mkdtempSync(join(tmpdir(), 'tandem-chaos-')), 'cluster.log');
  const cluster: Cluster = await startUp(['--prefill', '1', '--decode', '2', '--port', '0'], { logFile });
  const applied: string[] = [];
  const timers: NodeJS.Timeout[] = [];
  try {
    const portOf = (name: string) => Number(new URL(cluster.engines.find((e) => e.name === name)!.url).port);
    const t0 = performance.now();
    for (const fault of TIMELINE) {
      timers.push(
        setTimeout(() => {
          try {
            process.kill(servePid(portOf(fault.engine)), fault.signal);
            applied.push(`${((performance.now() - t0) / 1000).toFixed(1)} s: ${fault.what}`);
          } catch (err) {
            applied.push(`${((performance.now() - t0) / 1000).toFixed(1)} s: ${fault.what} — not applied: ${(err as Error).message}`);
          }
        }, fault.at * durationS * 1000),
      );
    }
    // requests still running `grace` seconds after the load stopped are cut here: they never ended
    const stop = new AbortController();
    timers.push(setTimeout(() => stop.abort(), (durationS + f.grace!) * 1000));
    const r = await runLoad({
      url: cluster.url,
      dataset: { kind: 'random', inputLen: 64, outputLen: 64 },
      durationS,
      concurrency: f.concurrency!,
      saveDetailed: true,
      progress: false,
      signal: stop.signal,
    });
    const errors = r['errors'] as string[];
    const starts = r['start_times'] as number[];
    const latencies = r['latencies'] as number[];
    const neverEnded = errors.filter((e) => e === 'aborted').length;
    const causes = new Map<string, number>();
    for (const e of errors) if (e && e !== 'aborted') causes.set(cause(e), (causes.get(cause(e)) ?? 0) + 1);
    const windowS = durationS / 8;
    const windows = Array.from({ length: 8 }, () => 0);
    errors.forEach((e, i) => {
      if (e) return;
      const w = Math.floor((starts[i]! + latencies[i]!) / windowS);
      if (w >= 0 && w < 8) windows[w]!++;
    });
    const metrics = await (await fetch(`${cluster.url}/metrics`)).text();
    const counters = metrics.split('\n').filter((l) => /^tandem_gateway_(requests_total|errors_total|disagg_decision_total)\{/.test(l));
    const log = readFileSync(logFile, 'utf8');
    const restarts = log.split('\n').filter((l) => /^tandem up: .* restarting it/.test(l));
    const cancels = log.split('\n').filter((l) => /cancelling its \d+ legs in flight/.test(l));

    const report = [
      '# Chaos benchmark',
      '',
      measuredBy('bench:chaos'),
      `\`tandem up --prefill 1 --decode 2\` (stories260K, real engines, default gateway config); closed-loop streaming load,`,
      `${f.concurrency} in flight, 64-token random prompts, 64 output tokens, for ${durationS} s; requests still running ${f.grace} s after`,
      'the load stopped are cut and counted as never ended.',
      '',
      'Faults applied:',
      '',
      ...applied.map((a) => `- ${a}`),
      '',
      '| completed | failed (explicit error) | never ended | TTFT p50 | TTFT p99 | E2EL p99 |',
      '|---|---|---|---|---|---|',
      `| ${r.completed} | ${r.failed - neverEnded} | ${neverEnded} | ${r.median_ttft_ms.toFixed(0)} ms | ${r.p99_ttft_ms.toFixed(0)} ms | ${r.p99_e2el_ms.toFixed(0)} ms |`,
      '',
      `Completions per ${windowS.toFixed(0)} s window (a 0 would be a dead period): ${windows.join(' · ')}`,
      '',
      'Failures by cause:',
      '',
      ...(causes.size ? [...causes].sort((a, b) => b[1] - a[1]).map(([c, n]) => `- ${n} × ${c}`) : ['- none']),
      '',
      'Gateway counters at the end:',
      '',
      '```',
      ...counters,
      '```',
      '',
      `Restarts by \`tandem up\`: ${restarts.length}; stalled-endpoint cancellations by the gateway: ${cancels.length}.`,
      '',
    ].join('\n');
    writeReport(f.out!, report);
    console.log(report);
    console.log(`bench chaos: wrote ${f.out}`);
    return neverEnded === 0 ? 0 : 1;
  } finally {
    for (const t of timers) clearTimeout(t);
    // a stopped engine would ignore SIGTERM: continue everything before stopping the cluster
    for (const e of cluster.engines) {
      try {
        process.kill(servePid(Number(new URL(e.url).port)), 'SIGCONT');
      } catch {
        // not running
      }
    }
    await cluster.stop();
  }
}
