// `tandem gateway`: the OpenAI gateway and endpoint picker over prefill/decode engines.
import { readFileSync } from 'node:fs';
import { parseBytes, parseFlags, UsageError } from '../cli/args.ts';
import { DEFAULT_CONFIG_YAML } from './config.ts';
import { parseEndpointFlag } from './flags.ts';
import { startGateway, type GatewayOptions } from './server.ts';

const spec = {
  port: { type: 'number', default: 8000, help: 'listen port' },
  host: { type: 'string', default: '127.0.0.1', help: 'listen address' },
  config: { type: 'string', help: 'EndpointPickerConfig YAML (default: the built-in config, see --print-default-config)' },
  endpoint: { type: 'list', help: 'URL[,role=prefill|decode|both][,kv-events=tcp://host:port][,model=NAME][,label=value…] (repeatable)' },
  'api-key': { type: 'list', help: 'require Authorization: Bearer KEY on /v1/* (repeatable)' },
  'registration-key': { type: 'string', help: 'require Authorization: Bearer KEY to register/deregister/list endpoints (default: an --api-key; env TANDEM_REGISTRATION_KEY)' },
  'max-inflight': { type: 'number', default: 1024, help: 'requests in flight before 429' },
  'max-body': { type: 'string', default: '32MiB', help: 'request body limit (413 beyond)' },
  'request-timeout': { type: 'number', default: 600, help: 'seconds per request' },
  'max-retries': { type: 'number', default: 2, help: 'other endpoints tried when one fails before its first byte' },
  'scrape-interval-ms': { type: 'number', default: 50, help: 'endpoint /metrics scrape period' },
  'staleness-ms': { type: 'number', default: 2000, help: 'scraped metrics older than this are ignored' },
  'health-interval-ms': { type: 'number', default: 1000, help: 'health probe period' },
  'health-timeout-ms': { type: 'number', default: 3000, help: 'a health probe not answered this long failed (2 in a row: out, and its legs in flight are cancelled)' },
  'drain-timeout': { type: 'number', default: 30, help: 'seconds requests in progress get to finish after SIGTERM/SIGINT (a second signal stops at once)' },
  'heartbeat-ttl-ms': { type: 'number', default: 3000, help: 'registered endpoints without a heartbeat this long are dropped' },
  'print-default-config': { type: 'boolean', help: 'print the built-in config and exit' },
  'check-config': { type: 'boolean', help: 'validate --config and exit' },
  help: { type: 'boolean' },
} as const;

function usage(): string {
  const lines = ['usage: tandem gateway [--port 8000] [--config scheduler.yaml] [--endpoint URL[,role=…]]…', ''];
  for (const [k, s] of Object.entries(spec)) if ('help' in s && s.help) lines.push(`  --${k.padEnd(22)} ${s.help}`);
  return lines.join('\n');
}

export function gatewayOptionsFromFlags(argv: string[]): { opts: GatewayOptions; flags: ReturnType<typeof parseFlags<typeof spec>>; drainTimeoutMs: number } {
  const f = parseFlags(argv, spec);
  if (f._.length) throw new UsageError(`unexpected argument '${f._[0]}'`);
  let configText: string | undefined;
  if (f.config) {
    try {
      configText = readFileSync(f.config, 'utf8');
    } catch (err) {
      throw new UsageError(`cannot read --config ${f.config}: ${(err as Error).message}`);
    }
  }
  const positive = (name: string, v: number | undefined) => {
    if (v === undefined || !(v > 0)) throw new UsageError(`--${name} must be > 0`);
    return v;
  };
  const opts: GatewayOptions = {
    port: f.port,
    host: f.host,
    configText,
    configSource: f.config,
    endpoints: f.endpoint.map(parseEndpointFlag),
    apiKeys: f['api-key'],
    registrationKey: f['registration-key'] ?? process.env['TANDEM_REGISTRATION_KEY'] ?? undefined,
    maxInflight: positive('max-inflight', f['max-inflight']),
    maxBodyBytes: parseBytes(f['max-body'] ?? '32MiB'),
    requestTimeoutMs: positive('request-timeout', f['request-timeout']) * 1000,
    maxRetries: f['max-retries'] !== undefined && f['max-retries'] >= 0 ? Math.floor(f['max-retries']) : 2,
    pool: {
      scrapeIntervalMs: positive('scrape-interval-ms', f['scrape-interval-ms']),
      stalenessMs: positive('staleness-ms', f['staleness-ms']),
      healthIntervalMs: positive('health-interval-ms', f['health-interval-ms']),
      healthTimeoutMs: positive('health-timeout-ms', f['health-timeout-ms']),
      heartbeatTtlMs: positive('heartbeat-ttl-ms', f['heartbeat-ttl-ms']),
    },
    processMetrics: true,
  };
  return { opts, flags: f, drainTimeoutMs: positive('drain-timeout', f['drain-timeout']) * 1000 };
}

/**
 * Serve until SIGINT/SIGTERM, then `drain` (requests in progress finish); a second signal during the
 * drain stops at once with `close`.
 */
export async function runUntilSignal(close: () => Promise<void>, drain: () => Promise<void> = close): Promise<number> {
  await new Promise<void>((resolve) => {
    process.once('SIGINT', () => resolve());
    process.once('SIGTERM', () => resolve());
  });
  const again = new Promise<'again'>((resolve) => {
    process.once('SIGINT', () => resolve('again'));
    process.once('SIGTERM', () => resolve('again'));
  });
  if ((await Promise.race([drain().then(() => 'drained' as const), again])) === 'again') await close();
  return 0;
}

export async function main(argv: string[]): Promise<number> {
  const { opts, flags, drainTimeoutMs } = gatewayOptionsFromFlags(argv);
  if (flags.help) {
    console.log(usage());
    return 0;
  }
  if (flags['print-default-config']) {
    process.stdout.write(DEFAULT_CONFIG_YAML);
    return 0;
  }
  const gw = await startGateway(opts);
  if (flags['check-config']) {
    console.log(`${opts.configSource ?? 'default config'}: ok (profiles: ${[...gw.scheduler.config.profiles.keys()].join(', ')}; handler ${gw.scheduler.config.handler.type})`);
    await gw.close();
    return 0;
  }
  console.error(`[gateway] listening on ${gw.url} (${gw.pool.all().length} static endpoints, profiles: ${[...gw.scheduler.config.profiles.keys()].join(', ')})`);
  return runUntilSignal(
    () => gw.close(),
    () => gw.drain(drainTimeoutMs),
  );
}
