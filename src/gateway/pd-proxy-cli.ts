// `tandem pd-proxy --prefill URL --decode URL [--port]`: vLLM's toy proxy / llm-d's sidecar two-leg
// flow in front of fixed endpoints — the gateway's orchestration with an always-split config.
import { parseFlags, UsageError } from '../cli/args.ts';
import { PD_PROXY_CONFIG_YAML } from './flags.ts';
import { startGateway } from './server.ts';
import { runUntilSignal } from './cli.ts';

const spec = {
  prefill: { type: 'list', help: 'prefill engine URL (repeatable: round-robin)' },
  decode: { type: 'list', help: 'decode engine URL (repeatable: round-robin)' },
  port: { type: 'number', default: 8000, help: 'listen port' },
  host: { type: 'string', default: '127.0.0.1', help: 'listen address' },
  'request-timeout': { type: 'number', default: 600, help: 'seconds per request' },
  'drain-timeout': { type: 'number', default: 30, help: 'seconds requests in progress get to finish after SIGTERM/SIGINT' },
  help: { type: 'boolean' },
} as const;

export async function main(argv: string[]): Promise<number> {
  const f = parseFlags(argv, spec);
  if (f.help) {
    console.log('usage: tandem pd-proxy --prefill URL --decode URL [--port 8000]\n  every request: leg 1 to prefill (max_tokens 1, kv_transfer_params), leg 2 to decode');
    return 0;
  }
  if (f._.length) throw new UsageError(`unexpected argument '${f._[0]}'`);
  if (f.prefill.length === 0 || f.decode.length === 0) throw new UsageError('give at least one --prefill URL and one --decode URL');
  const gw = await startGateway({
    port: f.port,
    host: f.host,
    configText: PD_PROXY_CONFIG_YAML,
    configSource: 'pd-proxy',
    endpoints: [...f.prefill.map((url) => ({ url, role: 'prefill' as const })), ...f.decode.map((url) => ({ url, role: 'decode' as const }))],
    requestTimeoutMs: (f['request-timeout'] ?? 600) * 1000,
    pool: { scrapeIntervalMs: 1000 },
  });
  console.error(`[pd-proxy] listening on ${gw.url}: prefill ${f.prefill.join(', ')} → decode ${f.decode.join(', ')}`);
  return runUntilSignal(
    () => gw.close(),
    () => gw.drain((f['drain-timeout'] ?? 30) * 1000),
  );
}
