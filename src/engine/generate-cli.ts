// `tandem generate`: one prompt, one model, text streamed to stdout.
import { parseFlags, UsageError } from '../cli/args.ts';
import { loadModel } from '../model/index.ts';
import { createTokenizer } from '../tokenizer/index.ts';
import { GREEDY } from './api.ts';
import { generate } from './generate.ts';

const FLAGS = {
  model: { type: 'string', default: 'stories260K' },
  tokenizer: { type: 'string' },
  prompt: { type: 'string', default: 'Once upon a time' },
  'max-tokens': { type: 'number', default: 256 },
  temperature: { type: 'number', default: 0 },
  'top-p': { type: 'number', default: 1 },
  'top-k': { type: 'number', default: 0 },
  'min-p': { type: 'number', default: 0 },
  seed: { type: 'number' },
  'ignore-eos': { type: 'boolean' },
  kernels: { type: 'string', default: 'wasm' },
  'kv-cache-dtype': { type: 'string', default: 'f32' },
  json: { type: 'boolean' },
  help: { type: 'boolean' },
} as const;

export async function main(argv: string[]): Promise<number> {
  const f = parseFlags(argv, FLAGS);
  if (f.help) {
    console.log(
      'usage: tandem generate [--model stories260K|path|synthetic:15m] [--tokenizer path] --prompt TEXT [--max-tokens N]\n' +
        '                       [--temperature T] [--top-p P] [--top-k K] [--min-p P] [--seed S] [--ignore-eos] [--json]\n' +
        '                       [--kernels wasm|reference] [--kv-cache-dtype f32|f16]',
    );
    return 0;
  }
  const maxTokens = f['max-tokens']!;
  if (!Number.isInteger(maxTokens) || maxTokens < 1) throw new UsageError('--max-tokens must be a positive integer');
  if (f.temperature! < 0) throw new UsageError('--temperature must be ≥ 0');
  if (f.kernels !== 'wasm' && f.kernels !== 'reference') throw new UsageError('--kernels must be wasm or reference');
  if (f['kv-cache-dtype'] !== 'f32' && f['kv-cache-dtype'] !== 'f16') throw new UsageError('--kv-cache-dtype must be f32 or f16');

  const t0 = performance.now();
  const model = await loadModel(f.model!, { tokenizer: f.tokenizer });
  const tokenizer = createTokenizer(model.tokenizer);
  const loadMs = performance.now() - t0;
  const promptIds = tokenizer.encode(f.prompt!);
  if (promptIds.length >= model.config.contextLength) {
    throw new UsageError(`the prompt has ${promptIds.length} tokens; ${model.name} has a context of ${model.config.contextLength}`);
  }

  const stream = tokenizer.streamDecoder({ prefix: promptIds });
  let text = '';
  if (!f.json) process.stdout.write(f.prompt!);
  const result = await generate(model, promptIds, {
    maxTokens,
    sampling: {
      ...GREEDY,
      temperature: f.temperature!,
      topP: f['top-p']!,
      topK: f['top-k']!,
      minP: f['min-p']!,
      seed: f.seed ?? (Math.random() * 2 ** 32) >>> 0,
    },
    stopIds: tokenizer.stopIds,
    ignoreEos: f['ignore-eos'],
    kernels: f.kernels,
    kvDtype: f['kv-cache-dtype'],
    onToken: (id) => {
      const piece = stream.push(id);
      text += piece;
      if (!f.json) process.stdout.write(piece);
    },
  });
  const tail = stream.flush();
  text += tail;
  if (f.json) {
    const t = result.timings;
    process.stdout.write(
      JSON.stringify({
        model: model.name,
        prompt_ids: promptIds,
        output_ids: result.outputIds,
        text,
        timings: {
          load_ms: round(loadMs),
          setup_ms: round(t.setupMs),
          prefill_ms: round(t.prefillMs),
          decode_ms: round(t.decodeMs),
          prompt_tokens: t.promptTokens,
          generated_tokens: t.generatedTokens,
          prefill_tokens_per_s: round(t.prefillTokensPerS),
          decode_tokens_per_s: round(t.decodeTokensPerS),
        },
      }) + '\n',
    );
  } else {
    process.stdout.write(tail + '\n');
  }
  return 0;
}

function round(x: number): number {
  return Math.round(x * 100) / 100;
}
