// `tandem up`: a local cluster — prefill, decode and mixed engines plus the gateway as child
// processes on free ports. Waits until all are healthy, prints the URL and the topology, prefixes
// their logs, restarts a child that dies (same port and arguments, with back-off, as Kubernetes
// restarts a crashed pod), and on Ctrl-C/SIGTERM stops every child (own process groups, so no
// orphans) and exits 0.
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { parseFlags, UsageError } from './args.ts';

const spec = {
  prefill: { type: 'number', default: 1, help: 'prefill engines' },
  decode: { type: 'number', default: 1, help: 'decode engines' },
  both: { type: 'number', default: 0, help: 'engines that do both stages' },
  model: { type: 'string', help: 'model for every engine (default stories260K; synthetic:tiny when simulated)' },
  simulate: { type: 'string', help: 'simulated engines: GPU timing profile for every engine (e.g. h200-llama8b)' },
  'prefill-profile': { type: 'string', help: 'simulated prefill engines use this profile (heterogeneous P/D)' },
  'decode-profile': { type: 'string', help: 'simulated decode engines use this profile (heterogeneous P/D)' },
  tokenizer: { type: 'string', help: 'tokenizer file, when the model has none' },
  port: { type: 'number', default: 8000, help: 'gateway port (0 = any free port)' },
  host: { type: 'string', default: '127.0.0.1', help: 'gateway listen address' },
  config: { type: 'string', help: 'EndpointPickerConfig YAML for the gateway' },
  'kv-events': { type: 'boolean', default: true, help: 'engines publish KV events, the gateway subscribes (--no-kv-events to skip)' },
  'engine-arg': { type: 'list', help: 'extra argument for every `tandem serve` (repeatable, e.g. --engine-arg=--block-size=16)' },
  'gateway-arg': { type: 'list', help: 'extra argument for `tandem gateway` (repeatable)' },
  'startup-timeout': { type: 'number', default: 120, help: 'seconds to wait for everything to be healthy' },
  restart: { type: 'string', default: 'on-failure', help: 'after start-up, a child that exits: on-failure (restart unless it exited 0) | always | never (stop the cluster, exit 1)' },
  help: { type: 'boolean' },
} as const;

const BIN = fileURLToPath(new URL('../../bin/tandem.js', import.meta.url));

type RestartPolicy = 'on-failure' | 'always' | 'never';

/** First restart delay, doubled per restart up to the cap; a child that ran this long is healthy again. */
const BACKOFF_FIRST_MS = 1000;
const BACKOFF_CAP_MS = 30_000;
const BACKOFF_RESET_AFTER_MS = 60_000;

/** One child process under `up`'s care: its current incarnation and how to start the next. */
interface Child {
  name: string;
  args: string[];
  proc: ChildProcess;
  exited: Promise<number | null>;
  startedAt: number;
  /** restarts since it last stayed up for BACKOFF_RESET_AFTER_MS */
  restarts: number;
  /** pending restart */
  timer: NodeJS.Timeout | undefined;
  /** what its output said: a port it was given was taken by the time it bound it */
  seen: { portClash: boolean };
}

function anyFreePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

/** Ports this process handed out: the OS may offer a port again once it is free, before its user binds it. */
const handedOut = new Set<number>();

/** A port free now and not handed out before by this process (two engines once got the same one). */
export async function freePort(): Promise<number> {
  for (let i = 0; i < 50; i++) {
    const port = await anyFreePort();
    if (!handedOut.has(port)) {
      handedOut.add(port);
      return port;
    }
  }
  throw new Error('no free port found that was not handed out already');
}

/** Rejects with the listen error itself, which the CLI turns into its one-line message (cli/main.ts). */
function assertCanListen(host: string, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(port, host, () => s.close(() => resolve()));
  });
}

function spawnChild(name: string, args: string[], seen: Child['seen']): Pick<Child, 'proc' | 'exited' | 'startedAt'> {
  // detached: the child leads its own process group, so stopping it reaches its workers too
  const proc = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'], detached: true, env: process.env });
  for (const stream of [proc.stdout!, proc.stderr!]) {
    createInterface({ input: stream }).on('line', (line) => {
      if (/EADDRINUSE|address already in use/i.test(line)) seen.portClash = true;
      process.stdout.write(line.startsWith(`[${name}] `) ? `${line}\n` : `[${name}] ${line}\n`);
    });
  }
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
  return { proc, exited, startedAt: Date.now() };
}

function startChild(name: string, args: string[]): Child {
  const seen = { portClash: false };
  return { name, args, ...spawnChild(name, args, seen), restarts: 0, timer: undefined, seen };
}

/** How a child's incarnation ended, for the log: "code 1", "signal SIGKILL". */
function howEnded(c: Child): string {
  return c.proc.signalCode ? `signal ${c.proc.signalCode}` : `code ${c.proc.exitCode}`;
}

/**
 * Keeps the cluster running after start-up: a child that exits is started again with the same
 * arguments (same port, so the gateway's static endpoint list stays true and its health checks
 * bring the engine back), after a delay that doubles per restart up to BACKOFF_CAP_MS. Resolves
 * with the child that ended it when the policy is `never` (or `on-failure` and the exit was 0,
 * which only a deliberate stop produces).
 */
function supervise(children: Child[], policy: RestartPolicy, isStopping: () => boolean): Promise<{ c: Child; how: string }> {
  return new Promise((resolveEnd) => {
    const watch = (c: Child): void => {
      void c.exited.then((code) => {
        if (isStopping()) return;
        const how = howEnded(c);
        const failed = code !== 0 || c.proc.signalCode !== null;
        if (policy === 'never' || (policy === 'on-failure' && !failed)) return resolveEnd({ c, how });
        const upFor = Date.now() - c.startedAt;
        if (upFor >= BACKOFF_RESET_AFTER_MS) c.restarts = 0;
        const delay = Math.min(BACKOFF_CAP_MS, BACKOFF_FIRST_MS * 2 ** c.restarts);
        c.restarts++;
        console.error(`tandem up: ${c.name} exited (${how}) after ${(upFor / 1000).toFixed(1)} s; restarting it in ${(delay / 1000).toFixed(0)} s (restart ${c.restarts} in a row)`);
        c.timer = setTimeout(() => {
          c.timer = undefined;
          if (isStopping()) return;
          Object.assign(c, spawnChild(c.name, c.args, c.seen));
          watch(c);
        }, delay);
      });
    };
    for (const c of children) watch(c);
  });
}

function signalGroup(c: Child, sig: NodeJS.Signals): void {
  if (c.proc.exitCode !== null || c.proc.signalCode !== null || !c.proc.pid) return;
  try {
    process.kill(-c.proc.pid, sig);
  } catch {
    try {
      c.proc.kill(sig);
    } catch {
      // already gone
    }
  }
}

async function waitHealthy(url: string, child: Child, deadline: number): Promise<void> {
  let dead = false;
  void child.exited.then(() => (dead = true));
  while (Date.now() < deadline) {
    if (dead) throw new Error(`${child.name} exited during start-up (see its log above)`);
    try {
      const r = await fetch(url, { signal: AbortSignal.timeout(1000) });
      await r.arrayBuffer();
      if (r.ok) return;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`${child.name} not healthy at ${url} after start-up timeout`);
}

export async function main(argv: string[]): Promise<number> {
  const f = parseFlags(argv, spec);
  if (f.help) {
    const lines = ['usage: tandem up [--prefill N] [--decode M] [--both K] [--model M] [--port 8000] [--config file]', ''];
    for (const [k, s] of Object.entries(spec)) if ('help' in s && s.help) lines.push(`  --${k.padEnd(18)} ${s.help}`);
    console.log(lines.join('\n'));
    return 0;
  }
  if (f._.length) throw new UsageError(`unexpected argument '${f._[0]}'`);
  const count = (name: 'prefill' | 'decode' | 'both') => {
    const n = f[name] ?? 0;
    if (!Number.isInteger(n) || n < 0 || n > 32) throw new UsageError(`--${name} must be an integer in 0..32`);
    return n;
  };
  const roles = { prefill: count('prefill'), decode: count('decode'), both: count('both') };
  if (roles.decode + roles.both === 0) throw new UsageError('need at least one engine that decodes (--decode or --both)');
  const profileOf = (role: 'prefill' | 'decode' | 'both'): string | undefined =>
    (role === 'prefill' ? f['prefill-profile'] : role === 'decode' ? f['decode-profile'] : undefined) ?? f.simulate;
  const simulated = f.simulate !== undefined || f['prefill-profile'] !== undefined || f['decode-profile'] !== undefined;
  for (const role of ['prefill', 'decode', 'both'] as const) {
    if (simulated && roles[role] > 0 && profileOf(role) === undefined) {
      throw new UsageError(`${role === 'both' ? '--simulate' : `--${role}-profile or --simulate`} is needed for the ${role} engines: a cluster is either all simulated or all real`);
    }
  }
  const model = f.model ?? (simulated ? 'synthetic:tiny' : 'stories260K');
  const gatewayPort = f.port === 0 ? await freePort() : (f.port ?? 8000);
  // before any engine starts: a taken gateway port would otherwise surface only after the engines loaded
  await assertCanListen(f.host!, gatewayPort);
  const deadline = Date.now() + (f['startup-timeout'] ?? 120) * 1000;
  const policy = f.restart as RestartPolicy;
  if (!['on-failure', 'always', 'never'].includes(policy)) throw new UsageError(`--restart must be on-failure, always or never (got '${f.restart}')`);

  const children: Child[] = [];
  let stopping = false;
  const stopAll = async (): Promise<void> => {
    stopping = true;
    for (const c of children) clearTimeout(c.timer);
    for (const c of [...children].reverse()) signalGroup(c, 'SIGTERM');
    const grace = new Promise((r) => setTimeout(r, 5000).unref());
    await Promise.race([Promise.all(children.map((c) => c.exited)), grace]);
    for (const c of children) signalGroup(c, 'SIGKILL');
  };
  // last resort if we die some other way: no orphans
  const onExit = () => {
    for (const c of children) signalGroup(c, 'SIGKILL');
  };
  process.on('exit', onExit);

  let signalled: (() => void) | undefined;
  const signal = new Promise<void>((resolve) => (signalled = resolve));
  const onSignal = () => signalled!();
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);

  try {
    type EngineSpec = { name: string; role: 'prefill' | 'decode' | 'both'; url: string; kvEvents?: string; profile?: string };
    const startEngine = async (role: EngineSpec['role'], name: string): Promise<{ child: Child; spec: EngineSpec }> => {
      const port = await freePort();
      const kvEvents = f['kv-events'] ? `tcp://*:${await freePort()}` : undefined;
      const args = ['serve', '--model', model, '--port', String(port), '--role', role, '--kv-port', '0'];
      const profile = profileOf(role);
      if (profile !== undefined) args.push('--simulate', profile);
      if (f.tokenizer) args.push('--tokenizer', f.tokenizer);
      if (kvEvents) args.push('--kv-events-endpoint', kvEvents);
      args.push(...f['engine-arg']);
      return { child: startChild(name, args), spec: { name, role, url: `http://127.0.0.1:${port}`, kvEvents, profile } };
    };
    const engines: EngineSpec[] = [];
    for (const role of ['prefill', 'decode', 'both'] as const) {
      for (let i = 0; i < roles[role]; i++) {
        const { child, spec } = await startEngine(role, `${role}-${i}`);
        children.push(child);
        engines.push(spec);
      }
    }
    // A port picked here is free until the engine binds it, and another process (an engine's KV
    // port, any outgoing connection) may take it meanwhile: such an engine starts again on others.
    const ready = Promise.all(
      engines.map(async (e, k) => {
        for (let attempt = 1; ; attempt++) {
          try {
            return await waitHealthy(`${engines[k]!.url}/health`, children[k]!, deadline);
          } catch (err) {
            if (!children[k]!.seen.portClash || attempt >= 3 || stopping) throw err;
            console.error(`tandem up: ${e.name} found a port taken meanwhile; starting it again on other ports`);
            const again = await startEngine(e.role, e.name);
            children[k] = again.child;
            engines[k] = again.spec;
          }
        }
      }),
    );
    const first = await Promise.race([ready.then(() => 'ready' as const), signal.then(() => 'signal' as const)]);
    if (first === 'signal') {
      await stopAll();
      return 0;
    }
    const gwArgs = ['gateway', '--port', String(gatewayPort), '--host', f.host!];
    if (f.config) gwArgs.push('--config', f.config);
    for (const e of engines) gwArgs.push('--endpoint', `${e.url},role=${e.role}${e.kvEvents ? `,kv-events=${e.kvEvents}` : ''}`);
    gwArgs.push(...f['gateway-arg']);
    const gw = startChild('gateway', gwArgs);
    children.push(gw);
    const gwHost = f.host === '0.0.0.0' ? '127.0.0.1' : f.host!;
    const gwUrl = `http://${gwHost}:${gatewayPort}`;
    const gwReady = await Promise.race([waitHealthy(`${gwUrl}/ready`, gw, deadline).then(() => 'ready' as const), signal.then(() => 'signal' as const)]);
    if (gwReady === 'signal') {
      await stopAll();
      return 0;
    }
    const topo = engines
      .map((e) => `  ${e.name.padEnd(10)} ${e.url}${e.kvEvents ? `  kv-events ${e.kvEvents.replace('*', '127.0.0.1')}` : ''}${e.profile ? `  simulated ${e.profile}` : ''}`)
      .join('\n');
    console.log(`tandem up: gateway ${gwUrl} (model ${model}${simulated ? ', simulated engines' : ''})\n${topo}\n  try: curl ${gwUrl}/v1/completions -H 'content-type: application/json' -d '{"model":"${model}","prompt":"Once upon a time","max_tokens":32}'`);

    // run until a signal; children that die are restarted (or, with --restart never, end the cluster)
    const ended = supervise(children, policy, () => stopping);
    const outcome = await Promise.race([signal.then(() => undefined), ended]);
    if (outcome && !stopping) {
      console.error(`tandem up: ${outcome.c.name} exited (${outcome.how}); stopping the cluster (--restart ${policy})`);
      await stopAll();
      return 1;
    }
    await stopAll();
    return 0;
  } catch (err) {
    await stopAll();
    throw Object.assign(err as Error, { userFacing: true });
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    process.off('exit', onExit);
  }
}
