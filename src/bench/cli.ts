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
};

export async function main(argv: string[]): Promise<number | void> {
  const [name, ...rest] = argv;
  const mod = name ? BENCHES[name] : undefined;
  if (!mod) throw new UsageError(`usage: tandem bench <${Object.keys(BENCHES).join('|')}> [options]`);
  const m = (await import(mod)) as { main(argv: string[]): Promise<number | void> };
  return m.main(rest);
}
