// tandem export-gguf: write any loadable model (built-in, synthetic:<preset>, .bin, GGUF, HF folder)
// as a GGUF v3 file, e.g. to run the same weights under llama.cpp.
import { parseFlags, UsageError } from '../cli/args.ts';
import { loadModel } from './load.ts';
import { writeGguf } from './gguf-writer.ts';

const USAGE = 'usage: tandem export-gguf --model <ref> [--tokenizer <file>] --out <file.gguf> [--type f32|q8_0]';

export async function main(argv: string[]): Promise<number> {
  const flags = parseFlags(argv, {
    model: { type: 'string' },
    tokenizer: { type: 'string' },
    out: { type: 'string' },
    type: { type: 'string', default: 'f32' },
    help: { type: 'boolean' },
  });
  if (flags.help) {
    console.log(USAGE);
    return 0;
  }
  if (flags._.length) throw new UsageError(`unexpected argument '${flags._[0]}' (${USAGE})`);
  if (!flags.model) throw new UsageError(`--model is required (${USAGE})`);
  if (!flags.out) throw new UsageError(`--out is required (${USAGE})`);
  const type = flags.type;
  if (type !== 'f32' && type !== 'q8_0') throw new UsageError(`--type must be f32 or q8_0, got '${type}'`);
  const model = await loadModel(flags.model, flags.tokenizer ? { tokenizer: flags.tokenizer } : {});
  const { bytes, tensors } = await writeGguf(model, flags.out, { type });
  const permuted = model.config.ropeStyle === 'neox' ? ', Q/K rows permuted for adjacent-pair RoPE' : '';
  console.log(`wrote ${flags.out}: ${model.name}, ${tensors} tensors, ${type}${permuted}, ${(bytes / 2 ** 20).toFixed(2)} MiB, fingerprint ${model.fingerprint.slice(0, 16)}`);
  return 0;
}
