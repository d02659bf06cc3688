// `npm run bench:engine`: single-thread prefill and decode throughput of tandem's engine and of
// llama.cpp (node-llama-cpp 3.21.1) on the same GGUF files, in the same run, as ratios.
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { parseFlags } from '../cli/args.ts';
import { measureLlamaCppEngine, type LlamaCppEngineResult } from './llamacpp/index.ts';
import { ggufFile, measuredBy, writeReport } from './report.ts';
import { repoRoot } from './serve-util.ts';

const root = repoRoot;

interface TandemResult {
  prefillTokPerS: number;
  decodeTokPerS1: number;
  decodeTokPerS32: number;
  peakRssMiB: number;
}

const MODELS: { name: string; gguf: () => Promise<string> }[] = [
  { name: 'stories260K', gguf: () => ggufFile('stories260K') },
  { name: 'tinystories-656k (Q8_0)', gguf: () => ggufFile('tinystories-656k') },
  { name: 'synthetic:15m', gguf: () => ggufFile('synthetic:15m') },
  { name: 'synthetic:100m', gguf: () => ggufFile('synthetic:100m') },
];

function runTandem(args: Record<string, unknown>): Promise<TandemResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', join(root, 'src/bench/engine-worker.ts'), JSON.stringify(args)], {
      cwd: root,
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.on('close', (code) => {
      const line = out.trim().split('\n').pop() ?? '';
      if (code !== 0) return reject(new Error(`tandem bench worker exited with ${code}`));
      resolve(JSON.parse(line) as TandemResult);
    });
  });
}

const f1 = (x: number) => (x >= 100 ? x.toFixed(0) : x.toFixed(1));
const ratio = (a: number, b: number) => (b > 0 ? (a / b).toFixed(2) + '×' : 'n/a');

export async function main(argv: string[]): Promise<number> {
  const f = parseFlags(argv, {
    models: { type: 'string' },
    repeats: { type: 'number', default: 3 },
    'no-llamacpp': { type: 'boolean' },
    out: { type: 'string', default: join(root, 'docs/bench-results/engine.md') },
  });
  const chosen = f.models ? MODELS.filter((m) => f.models!.split(',').some((x) => m.name.startsWith(x))) : MODELS;
  const rows: string[] = [];
  for (const m of chosen) {
    const gguf = await m.gguf();
    const common = { prefillTokens: 512, decodeTokens: 128, batchSequences: 32, batchDecodeTokens: 32, repeats: f.repeats! };
    process.stderr.write(`bench:engine ${m.name}: tandem…\n`);
    const t = await runTandem({ model: gguf, kernels: 'wasm', ...common });
    let l: LlamaCppEngineResult | undefined;
    if (!f['no-llamacpp']) {
      process.stderr.write(`bench:engine ${m.name}: llama.cpp…\n`);
      try {
        // synthetic:100m takes ~15 min with both attention paths and 3 repeats: one path, one repeat
        const big = m.name === 'synthetic:100m';
        l = await measureLlamaCppEngine(gguf, {
          threads: 1,
          repeats: big ? 1 : f.repeats,
          flashAttention: big ? true : 'best',
          prefillTokens: 512,
          decodeTokens: 128,
          batchSequences: 32,
          batchDecodeTokens: 32,
        });
      } catch (err) {
        process.stderr.write(`llama.cpp failed on ${m.name}: ${(err as Error).message}\n`);
      }
    }
    rows.push(
      `| ${m.name} | ${f1(t.prefillTokPerS)} | ${l ? f1(l.prefillTokPerS) : '–'} | ${l ? ratio(t.prefillTokPerS, l.prefillTokPerS) : '–'} ` +
        `| ${f1(t.decodeTokPerS1)} | ${l ? f1(l.decodeTokPerS1) : '–'} | ${l ? ratio(t.decodeTokPerS1, l.decodeTokPerS1) : '–'} ` +
        `| ${f1(t.decodeTokPerS32)} | ${l ? f1(l.decodeTokPerS32) : '–'} | ${l ? ratio(t.decodeTokPerS32, l.decodeTokPerS32) : '–'} ` +
        `| ${t.peakRssMiB.toFixed(0)} | ${l ? l.peakRssMiB.toFixed(0) : '–'} |`,
    );
    process.stderr.write(rows[rows.length - 1] + '\n');
  }
  const table = [
    measuredBy('bench:engine') +
      ' Single thread. Prefill: one 512-token prompt; decode: 128 greedy tokens after a 16-token prompt; ' +
      'batch 32: 32 sequences stepping together, 32 tokens each. tok/s, median of the repeats; ratio = tandem / llama.cpp.',
    '',
    '| model | prefill tandem | prefill llama.cpp | ratio | decode b1 tandem | decode b1 llama.cpp | ratio | decode b32 tandem | decode b32 llama.cpp | ratio | RSS tandem MiB | RSS llama.cpp MiB |',
    '|---|---|---|---|---|---|---|---|---|---|---|---|',
    ...rows,
  ].join('\n');
  console.log(table);
  writeReport(f.out!, table);
  return 0;
}
