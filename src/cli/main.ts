// tandem CLI: each subcommand lives in its own module and is loaded on demand.
const commands: Record<string, { module: string; help: string }> = {
  generate: { module: '../engine/generate-cli.ts', help: 'generate text from a prompt with one model' },
  serve: { module: '../server/cli.ts', help: 'serve a model behind vLLM\'s OpenAI API' },
  gateway: { module: '../gateway/cli.ts', help: 'OpenAI gateway and scheduler over prefill/decode engines' },
  up: { module: './up.ts', help: 'start a local cluster: engines + gateway' },
  'pd-proxy': { module: '../gateway/pd-proxy-cli.ts', help: 'drive the two P/D legs in front of one prefill and one decode engine' },
  'export-gguf': { module: '../model/export-cli.ts', help: 'write a model (e.g. synthetic:15m) as a GGUF file' },
  bench: { module: '../bench/cli.ts', help: 'load generator (tandem bench --url URL …) and benchmarks: engine | serve | kv | gateway | kvstore | pd' },
  experiment: { module: '../bench/experiments/index.ts', help: "reproduce the seed's experiments: itl-vs-qps | adaptive-routing | burst-256 | prefix-routing" },
  profile: { module: '../bench/profile.ts', help: 'measure a running engine and write a simulated-engine profile (--from-engine URL)' },
};

function usage(): string {
  const lines = ['usage: tandem <command> [options]', '', 'commands:'];
  for (const [name, c] of Object.entries(commands)) lines.push(`  ${name.padEnd(12)} ${c.help}`);
  return lines.join('\n');
}

const [cmd, ...rest] = process.argv.slice(2);
if (!cmd || cmd === '--help' || cmd === '-h') {
  console.log(usage());
  process.exit(cmd ? 0 : 1);
}
const entry = commands[cmd];
if (!entry) {
  console.error(`tandem: unknown command '${cmd}'\n${usage()}`);
  process.exit(2);
}
const mod = (await import(entry.module)) as { main(argv: string[]): Promise<number | void> };
try {
  const code = await mod.main(rest);
  if (typeof code === 'number' && code !== 0) process.exitCode = code;
} catch (err) {
  // Errors the user can act on carry a one-line message; anything else is a bug and keeps its stack.
  const e = err as Error & { userFacing?: boolean; code?: string; syscall?: string; address?: string; port?: number };
  if (e && (e.name === 'ModelLoadError' || e.name === 'UsageError' || e.userFacing)) {
    console.error(`tandem ${cmd}: ${e.message}`);
    process.exitCode = 2;
  } else if (e?.syscall === 'listen' && (e.code === 'EADDRINUSE' || e.code === 'EACCES' || e.code === 'EADDRNOTAVAIL')) {
    const why = e.code === 'EADDRINUSE' ? 'the address is in use (another tandem? choose another --port)' : e.code === 'EACCES' ? 'permission denied (ports below 1024 need privileges)' : 'no such local address (check --host)';
    console.error(`tandem ${cmd}: cannot listen on ${e.address ?? '?'}:${e.port ?? '?'}: ${why}`);
    process.exitCode = 2;
  } else {
    console.error(err);
    process.exitCode = 1;
  }
}
