// Stand-alone llama.cpp baseline: the numbers in docs/llamacpp-baseline.md come from this.
//
//   node --import tsx src/bench/llamacpp/cli.ts [--model file.gguf]... [--mode engine|serve|all] [--json]
//
// Exports main(argv) like a tandem subcommand, so `tandem bench` can mount it as is.
import { basename } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseFlags, UsageError } from '../../cli/args.ts';
import { measureLlamaCppEngine, measureLlamaCppServe, type FlashAttentionChoice } from './measure.ts';

const DEFAULT_MODELS = ['models/stories260K-gguf/stories260K.gguf', 'models/tinystories-656k/TinyStories-656K-Q8_0.gguf'];

const spec = {
  model: { type: 'list', help: 'GGUF file (repeatable); default: the two shipped tiny models' },
  mode: { type: 'string', default: 'all', help: 'engine | serve | all' },
  concurrency: { type: 'list', help: 'parallel sequences for serve (repeatable); default 1, 8, 32' },
  'prompt-tokens': { type: 'number', default: 128, help: 'serve: prompt tokens per sequence' },
  'max-tokens': { type: 'number', default: 128, help: 'serve: generated tokens per sequence' },
  'prefill-tokens': { type: 'number', default: 512, help: 'engine: prefill prompt length' },
  'decode-tokens': { type: 'number', default: 128, help: 'engine: tokens timed at batch 1' },
  'batch-decode-tokens': { type: 'number', default: 64, help: 'engine: tokens timed per sequence at batch 32' },
  repeats: { type: 'number', default: 3, help: 'timed runs per figure (median reported)' },
  threads: { type: 'number', default: 1, help: 'ggml threads' },
  'flash-attention': { type: 'string', default: 'best', help: 'best | on | off' },
  json: { type: 'boolean', help: 'print one JSON object per measurement instead of a table' },
  help: { type: 'boolean' },
} as const;

function usage(): string {
  const lines = ['usage: node --import tsx src/bench/llamacpp/cli.ts [options]', ''];
  for (const [name, s] of Object.entries(spec)) if ('help' in s) lines.push(`  --${name.padEnd(20)} ${s.help}`);
  return lines.join('\n');
}

function flashAttention(text: string | undefined): FlashAttentionChoice {
  if (text === 'best') return 'best';
  if (text === 'on' || text === 'true') return true;
  if (text === 'off' || text === 'false') return false;
  throw new UsageError(`--flash-attention must be best, on or off, got '${text}'`);
}

function positive(name: string, v: number | undefined): number {
  if (v === undefined || !Number.isInteger(v) || v < 1) throw new UsageError(`--${name} must be a positive integer, got ${v}`);
  return v;
}

export async function main(argv: string[]): Promise<number> {
  const f = parseFlags(argv, spec);
  if (f.help) {
    console.log(usage());
    return 0;
  }
  if (f._.length) throw new UsageError(`unexpected argument '${f._[0]}'`);
  if (!['engine', 'serve', 'all'].includes(f.mode ?? '')) throw new UsageError(`--mode must be engine, serve or all, got '${f.mode}'`);
  const models = f.model.length ? f.model : DEFAULT_MODELS;
  const concurrency = (f.concurrency.length ? f.concurrency : ['1', '8', '32']).map((c) => positive('concurrency', Number(c)));
  const common = {
    repeats: positive('repeats', f.repeats),
    threads: positive('threads', f.threads),
    flashAttention: flashAttention(f['flash-attention']),
    onStderr: (s: string) => {
      if (/error/i.test(s)) process.stderr.write(s);
    },
  };
  const print = (o: Record<string, unknown>) => console.log(JSON.stringify(o));

  for (const gguf of models) {
    if (f.mode !== 'serve') {
      const r = await measureLlamaCppEngine(gguf, {
        ...common,
        prefillTokens: positive('prefill-tokens', f['prefill-tokens']),
        decodeTokens: positive('decode-tokens', f['decode-tokens']),
        batchDecodeTokens: positive('batch-decode-tokens', f['batch-decode-tokens']),
      });
      if (f.json) print({ gguf, ...r.raw });
      else {
        const fa = (on: boolean) => (on ? 'FA' : 'no FA');
        console.log(
          `${basename(gguf)} engine (llama.cpp ${r.nodeLlamaCppVersion}, ${r.threads} thread): ` +
            `prefill ${r.prefillTokens} tok ${r.prefillTokPerS} tok/s (${fa(r.flashAttention.prefill)}) | ` +
            `decode b1 ${r.decodeTokPerS1} tok/s (${fa(r.flashAttention.decode1)}) | ` +
            `decode b${r.batchSequences} ${r.decodeTokPerS32} tok/s (${fa(r.flashAttention.decodeBatch)}) | ` +
            `peak RSS ${r.peakRssMiB} MiB (node alone ${r.baseRssMiB} MiB) | per CPU-second: ` +
            `${r.perCpuSecond.prefillTokPerS} / ${r.perCpuSecond.decodeTokPerS1} / ${r.perCpuSecond.decodeTokPerS32}`,
        );
      }
    }
    if (f.mode !== 'engine') {
      for (const c of concurrency) {
        const r = await measureLlamaCppServe(gguf, {
          ...common,
          concurrency: c,
          promptTokens: positive('prompt-tokens', f['prompt-tokens']),
          maxTokens: positive('max-tokens', f['max-tokens']),
        });
        if (f.json) print({ gguf, ...r.raw });
        else {
          console.log(
            `${basename(gguf)} serve C=${c} P=${r.promptTokens} M=${r.maxTokens}: ${r.outputTokPerS} output tok/s ` +
              `(${r.outputTokPerCpuS} per CPU-s) | ` +
              `ITL p50 ${r.itlP50Ms} ms p99 ${r.itlP99Ms} ms | TTFT p50 ${r.ttftP50Ms} ms p99 ${r.ttftP99Ms} ms | ` +
              `${r.flashAttention ? 'FA' : 'no FA'} | peak RSS ${r.peakRssMiB} MiB`,
          );
        }
      }
    }
  }
  return 0;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main(process.argv.slice(2)).then(
    (code) => (process.exitCode = code),
    (e: Error & { userFacing?: boolean }) => {
      console.error(e.name === 'UsageError' || e.userFacing ? `llamacpp baseline: ${e.message}` : e);
      process.exitCode = e.name === 'UsageError' ? 2 : 1;
    },
  );
}
