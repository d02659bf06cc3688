// `npm run bench:sim-gateway`: how many requests per second the gateway sustains over 16 simulated
// engines (8 prefill + 8 decode, the H200 profile) with its full default scheduler — the router
// benchmark without engine noise. Two workloads: short prompts (the decider keeps them on one decode
// engine) and 64-token prompts that are all different (every request is split: prefill leg, KV
// transfer over the simulated link, decode leg). wrk drives the gateway; each request asks for one
// token, non-streaming, so the simulated GPUs are never the limit and the router path is measured.
import { spawnSync } from 'node:child_process';
import { cpus, loadavg, tmpdir } from 'node:os';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseFlags } from '../cli/args.ts';
import { startUp } from './experiments/cluster.ts';
import { measuredBy, writeReport } from './report.ts';
import { repoRoot } from './serve-util.ts';

const spec = {
  prefill: { type: 'number', default: 8 },
  decode: { type: 'number', default: 8 },
  profile: { type: 'string', default: 'h200-llama8b' },
  duration: { type: 'number', default: 10, help: 'seconds per cell' },
  connections: { type: 'string', default: '32,128' },
  out: { type: 'string', default: join(repoRoot, 'docs/bench-results/sim-gateway.md') },
  log: { type: 'string', help: 'append the cluster\'s log (engines and gateway) to this file' },
  help: { type: 'boolean' },
} as const;

/** user+system CPU seconds of the processes whose command line matches one of `patterns` */
function cpuSeconds(...patterns: string[]): number {
  const pids = new Set(patterns.flatMap((p) => spawnSync('pgrep', ['-f', p], { encoding: 'utf8' }).stdout.split('\n').filter(Boolean)));
  let ticks = 0;
  for (const pid of pids) {
    try {
      const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
      ticks += Number(f[11]) + Number(f[12]);
    } catch {
      // gone
    }
  }
  return ticks / 100;
}

function luaScript(kind: 'short' | 'split', model: string): string {
  const body = (prompt: string) => `'{"model":"${model}","prompt":"' .. ${prompt} .. '","max_tokens":1,"temperature":0}'`;
  return [
    'wrk.method = "POST"',
    'wrk.headers["Content-Type"] = "application/json"',
    'local n = 0',
    'request = function()',
    '  n = n + 1',
    kind === 'short'
      ? `  return wrk.format(nil, "/v1/completions", nil, ${body('"Hello there"')})`
      : // 64 distinct numbers per request: no prefix is ever cached, so the decider always splits
        `  local words = {}\n  for i = 1, 64 do words[i] = tostring(math.random(100000)) end\n  return wrk.format(nil, "/v1/completions", nil, ${body('table.concat(words, " ")')})`,
    'end',
  ].join('\n');
}

interface Cell {
  workload: string;
  conns: number;
  rps: number;
  p50: string;
  p99: string;
  errors: number;
  gatewayCpuPerReqUs: number;
  enginesCpuPct: number;
  gatewayCpuPct: number;
}

export async function main(argv: string[]): Promise<number> {
  const f = parseFlags(argv, spec);
  if (f.help) {
    console.log('usage: tandem bench sim-gateway [--prefill 8] [--decode 8] [--profile h200-llama8b] [--duration 10] [--connections 32,128]');
    return 0;
  }
  if (spawnSync('wrk', ['--version']).error) throw new Error('wrk is needed (apt-get install wrk)');
  const dir = mkdtempSync(join(tmpdir(), 'tandem-sim-gw-'));
  const load0 = loadavg();
  const cluster = await startUp(['--simulate', f.profile!, '--prefill', String(f.prefill), '--decode', String(f.decode), '--port', '0', '--startup-timeout', '600'], { logFile: f.log });
  const cells: Cell[] = [];
  try {
    const port = new URL(cluster.url).port;
    // this cluster's engines only (other tandem processes may run on the machine)
    const enginePatterns = cluster.engines.map((e) => `serve .*--port ${new URL(e.url).port} `);
    const models = (await (await fetch(`${cluster.url}/v1/models`)).json()) as { data: { id: string }[] };
    const model = models.data[0]!.id;
    const routes = async () => (await (await fetch(`${cluster.url}/metrics`)).text()).match(/^tandem_gateway_disagg_decision_total\{[^}]*\} \d+/gm) ?? [];
    for (const kind of ['short', 'split'] as const) {
      const script = join(dir, `${kind}.lua`);
      writeFileSync(script, luaScript(kind, model));
      for (const conns of f.connections!.split(',').map(Number)) {
        const gw0 = cpuSeconds(`gateway --port ${port}`);
        const en0 = cpuSeconds(...enginePatterns);
        const t0 = performance.now();
        const r = spawnSync('wrk', ['-t1', `-c${conns}`, `-d${f.duration}s`, '--latency', '-s', script, cluster.url], { encoding: 'utf8' });
        const secs = (performance.now() - t0) / 1000;
        if (r.status !== 0) throw new Error(`wrk failed: ${r.stderr}`);
        const out = r.stdout;
        const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1]);
        const total = Number(/(\d+) requests in/.exec(out)?.[1]);
        const errors = Number(/Non-2xx or 3xx responses: (\d+)/.exec(out)?.[1] ?? 0) + Number(/Socket errors: .*?(\d+) timeout/.exec(out)?.[1] ?? 0);
        const gwCpu = cpuSeconds(`gateway --port ${port}`) - gw0;
        const enCpu = cpuSeconds(...enginePatterns) - en0;
        const cell: Cell = {
          workload: kind === 'short' ? 'short prompt (decode-only)' : '64-token distinct prompts (P/D split)',
          conns,
          rps,
          p50: /^\s+50%\s+(\S+)/m.exec(out)?.[1] ?? '?',
          p99: /^\s+99%\s+(\S+)/m.exec(out)?.[1] ?? '?',
          errors,
          gatewayCpuPerReqUs: (gwCpu / Math.max(1, total)) * 1e6,
          enginesCpuPct: (enCpu / secs) * 100,
          gatewayCpuPct: (gwCpu / secs) * 100,
        };
        cells.push(cell);
        process.stderr.write(`sim-gateway ${kind} c=${conns}: ${rps.toFixed(0)} req/s, p50 ${cell.p50}, p99 ${cell.p99}, errors ${errors}\n`);
      }
    }
    const decisions = await routes();
    const report = [
      measuredBy('bench:sim-gateway'),
      `${f.prefill} prefill + ${f.decode} decode simulated engines (\`--simulate ${f.profile}\`) behind \`tandem gateway\` with its default scheduler ` +
        `(precise prefix index from KV events, queue/KV/prefix/active-request scorers, disagg profile handler with the prefix-based decider), all started by \`tandem up\`. ` +
        `Load: wrk -t1, ${f.duration} s per cell, non-streaming completions with max_tokens 1. All of it shares ${cpus().length} vCPUs ` +
        `(load average ${load0.map((x) => x.toFixed(1)).join(' / ')} before the run).`,
      '',
      '| workload | connections | req/s | p50 | p99 | errors | gateway CPU % | gateway CPU µs/request | engines CPU % |',
      '|---|---|---|---|---|---|---|---|---|',
      ...cells.map(
        (c) =>
          `| ${c.workload} | ${c.conns} | ${c.rps.toFixed(0)} | ${c.p50} | ${c.p99} | ${c.errors} | ${c.gatewayCpuPct.toFixed(0)} | ${c.gatewayCpuPerReqUs.toFixed(0)} | ${c.enginesCpuPct.toFixed(0)} |`,
      ),
      '',
      `Gateway decisions over the run: ${decisions.map((d) => '`' + d + '`').join(', ')}.`,
    ].join('\n');
    console.log(report);
    writeReport(f.out!, report);
  } finally {
    await cluster.stop();
  }
  return 0;
}
