// `tandem serve`: one engine behind vLLM's OpenAI API. Engine flags map 1:1 onto EngineOptions
// (src/engine/api.ts); the rest configure HTTP. SIGTERM/SIGINT drain: stop admitting (503), let
// running requests finish within --drain-timeout, close, exit 0.

import type { AddressInfo } from 'node:net';
import { parseBytes, parseFlags, parseRate, UsageError } from '../cli/args.ts';
import type { Engine, EngineOptions } from '../engine/api.ts';
import { createHttpServer, type OpenAIServer } from './index.ts';
import { connectableEndpoint, startRegistration } from './register.ts';

const FLAGS = {
  model: { type: 'string', help: 'built-in name, path, or synthetic:<preset>' },
  tokenizer: { type: 'string', help: 'tokenizer file when the model has none' },
  'served-model-name': { type: 'string', help: 'name clients use (default: the model short name)' },
  role: { type: 'string', help: 'prefill | decode | both (default both)' },
  kernels: { type: 'string', help: 'wasm | reference (default wasm)' },
  'block-size': { type: 'number', help: 'tokens per KV block (default 16)' },
  'num-blocks': { type: 'number', help: 'KV pool size in blocks (wins over --kv-cache-memory)' },
  'kv-cache-memory': { type: 'string', help: 'KV pool size, e.g. 256MiB (default 256MiB)' },
  'kv-cache-dtype': { type: 'string', help: 'f32 | f16 (default f32)' },
  'prefix-caching': { type: 'boolean', default: true, help: 'automatic prefix caching (--no-prefix-caching to disable)' },
  'max-num-seqs': { type: 'number', help: 'sequences per batch (default 64)' },
  'max-num-batched-tokens': { type: 'number', help: 'tokens per step (default 512)' },
  'max-model-len': { type: 'number', help: 'context length (default: the model’s)' },
  'max-waiting': { type: 'number', help: 'waiting-queue bound; beyond it 429 (default 256)' },
  'kv-host': { type: 'string', help: 'bind address of the KV transfer service (default 127.0.0.1)' },
  'kv-port': { type: 'number', help: 'KV transfer port (0 = any free port)' },
  'kv-advertise-host': { type: 'string', help: 'remote_host put in kv_transfer_params (default --kv-host)' },
  'kv-lease-seconds': { type: 'number', help: 'how long a prefill engine keeps KV for its decode peer (default 30)' },
  'kv-load-failure-policy': { type: 'string', help: 'recompute | fail' },
  'kv-secret': { type: 'string', help: 'shared secret for the KV transfer handshake' },
  'kv-events-endpoint': { type: 'string', help: 'ZMQ PUB endpoint for KV events, e.g. tcp://*:5557' },
  'kv-store': { type: 'string', help: 'KV store tiers, e.g. memory:1GiB,disk:/tmp/kv:10GiB,redis://127.0.0.1:6379' },
  'kv-chunk-tokens': { type: 'number', help: 'KV store chunk size in tokens (default 256)' },
  simulate: { type: 'string', help: 'simulated engine: a GPU timing profile (h200-llama8b, decode-accel-llama8b, or a JSON file) replaces the model arithmetic; --model then only gives the tokenizer (default synthetic:tiny)' },
  'kv-bandwidth': { type: 'string', help: 'simulated engines: KV transfer link speed, e.g. 25GB/s, 200Gb/s (default: the profile\'s)' },
  host: { type: 'string', default: '127.0.0.1', help: 'HTTP bind address' },
  port: { type: 'number', default: 8000, help: 'HTTP port (0 = any free port)' },
  'max-body-bytes': { type: 'string', default: '4MiB', help: 'largest accepted request body' },
  'api-key': { type: 'string', help: 'require Authorization: Bearer <key> on /v1/*' },
  register: { type: 'string', help: 'gateway URL to register with (heartbeats while serving)' },
  'register-key': { type: 'string', help: 'bearer key for --register (the gateway\'s --registration-key; env TANDEM_REGISTRATION_KEY)' },
  'drain-timeout': { type: 'number', default: 30, help: 'seconds running requests get to finish on SIGTERM' },
  help: { type: 'boolean' },
} as const;

type Flags = ReturnType<typeof parseFlags<typeof FLAGS>>;

function usage(): string {
  const lines = ['usage: tandem serve --model M [options]', '', 'options:'];
  for (const [name, s] of Object.entries(FLAGS)) {
    if (name === 'help') continue;
    const flag = s.type === 'boolean' ? `--${name}` : `--${name} ${s.type === 'number' ? 'N' : 'X'}`;
    lines.push(`  ${flag.padEnd(30)} ${(s as { help?: string }).help ?? ''}`);
  }
  return lines.join('\n');
}

export async function main(argv: string[]): Promise<number> {
  const f = parseFlags(argv, FLAGS);
  if (f.help) {
    console.log(usage());
    return 0;
  }
  if (f._.length > 1) throw new UsageError(`unexpected arguments: ${f._.slice(1).join(' ')}`);
  const model = f.model ?? f._[0] ?? (f.simulate !== undefined ? 'synthetic:tiny' : undefined);
  if (!model) throw new UsageError('--model is required (a built-in name such as stories260K, a path, or synthetic:<preset>)');
  const engineOpts = engineOptions(f, model);
  const http = httpOptions(f);

  // Imported here so `tandem serve --help` and flag errors never pay for loading the engine.
  const { createEngine } = await import('../engine/index.ts');
  const { engine, registry } = await createEngine(engineOpts);
  const server = createHttpServer(engine, {
    maxBodyBytes: http.maxBodyBytes,
    apiKey: http.apiKey,
    metricsRegistry: registry,
    modelRoot: model,
  });
  try {
    await listen(server, http.port, http.host);
  } catch (err) {
    await engine.close();
    throw Object.assign(new Error(`cannot listen on ${http.host}:${http.port}: ${(err as Error).message}`), { userFacing: true });
  }
  const port = (server.address() as AddressInfo).port;
  const kvPort = engine.info.kvPort;
  const url = `http://${http.host.includes(':') ? `[${http.host}]` : http.host}:${port}`;
  // KV events name the engine by the address routers use for it.
  engine.setAdvertisedAddress(engineOpts.kvAdvertiseHost ?? (isWildcard(http.host) ? '127.0.0.1' : http.host), port);
  console.log(`tandem serve: ${engine.info.modelName} on ${url} (role ${engine.info.role}, kv port ${kvPort ?? 'none'})`);

  let registration;
  if (http.register) {
    // Tell the gateway an address it can reach: a wildcard bind means "this machine".
    const reachable = engineOpts.kvAdvertiseHost ?? (isWildcard(http.host) ? '127.0.0.1' : http.host);
    registration = startRegistration(http.register, {
      url: `http://${reachable.includes(':') ? `[${reachable}]` : reachable}:${port}`,
      engine,
      kvEventsEndpoint: engineOpts.kvEventsEndpoint && connectableEndpoint(engineOpts.kvEventsEndpoint, reachable),
      key: http.registerKey,
    });
  }
  return shutdownOnSignal(server, engine, http.drainTimeoutMs, registration);
}

function isWildcard(host: string): boolean {
  return host === '0.0.0.0' || host === '::' || host === '[::]';
}

function engineOptions(f: Flags, model: string): EngineOptions {
  const o: Partial<EngineOptions> & { model: string } = { model };
  const set = <K extends keyof EngineOptions>(k: K, v: EngineOptions[K] | undefined) => {
    // Only flags the user gave: createEngine fills in its own defaults for the rest.
    if (v !== undefined) o[k] = v;
  };
  set('tokenizer', f.tokenizer);
  set('servedModelName', nonEmpty(f['served-model-name'], 'served-model-name'));
  set('role', oneOf(f.role, 'role', ['prefill', 'decode', 'both'] as const));
  set('kernels', oneOf(f.kernels, 'kernels', ['wasm', 'reference'] as const));
  set('blockSize', int(f['block-size'], 'block-size', 1));
  set('numBlocks', int(f['num-blocks'], 'num-blocks', 1));
  if (f['kv-cache-memory'] !== undefined) {
    const bytes = parseBytes(f['kv-cache-memory']);
    if (bytes <= 0) throw new UsageError('--kv-cache-memory must be > 0');
    o.kvCacheMemoryBytes = bytes;
  }
  set('kvCacheDtype', oneOf(f['kv-cache-dtype'], 'kv-cache-dtype', ['f32', 'f16'] as const));
  o.prefixCaching = f['prefix-caching'];
  set('maxNumSeqs', int(f['max-num-seqs'], 'max-num-seqs', 1));
  set('maxNumBatchedTokens', int(f['max-num-batched-tokens'], 'max-num-batched-tokens', 1));
  set('maxModelLen', int(f['max-model-len'], 'max-model-len', 2));
  set('maxWaiting', int(f['max-waiting'], 'max-waiting', 0));
  set('kvHost', nonEmpty(f['kv-host'], 'kv-host'));
  set('kvPort', port(f['kv-port'], 'kv-port'));
  set('kvAdvertiseHost', nonEmpty(f['kv-advertise-host'], 'kv-advertise-host'));
  set('kvLeaseSeconds', positive(f['kv-lease-seconds'], 'kv-lease-seconds'));
  set('kvLoadFailurePolicy', oneOf(f['kv-load-failure-policy'], 'kv-load-failure-policy', ['recompute', 'fail'] as const));
  set('kvSecret', nonEmpty(f['kv-secret'], 'kv-secret'));
  set('kvEventsEndpoint', nonEmpty(f['kv-events-endpoint'], 'kv-events-endpoint'));
  set('kvStore', nonEmpty(f['kv-store'], 'kv-store'));
  set('kvChunkTokens', int(f['kv-chunk-tokens'], 'kv-chunk-tokens', 1));
  set('simulate', nonEmpty(f.simulate, 'simulate'));
  if (f['kv-bandwidth'] !== undefined) {
    if (f.simulate === undefined) throw new UsageError('--kv-bandwidth models the link of simulated engines; it needs --simulate');
    o.kvBandwidthBytesPerSec = parseRate(f['kv-bandwidth'], 'kv-bandwidth');
  }
  return o as EngineOptions;
}

function httpOptions(f: Flags) {
  const maxBodyBytes = parseBytes(f['max-body-bytes']!);
  if (maxBodyBytes < 1024) throw new UsageError('--max-body-bytes must be at least 1KiB');
  const register = f.register;
  if (register !== undefined && !/^https?:\/\/[^/]+/.test(register)) throw new UsageError(`--register must be an http(s) URL, got '${register}'`);
  return {
    host: nonEmpty(f.host, 'host')!,
    port: port(f.port, 'port')!,
    maxBodyBytes,
    apiKey: nonEmpty(f['api-key'], 'api-key'),
    register,
    registerKey: nonEmpty(f['register-key'], 'register-key') ?? process.env['TANDEM_REGISTRATION_KEY'] ?? undefined,
    drainTimeoutMs: positive(f['drain-timeout'], 'drain-timeout', true)! * 1000,
  };
}

function int(v: number | undefined, name: string, min: number): number | undefined {
  if (v !== undefined && (!Number.isInteger(v) || v < min)) throw new UsageError(`--${name} must be an integer ≥ ${min}, got ${v}`);
  return v;
}

function positive(v: number | undefined, name: string, allowZero = false): number | undefined {
  if (v !== undefined && !(v > 0 || (allowZero && v === 0))) throw new UsageError(`--${name} must be ${allowZero ? '≥ 0' : '> 0'}, got ${v}`);
  return v;
}

function port(v: number | undefined, name: string): number | undefined {
  if (v !== undefined && (!Number.isInteger(v) || v < 0 || v > 65535)) throw new UsageError(`--${name} must be a port number in [0, 65535], got ${v}`);
  return v;
}

function oneOf<T extends string>(v: string | undefined, name: string, allowed: readonly T[]): T | undefined {
  if (v !== undefined && !allowed.includes(v as T)) throw new UsageError(`--${name} must be one of ${allowed.join(', ')}, got '${v}'`);
  return v as T | undefined;
}

function nonEmpty(v: string | undefined, name: string): string | undefined {
  if (v === '') throw new UsageError(`--${name} must not be empty`);
  return v;
}

function listen(server: OpenAIServer, port: number, host: string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

function shutdownOnSignal(server: OpenAIServer, engine: Engine, drainTimeoutMs: number, registration?: { stop(): Promise<void> }): Promise<number> {
  return new Promise((resolve) => {
    let stopping = false;
    const onSignal = (signal: NodeJS.Signals) => {
      if (stopping) {
        // A second signal means "now": skip the drain.
        console.error(`tandem serve: ${signal} again, exiting without draining`);
        process.exit(1);
      }
      stopping = true;
      console.error(`tandem serve: ${signal}, draining (up to ${drainTimeoutMs / 1000}s)`);
      void (async () => {
        server.startDraining();
        await registration?.stop().catch(() => {});
        await engine.drain(drainTimeoutMs);
        // Every generation has ended; give their responses a moment to flush, then cut what is left.
        const closed = new Promise<void>((r) => server.close(() => r()));
        server.closeIdleConnections();
        const cut = setTimeout(() => server.closeAllConnections(), 1000);
        await closed;
        clearTimeout(cut);
        await engine.close();
        process.off('SIGTERM', onSignal);
        process.off('SIGINT', onSignal);
        // Native handles (sockets of attachments) must not keep a drained server alive.
        setTimeout(() => process.exit(0), 2000).unref();
        resolve(0);
      })().catch((err) => {
        console.error(`tandem serve: shutdown failed: ${(err as Error).stack ?? err}`);
        process.exit(1);
      });
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
  });
}
