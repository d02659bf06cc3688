// `tandem experiment <name>`: reproduce one of the seed's experiments on real CPU engines (small
// scale) and on simulated GPU engines (the seed's scale), writing docs/results/<name>/.
import { join } from 'node:path';
import { parseFlags, UsageError } from '../../cli/args.ts';
import { repoRoot } from '../serve-util.ts';
import { adaptiveRouting } from './adaptive-routing.ts';
import { burst256 } from './burst-256.ts';
import { machine, writeExperiment, type Experiment, type Mode, type ModeReport } from './common.ts';
import { itlVsQps } from './itl-vs-qps.ts';
import { prefixRouting } from './prefix-routing.ts';

export type { Experiment, ModeReport } from './common.ts';

export const EXPERIMENTS: Readonly<Record<string, Experiment>> = Object.freeze({
  [itlVsQps.name]: itlVsQps,
  [adaptiveRouting.name]: adaptiveRouting,
  [burst256.name]: burst256,
  [prefixRouting.name]: prefixRouting,
});

const spec = {
  mode: { type: 'string', default: 'both', help: 'real | sim | both: real CPU engines (small scale), simulated GPU engines (seed scale), or both' },
  quick: { type: 'boolean', help: 'a very short smoke version (seconds, not minutes)' },
  out: { type: 'string', help: 'output folder (default docs/results/<name>)' },
  quiet: { type: 'boolean', help: 'no progress lines' },
  help: { type: 'boolean' },
} as const;

function usage(): string {
  const lines = ['usage: tandem experiment <name> [--mode real|sim|both] [--quick] [--out DIR]', '', 'experiments:'];
  for (const e of Object.values(EXPERIMENTS)) lines.push(`  ${e.name.padEnd(18)} ${e.title}`);
  lines.push('', 'options:');
  for (const [k, s] of Object.entries(spec)) if ('help' in s && s.help) lines.push(`  --${k.padEnd(8)} ${s.help}`);
  return lines.join('\n');
}

export async function main(argv: string[]): Promise<number> {
  const f = parseFlags(argv, spec);
  if (f.help) {
    console.log(usage());
    return 0;
  }
  const [name, ...extra] = f._;
  if (!name) throw new UsageError(`which experiment?\n${usage()}`);
  if (extra.length) throw new UsageError(`unexpected argument '${extra[0]}'`);
  const exp = EXPERIMENTS[name];
  if (!exp) throw new UsageError(`unknown experiment '${name}' (one of: ${Object.keys(EXPERIMENTS).join(', ')})`);
  if (!['real', 'sim', 'both'].includes(f.mode!)) throw new UsageError(`--mode must be real, sim or both, got '${f.mode}'`);
  const modes: Mode[] = f.mode === 'both' ? ['real', 'sim'] : [f.mode as Mode];
  const out = f.out ?? join(repoRoot, 'docs', 'results', exp.name);
  const started = new Date();
  const machineBefore = machine();
  const log = f.quiet ? () => {} : (line: string) => process.stderr.write(`${line}\n`);
  const reports: ModeReport[] = [];
  for (const mode of modes) reports.push(await exp.run({ mode, quick: f.quick, log }));
  const command = ['tandem experiment', exp.name, `--mode ${f.mode}`, ...(f.quick ? ['--quick'] : []), ...(f.out ? [`--out ${f.out}`] : [])].join(' ');
  const files = await writeExperiment(out, exp, reports, { command, started, machineBefore, machineAfter: machine() });
  for (const r of reports) {
    console.log(`\n## ${exp.name} — ${r.mode}\n`);
    for (const t of r.tables) console.log(t + '\n');
    console.log(r.reading.join('\n'));
  }
  console.log(`\nwrote ${files.join(', ')}`);
  return 0;
}
