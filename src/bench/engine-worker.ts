// One model's tandem figures, measured in a child process of its own (so its peak RSS is its own).
// Prints one JSON line. Timed: forward passes plus greedy sampling, the same work llama.cpp's figures time.
import { loadModel } from '../model/index.ts';
import { createRunner } from '../engine/generate.ts';
import { argmax } from '../engine/sampler.ts';

interface Args {
  model: string;
  prefillTokens: number;
  decodeTokens: number;
  batchSequences: number;
  batchDecodeTokens: number;
  repeats: number;
  kernels: 'wasm' | 'reference';
}

const a = JSON.parse(process.argv[2]!) as Args;
const model = await loadModel(a.model);
const c = model.config;
const bs = 16;
const ctxPerSeq = Math.min(c.contextLength, Math.max(a.prefillTokens, 16 + a.decodeTokens) + 16);
const blocksPerSeq = Math.ceil(ctxPerSeq / bs);
const runner = await createRunner(model, { kernels: a.kernels, numBlocks: blocksPerSeq * a.batchSequences, blockSize: bs });
const vocab = c.vocabSize;
const tableOf = (s: number) => Array.from({ length: blocksPerSeq }, (_, i) => s * blocksPerSeq + i);
// Prompt ids: a fixed pseudo-random walk over the vocabulary (no special ids), the same for every run.
const ids = (n: number, salt: number) => Array.from({ length: n }, (_, i) => 3 + ((i * 7919 + salt * 104729) % (vocab - 3)));
const median = (xs: number[]) => xs.slice().sort((x, y) => x - y)[Math.floor(xs.length / 2)]!;

function prefill(): number {
  const prompt = ids(a.prefillTokens, 1);
  const t = performance.now();
  runner.forward([{ tokens: prompt, start: 0, blockTable: tableOf(0), wantLogits: true }]);
  return a.prefillTokens / ((performance.now() - t) / 1000);
}

function decode1(): number {
  const table = tableOf(0);
  const prompt = ids(16, 2);
  let logits = runner.forward([{ tokens: prompt, start: 0, blockTable: table, wantLogits: true }]);
  const t = performance.now();
  for (let i = 0; i < a.decodeTokens; i++) {
    const next = argmax(logits, 0, vocab);
    logits = runner.forward([{ tokens: [next], start: 16 + i, blockTable: table, wantLogits: true }]);
  }
  return a.decodeTokens / ((performance.now() - t) / 1000);
}

function decodeBatch(): number {
  const n = a.batchSequences;
  let logits: Float32Array = new Float32Array(0);
  for (let s = 0; s < n; s++) runner.forward([{ tokens: ids(16, 10 + s), start: 0, blockTable: tableOf(s), wantLogits: false }]);
  let next = Array.from({ length: n }, (_, s) => ids(1, 50 + s)[0]!);
  const t = performance.now();
  for (let i = 0; i < a.batchDecodeTokens; i++) {
    logits = runner.forward(next.map((tok, s) => ({ tokens: [tok], start: 16 + i, blockTable: tableOf(s), wantLogits: true })));
    next = next.map((_, s) => argmax(logits, s * vocab, vocab));
  }
  return (n * a.batchDecodeTokens) / ((performance.now() - t) / 1000);
}

const runs = { prefill: [] as number[], decode1: [] as number[], decodeBatch: [] as number[] };
prefill();
decode1(); // warm-up
for (let r = 0; r < a.repeats; r++) {
  runs.prefill.push(prefill());
  runs.decode1.push(decode1());
}
decodeBatch();
for (let r = 0; r < a.repeats; r++) runs.decodeBatch.push(decodeBatch());
console.log(
  JSON.stringify({
    model: model.name,
    prefillTokPerS: median(runs.prefill),
    decodeTokPerS1: median(runs.decode1),
    decodeTokPerS32: median(runs.decodeBatch),
    peakRssMiB: process.resourceUsage().maxRSS / 1024,
    runs,
  }),
);
