// Clusters for benchmarks and experiments: `tandem up` as a child process (engines + gateway), the
// topology it prints, and scheduler configs built from the plugins an experiment compares.
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, existsSync } from 'node:fs';
import { join } from 'node:path';
import { repoRoot } from '../serve-util.ts';

export type Role = 'prefill' | 'decode' | 'both';

export interface Engine {
  name: string;
  role: Role;
  url: string;
}

export interface Cluster {
  /** the gateway's base URL */
  url: string;
  engines: Engine[];
  stop(): Promise<void>;
}

export interface StartOptions {
  /** CPU list for `taskset -c` (e.g. "0,1"): `tandem up` and every engine it starts inherit it */
  cpus?: string;
  /** append the cluster's log (every engine's and the gateway's lines) to this file */
  logFile?: string;
}

/** Whether `taskset` can pin processes here (Linux with util-linux). */
export function canPin(): boolean {
  return existsSync('/usr/bin/taskset') || existsSync('/bin/taskset');
}

/** Start `tandem up <args>` and resolve once it prints the gateway URL and the engines. */
export function startUp(args: string[], opts: StartOptions = {}): Promise<Cluster> {
  const cmd = [join(repoRoot, 'bin/tandem.js'), 'up', ...args];
  const [file, argv] = opts.cpus && canPin() ? ['taskset', ['-c', opts.cpus, process.execPath, ...cmd]] : [process.execPath, cmd];
  return new Promise((resolve, reject) => {
    const child: ChildProcess = spawn(file, argv, { cwd: repoRoot, stdio: ['ignore', 'pipe', 'pipe'] });
    const logFile = opts.logFile ? createWriteStream(opts.logFile, { flags: 'a' }) : undefined;
    child.once('exit', () => logFile?.end());
    // if this process dies first, the cluster must not outlive it (`up` stops its own children on SIGTERM)
    const onExit = () => child.kill('SIGTERM');
    process.on('exit', onExit);
    let tail = '';
    let done = false;
    const onData = (d: Buffer) => {
      const text = d.toString();
      // keep only the recent output: engines log every request, a long run would grow without bound
      tail = (tail + text).slice(-16384);
      logFile?.write(text);
      if (done) return;
      // `up` prints the gateway line, one line per engine, then a "try:" line — all in one write
      const m = /tandem up: gateway (http:\/\/\S+)[^\n]*\n((?:[ \t]+\S+-\d+[ \t]+http:\/\/\S+[^\n]*\n)+)/.exec(tail);
      if (!m) return;
      done = true;
      const engines = [...m[2]!.matchAll(/^[ \t]+((prefill|decode|both)-\d+)[ \t]+(http:\/\/\S+)/gm)].map((e) => ({
        name: e[1]!,
        role: e[2] as Role,
        url: e[3]!,
      }));
      resolve({
        url: m[1]!,
        engines,
        stop: () =>
          new Promise((r) => {
            process.off('exit', onExit);
            if (child.exitCode !== null || child.signalCode !== null) return r();
            child.once('exit', () => r());
            child.kill('SIGTERM');
            setTimeout(() => child.kill('SIGKILL'), 15_000).unref();
          }),
      });
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    child.on('error', (err) => !done && reject(err));
    child.on('exit', (code) => {
      process.off('exit', onExit);
      if (!done) reject(new Error(`tandem up exited with ${code}:\n${tail.slice(-4000)}`));
    });
  });
}

export type Decider =
  | 'always-disagg-pd-decider'
  | 'never-disagg-pd-decider'
  | { type: 'prefix-based-pd-decider'; nonCachedTokens: number }
  | { type: 'cost-model-pd-decider'; parameters?: Record<string, number> };

export interface SchedulerSpec {
  decider: Decider;
  /** scorers with weights, the same in the decode and the prefill profile (llm-d's Helm weights by default) */
  scorers?: { type: string; weight: number; parameters?: Record<string, unknown> }[];
  /** where prefix matches come from: routing history (approximate) or the engines' KV events (precise) */
  prefix?: 'approx' | 'precise';
  picker?: string;
}

/** The default config's scorers: queue 2, KV-cache 2, prefix 3, active-request 1. */
export const DEFAULT_SCORERS: NonNullable<SchedulerSpec['scorers']> = [
  { type: 'queue-scorer', weight: 2 },
  { type: 'kv-cache-utilization-scorer', weight: 2 },
  { type: 'prefix-cache-scorer', weight: 3 },
  { type: 'active-request-scorer', weight: 1 },
];

const flow = (o: Record<string, unknown>) => JSON.stringify(o); // JSON is YAML flow syntax

/** An EndpointPickerConfig (YAML) with a decode and a prefill profile over the given plugins. */
export function schedulerConfig(s: SchedulerSpec): string {
  const scorers: NonNullable<SchedulerSpec['scorers']> = s.scorers ?? DEFAULT_SCORERS;
  const picker = s.picker ?? 'max-score-picker';
  const d = typeof s.decider === 'string' ? { type: s.decider, parameters: undefined } : s.decider;
  const deciderParams = 'nonCachedTokens' in d ? { nonCachedTokens: d.nonCachedTokens } : d.parameters;
  const plugins: Record<string, unknown>[] = [
    { type: 'token-producer', parameters: { backend: 'auto' } },
    { type: s.prefix === 'precise' ? 'precise-prefix-cache-producer' : 'approx-prefix-cache-producer' },
    { type: 'decode-filter' },
    { type: 'prefill-filter' },
    ...scorers.map((x) => (x.parameters ? { type: x.type, parameters: x.parameters } : { type: x.type })),
    { type: picker },
    deciderParams ? { type: d.type, parameters: deciderParams } : { type: d.type },
    { type: 'disagg-profile-handler', parameters: { deciders: { prefill: d.type } } },
  ];
  const profile = (name: string, filter: string) =>
    `- name: ${name}\n  plugins:\n` +
    [{ pluginRef: filter }, ...scorers.map((x) => ({ pluginRef: x.type, weight: x.weight })), { pluginRef: picker }].map((p) => `  - ${flow(p)}\n`).join('');
  return (
    'apiVersion: llm-d.ai/v1alpha1\nkind: EndpointPickerConfig\nplugins:\n' +
    plugins.map((p) => `- ${flow(p)}\n`).join('') +
    'schedulingProfiles:\n' +
    profile('decode', 'decode-filter') +
    profile('prefill', 'prefill-filter')
  );
}
