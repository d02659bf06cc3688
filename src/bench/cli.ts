// `tandem bench <name>`: each benchmark is a module with main(argv).
import { UsageError } from '../cli/args.ts';

const BENCHES: Record<string, string> = {
  engine: './engine.ts',
  serve: './serve.ts',
  kv: './kv.ts',
  gateway: './gateway.ts',
  kvstore: './kvstore.ts',
  pd: './pd.ts',
  llamacpp: './llamacpp/cli.ts',
  loadgen: './loadgen/selfcheck.ts',
  'sim-gateway': './sim-gateway.ts',
  chaos: './chaos.ts',
};

export async function main(argv: string[]): Promise<number | void> {
  // `tandem bench --url URL …` is the load generator; a name runs one of the fixed benches
  if (argv[0]?.startsWith('--')) return (await import('./loadgen/cli.ts')).main(argv);
  const [name, ...rest] = argv;
  const mod = name ? BENCHES[name] : undefined;
  if (!mod) throw new UsageError(`usage: tandem bench <${Object.keys(BENCHES).join('|')}> [options]\n       tandem bench --url URL [options]   (load generator; --help for its options)`);
  const m = (await import(mod)) as { main(argv: string[]): Promise<number | void> };
  return m.main(rest);
}
