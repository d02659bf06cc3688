// `npm run bench:serve`: a real `tandem serve` process under 1, 8 and 32 concurrent streams —
// output tok/s and ITL p50/p99 — beside node-llama-cpp with the same number of parallel
// sequences on the same GGUF, in the same run.
import { join } from 'node:path';
import { request } from 'undici';
import { parseFlags } from '../cli/args.ts';
import { loadModel } from '../model/index.ts';
import { measureLlamaCppServe } from './llamacpp/index.ts';
import { ggufFile, measuredBy, writeReport } from './report.ts';
import { percentile, repoRoot, startServe, streamCompletion } from './serve-util.ts';

export async function main(argv: string[]): Promise<number> {
  const f = parseFlags(argv, {
    models: { type: 'string', default: 'stories260K,synthetic:15m' },
    concurrency: { type: 'string', default: '1,8,32' },
    'prompt-tokens': { type: 'number', default: 128 },
    'max-tokens': { type: 'number', default: 128 },
    'no-llamacpp': { type: 'boolean' },
    out: { type: 'string', default: join(repoRoot, 'docs/bench-results/serve.md') },
  });
  const rows: string[] = [];
  for (const name of f.models!.split(',')) {
    const gguf = await ggufFile(name);
    const served = await startServe(['--model', gguf, '--max-num-seqs', '64', '--max-num-batched-tokens', '2048']);
    try {
      for (const c of f.concurrency!.split(',').map(Number)) {
        const vocab = (await loadModel(gguf)).config.vocabSize;
        const prompt = (s: number) => Array.from({ length: f['prompt-tokens']! }, (_, i) => 3 + ((i * 7919 + s * 104729) % (vocab - 3)));
        const body = (s: number) => ({ prompt: prompt(s), max_tokens: f['max-tokens'], ignore_eos: true, temperature: 0 });
        await streamCompletion(served.url, body(999)); // warm-up
        const t0 = performance.now();
        // Probe /health while the streams run: the HTTP thread must stay responsive under full load.
        const health: number[] = [];
        let running = true;
        const probing = (async () => {
          while (running) {
            const h0 = performance.now();
            const r = await request(`${served.url}/health`);
            await r.body.dump();
            health.push(performance.now() - h0);
            await new Promise((res) => setTimeout(res, 20));
          }
        })();
        const results = await Promise.all(Array.from({ length: c }, (_, s) => streamCompletion(served.url, body(s))));
        const wall = (performance.now() - t0) / 1000;
        running = false;
        await probing;
        const tokens = results.reduce((a, r) => a + r.tokens, 0);
        const gaps = results.flatMap((r) => r.gaps);
        let l = '– | – | – | –';
        if (!f['no-llamacpp']) {
          try {
            const r = await measureLlamaCppServe(gguf, { concurrency: c, promptTokens: f['prompt-tokens']!, maxTokens: f['max-tokens']!, threads: 1, repeats: 1 });
            l = `${r.outputTokPerS.toFixed(0)} | ${r.itlP50Ms?.toFixed(2)} | ${r.itlP99Ms?.toFixed(2)} | ${(tokens / wall / r.outputTokPerS).toFixed(2)}×`;
          } catch (err) {
            process.stderr.write(`llama.cpp failed: ${(err as Error).message}\n`);
          }
        }
        const row =
          `| ${name} | ${c} | ${(tokens / wall).toFixed(0)} | ${percentile(gaps, 50).toFixed(2)} | ${percentile(gaps, 99).toFixed(2)} | ${l} ` +
          `| ${percentile(health, 50).toFixed(2)} / ${percentile(health, 99).toFixed(2)} |`;
        process.stderr.write(row + '\n');
        rows.push(row);
      }
    } finally {
      await served.stop();
    }
  }
  const table = [
    measuredBy('bench:serve') +
      ` Each stream: ${f['prompt-tokens']}-token prompt, ${f['max-tokens']} tokens, ignore_eos, greedy, streamed over HTTP ` +
      '(tandem: a real `tandem serve` process, model in its worker thread; llama.cpp: node-llama-cpp, one context with N sequences, 1 thread, no HTTP). ' +
      'ITL = gap between consecutive streamed tokens of one stream.',
    '',
    '| model | streams | tandem tok/s | tandem ITL p50 ms | tandem ITL p99 ms | llama.cpp tok/s | llama.cpp ITL p50 ms | llama.cpp ITL p99 ms | throughput ratio | tandem /health under load p50 / p99 ms |',
    '|---|---|---|---|---|---|---|---|---|---|',
    ...rows,
  ].join('\n');
  console.log(table);
  writeReport(f.out!, table);
  return 0;
}
