// llama.cpp baseline worker: measures one GGUF with node-llama-cpp and prints ONE JSON line on stdout.
//
//   node src/bench/llamacpp/worker.mjs '<json>'
//
// It is plain .mjs (not TypeScript) and runs in a child process of its own so that (a) it can load node-llama-cpp from
// the bench cache folder by absolute path, without node-llama-cpp being a dependency of tandem, and (b) its peak RSS
// (process.resourceUsage().maxRSS) belongs to llama.cpp alone, not to the tandem engine measured in the parent.
//
// Modes: engine, serve, probe (load the library only; used by the installer).
// Output: {"ok":true,"mode":…,...figures} or {"ok":false,"error":"..."} (exit code 2 for bad
// arguments, 1 for a failure while measuring). llama.cpp's own log lines go to stderr, never to stdout.
//
// What is timed (wall clock, performance.now(), one thread, median of `repeats` runs after one warm-up run, once per
// attention path — flash attention off and on — keeping the faster; see attentionModes):
//   prefill   sequence.evaluate(prompt) until the first generated token arrives: the whole prompt in one batch, logits
//             for the last position only, then llama.cpp's greedy sampler (argmax over the vocabulary) picks a token.
//   decode    after a short prompt has been evaluated and its first token sampled, the next N tokens of the same
//             sequence.evaluate() generator: each step evaluates 1 token, computes logits and runs the greedy sampler.
//             This includes node-llama-cpp's per-token JS/async path, as any Node program using llama.cpp pays it.
//   batch-32  the same with 32 sequences of one context decoding concurrently; node-llama-cpp gathers the 32 pending
//             tokens into one llama_decode() batch per step. Aggregate tokens/s over all sequences.
//   serve     C sequences start together, each evaluates its own P-token prompt and generates M tokens; output tok/s =
//             C·M / (time of the last token − start), ITL = gaps between consecutive tokens of one sequence (pooled
//             over sequences and repeats), TTFT = first token − start.
import { createRequire } from 'node:module';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { isAbsolute, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { performance } from 'node:perf_hooks';
import { loadavg } from 'node:os';

const ENGINE_DEFAULTS = {
  threads: 1,
  repeats: 3,
  contextSize: 1024,
  prefillTokens: 512,
  decodePromptTokens: 16,
  decodeTokens: 128,
  batchSequences: 32,
  batchDecodeTokens: 64,
};
const SERVE_DEFAULTS = { threads: 1, repeats: 3, batchSize: 512 };

class ArgError extends Error {}

function int(obj, key, min, max, fallback) {
  const v = obj[key] ?? fallback;
  if (v === undefined) throw new ArgError(`'${key}' is required`);
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    throw new ArgError(`'${key}' must be an integer in [${min}, ${max}], got ${JSON.stringify(v)}`);
  }
  return v;
}

function str(obj, key) {
  const v = obj[key];
  if (typeof v !== 'string' || v === '') throw new ArgError(`'${key}' must be a non-empty string`);
  return v;
}

/** Validate the JSON argument completely before loading llama.cpp, so bad input fails fast and precisely. */
export function parseWorkerArgs(text) {
  if (text === undefined) throw new ArgError('usage: worker.mjs \'<json arguments>\'');
  let a;
  try {
    a = JSON.parse(text);
  } catch (e) {
    throw new ArgError(`arguments are not valid JSON: ${e.message}`);
  }
  if (a === null || typeof a !== 'object' || Array.isArray(a)) throw new ArgError('arguments must be a JSON object');
  const mode = a.mode;
  if (mode !== 'engine' && mode !== 'serve' && mode !== 'probe') {
    throw new ArgError(`'mode' must be "engine", "serve" or "probe", got ${JSON.stringify(mode)}`);
  }
  const packageDir = str(a, 'packageDir');
  if (!isAbsolute(packageDir)) throw new ArgError(`'packageDir' must be an absolute path, got ${packageDir}`);
  if (mode === 'probe') {
    for (const k of Object.keys(a)) if (k !== 'mode' && k !== 'packageDir') throw new ArgError(`unknown argument '${k}' for mode probe`);
    return { mode, packageDir };
  }
  const gguf = str(a, 'gguf');
  if (!isAbsolute(gguf)) throw new ArgError(`'gguf' must be an absolute path, got ${gguf}`);
  if (!existsSync(gguf) || !statSync(gguf).isFile()) throw new ArgError(`GGUF file not found: ${gguf}`);
  const known = new Set(['mode', 'packageDir', 'gguf', 'flashAttention', ...Object.keys(mode === 'engine' ? ENGINE_DEFAULTS : SERVE_DEFAULTS),
    ...(mode === 'serve' ? ['concurrency', 'promptTokens', 'maxTokens'] : [])]);
  for (const k of Object.keys(a)) if (!known.has(k)) throw new ArgError(`unknown argument '${k}' for mode ${mode}`);
  const fa = a.flashAttention ?? 'best';
  if (fa !== 'best' && fa !== true && fa !== false) {
    throw new ArgError(`'flashAttention' must be "best", true or false, got ${JSON.stringify(fa)}`);
  }
  const common = {
    mode, packageDir, gguf, flashAttention: fa, threads: int(a, 'threads', 1, 256, 1), repeats: int(a, 'repeats', 1, 100, 3),
  };
  if (mode === 'engine') {
    const d = ENGINE_DEFAULTS;
    return {
      ...common,
      contextSize: int(a, 'contextSize', 64, 1 << 20, d.contextSize),
      prefillTokens: int(a, 'prefillTokens', 1, 1 << 20, d.prefillTokens),
      decodePromptTokens: int(a, 'decodePromptTokens', 1, 1 << 16, d.decodePromptTokens),
      decodeTokens: int(a, 'decodeTokens', 1, 1 << 16, d.decodeTokens),
      batchSequences: int(a, 'batchSequences', 1, 1024, d.batchSequences),
      batchDecodeTokens: int(a, 'batchDecodeTokens', 1, 1 << 16, d.batchDecodeTokens),
    };
  }
  return {
    ...common,
    concurrency: int(a, 'concurrency', 1, 1024),
    promptTokens: int(a, 'promptTokens', 1, 1 << 20),
    maxTokens: int(a, 'maxTokens', 1, 1 << 20),
    batchSize: int(a, 'batchSize', 1, 1 << 16, SERVE_DEFAULTS.batchSize),
  };
}

// Prompt text: token values do not change the cost of a dense forward pass, but real text keeps the prompt free of
// special tokens and gives the same kind of input tandem sees.
const STORY =
  'Once upon a time, there was a little girl named Lily. She loved to play outside in the park with her friends. ' +
  'One day, she saw a big red ball under a tree. She ran to the ball and kicked it very high. The ball flew over the ' +
  'fence and into the garden of an old man. Lily was scared, but she knocked on his door and said sorry. The old man ' +
  'smiled and gave her the ball back. He said, "Be careful next time, little one." Lily was happy and went home. ';

/** A prompt of exactly `n` tokens: BOS (if the model wants one), then the story's tokens from `offset`, cycling. */
function makePrompt(model, n, offset = 0) {
  const text = model.tokenize(STORY, false);
  if (text.length === 0) throw new Error('the model tokenized the prompt text to nothing');
  const out = [];
  const bos = model.tokens.bos;
  if (bos != null && model.tokens.shouldPrependBosToken) out.push(bos);
  for (let i = 0; out.length < n; i++) out.push(text[(offset + i) % text.length]);
  return out;
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
/** Percentile with linear interpolation between ranks: numpy's default, which vLLM's bench serve uses. */
export function percentile(xs, p) {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const h = (p / 100) * (s.length - 1);
  const lo = Math.floor(h);
  return s[lo] + (h - lo) * ((s[Math.min(lo + 1, s.length - 1)]) - s[lo]);
}
const round = (x, digits = 3) => Number(x.toFixed(digits));
const mib = (kib) => round(kib / 1024, 1);

// Greedy and nothing else: temperature 0 makes node-llama-cpp build a sampler chain with only llama_sampler_greedy
// (no top-k/top-p/penalties). yieldEogToken keeps generating through an end-of-sequence token, so every run produces
// exactly the requested number of tokens (like ignore_eos in vLLM's benchmarks).
const GREEDY = { temperature: 0, yieldEogToken: true };

/**
 * Wall time and CPU time (all threads of this process) since `start()`. CPU time is the contention-proof figure: on a
 * busy shared machine wall time also counts the time other processes held the core; with one ggml thread CPU time
 * is close to what the same work takes on an idle core.
 */
function stopwatch() {
  const w0 = performance.now();
  const c0 = process.cpuUsage();
  return () => {
    const c = process.cpuUsage(c0);
    return { wallMs: performance.now() - w0, cpuMs: (c.user + c.system) / 1000 };
  };
}

async function next(gen) {
  const r = await gen.next();
  if (r.done) throw new Error('generation ended early');
  return r.value;
}

/** Prefill: evaluate the prompt and sample the first token; returns milliseconds. */
async function timePrefill(sequence, prompt) {
  await sequence.clearHistory();
  const stop = stopwatch();
  const gen = sequence.evaluate(prompt, GREEDY);
  await next(gen);
  const t = stop();
  await gen.return();
  return t;
}

/** Decode on `sequences` concurrently: prompt + first token untimed, then `steps` more tokens each; returns ms. */
async function timeDecode(sequences, prompts, steps) {
  await Promise.all(sequences.map((s) => s.clearHistory()));
  const gens = sequences.map((s, i) => s.evaluate(prompts[i], GREEDY));
  await Promise.all(gens.map(next));
  const stop = stopwatch();
  await Promise.all(gens.map(async (g) => {
    for (let i = 0; i < steps; i++) await next(g);
  }));
  const t = stop();
  await Promise.all(gens.map((g) => g.return()));
  return t;
}

/**
 * The attention paths to try. llama.cpp's choice matters on CPU and goes both ways: on stories260K (head size 8)
 * flash attention makes a 512-token prefill ~2.5x slower, on TinyStories-656K it makes it faster. "best" measures
 * both and keeps the faster one per figure, so the baseline is llama.cpp at its best, not at its default ("auto"
 * resolves to flash attention on CPU).
 */
const attentionModes = (fa) => (fa === 'best' ? [false, true] : [fa]);

/** Tokens/s from the median wall time, and tokens per CPU-second from the median CPU time, of the timed runs. */
function figure(tokens, runs) {
  return {
    tokPerS: tokens / (median(runs.map((r) => r.wallMs)) / 1000),
    tokPerCpuS: tokens / (median(runs.map((r) => r.cpuMs)) / 1000),
    runsMs: runs.map((r) => round(r.wallMs)),
    runsCpuMs: runs.map((r) => round(r.cpuMs)),
  };
}

async function measureEngineWith(model, a, flashAttention) {
  // The prefill context holds the prompt plus one generated token; decode at batch 1 reuses it.
  const contextSize = Math.max(a.contextSize, a.decodePromptTokens + a.decodeTokens + 2);
  const ctx1 = await model.createContext({ contextSize, batchSize: contextSize, threads: a.threads, sequences: 1, flashAttention });
  const seq = ctx1.getSequence();
  // Clamp the prompt so prompt + first token fit in what llama.cpp actually allocated.
  const prefillTokens = Math.min(a.prefillTokens, ctx1.contextSize - 1);
  const prefillPrompt = makePrompt(model, prefillTokens);
  await timePrefill(seq, prefillPrompt); // warm-up
  const prefillMs = [];
  for (let r = 0; r < a.repeats; r++) prefillMs.push(await timePrefill(seq, prefillPrompt));

  const shortPrompt = makePrompt(model, a.decodePromptTokens);
  await timeDecode([seq], [shortPrompt], Math.min(8, a.decodeTokens)); // warm-up
  const decode1Ms = [];
  for (let r = 0; r < a.repeats; r++) decode1Ms.push(await timeDecode([seq], [shortPrompt], a.decodeTokens));
  const single = { contextSize: ctx1.contextSize, batchSize: ctx1.batchSize };
  await ctx1.dispose();

  // Batch decode: one context, `batchSequences` sequences, each with a context just big enough (llama.cpp pads it to
  // 256 cells); distinct prompts so no sequence is a copy of another.
  const B = a.batchSequences;
  const perSeq = a.decodePromptTokens + a.batchDecodeTokens + 2;
  const ctxB = await model.createContext({
    contextSize: perSeq, sequences: B, batchSize: Math.max(B, Math.min(B * a.decodePromptTokens, 2048)), threads: a.threads,
    flashAttention,
  });
  const seqs = Array.from({ length: B }, () => ctxB.getSequence());
  const prompts = seqs.map((_, i) => makePrompt(model, a.decodePromptTokens, i * 7));
  await timeDecode(seqs, prompts, Math.min(4, a.batchDecodeTokens)); // warm-up
  const decodeBMs = [];
  for (let r = 0; r < a.repeats; r++) decodeBMs.push(await timeDecode(seqs, prompts, a.batchDecodeTokens));
  const batch = { contextSize: ctxB.contextSize, batchSize: ctxB.batchSize };
  await ctxB.dispose();

  return {
    flashAttention,
    prefillTokens,
    prefill: figure(prefillTokens, prefillMs),
    decode1: figure(a.decodeTokens, decode1Ms),
    decodeBatch: figure(B * a.batchDecodeTokens, decodeBMs),
    contexts: { single, batch },
  };
}

async function measureEngine(model, a) {
  const trials = [];
  for (const fa of attentionModes(a.flashAttention)) trials.push(await measureEngineWith(model, a, fa));
  const best = (key) => trials.reduce((x, y) => (y[key].tokPerS > x[key].tokPerS ? y : x));
  const [p, d1, dB] = [best('prefill'), best('decode1'), best('decodeBatch')];
  return {
    prefillTokPerS: round(p.prefill.tokPerS, 1),
    decodeTokPerS1: round(d1.decode1.tokPerS, 1),
    decodeTokPerS32: round(dB.decodeBatch.tokPerS, 1),
    flashAttention: { prefill: p.flashAttention, decode1: d1.flashAttention, decodeBatch: dB.flashAttention },
    // The same figures per CPU-second of this process (see stopwatch), for the path chosen above.
    perCpuSecond: {
      prefillTokPerS: round(p.prefill.tokPerCpuS, 1),
      decodeTokPerS1: round(d1.decode1.tokPerCpuS, 1),
      decodeTokPerS32: round(dB.decodeBatch.tokPerCpuS, 1),
    },
    prefillTokens: p.prefillTokens,
    decodePromptTokens: a.decodePromptTokens,
    decodeTokens: a.decodeTokens,
    batchSequences: a.batchSequences,
    batchDecodeTokens: a.batchDecodeTokens,
    trials: trials.map((t) => ({
      flashAttention: t.flashAttention,
      prefillTokPerS: round(t.prefill.tokPerS, 1),
      decodeTokPerS1: round(t.decode1.tokPerS, 1),
      decodeTokPerS32: round(t.decodeBatch.tokPerS, 1),
      runsMs: { prefill: t.prefill.runsMs, decode1: t.decode1.runsMs, decodeBatch: t.decodeBatch.runsMs },
      runsCpuMs: { prefill: t.prefill.runsCpuMs, decode1: t.decode1.runsCpuMs, decodeBatch: t.decodeBatch.runsCpuMs },
      contexts: t.contexts,
    })),
  };
}

async function measureServeWith(model, a, flashAttention) {
  const C = a.concurrency;
  const ctx = await model.createContext({
    contextSize: a.promptTokens + a.maxTokens + 2, sequences: C, batchSize: Math.max(C, a.batchSize), threads: a.threads,
    flashAttention,
  });
  const seqs = Array.from({ length: C }, () => ctx.getSequence());
  // Distinct prompts: llama.cpp shares nothing between sequences, and neither should the input.
  const prompts = seqs.map((_, i) => makePrompt(model, a.promptTokens, i * 7));

  async function run(maxTokens) {
    await Promise.all(seqs.map((s) => s.clearHistory()));
    const stop = stopwatch();
    const t0 = performance.now();
    const stamps = await Promise.all(seqs.map(async (s, i) => {
      const gen = s.evaluate(prompts[i], GREEDY);
      const ts = [];
      for (let k = 0; k < maxTokens; k++) {
        await next(gen);
        ts.push(performance.now());
      }
      await gen.return();
      return ts;
    }));
    const end = Math.max(...stamps.map((ts) => ts[ts.length - 1]));
    const itl = stamps.flatMap((ts) => ts.slice(1).map((t, k) => t - ts[k]));
    const ttft = stamps.map((ts) => ts[0] - t0);
    return { durationMs: end - t0, cpuMs: stop().cpuMs, itl, ttft };
  }

  await run(Math.min(4, a.maxTokens)); // warm-up
  const runs = [];
  for (let r = 0; r < a.repeats; r++) runs.push(await run(a.maxTokens));
  const context = { contextSize: ctx.contextSize, batchSize: ctx.batchSize };
  await ctx.dispose();
  const itl = runs.flatMap((r) => r.itl);
  const ttft = runs.flatMap((r) => r.ttft);
  return {
    outputTokPerS: round((C * a.maxTokens) / (median(runs.map((r) => r.durationMs)) / 1000), 1),
    outputTokPerCpuS: round((C * a.maxTokens) / (median(runs.map((r) => r.cpuMs)) / 1000), 1),
    itlP50Ms: itl.length ? round(percentile(itl, 50)) : null,
    itlP99Ms: itl.length ? round(percentile(itl, 99)) : null,
    ttftP50Ms: round(percentile(ttft, 50)),
    ttftP99Ms: round(percentile(ttft, 99)),
    flashAttention,
    runsMs: runs.map((r) => round(r.durationMs)),
    runsCpuMs: runs.map((r) => round(r.cpuMs)),
    context,
  };
}

async function measureServe(model, a) {
  const trials = [];
  for (const fa of attentionModes(a.flashAttention)) trials.push(await measureServeWith(model, a, fa));
  const best = trials.reduce((x, y) => (y.outputTokPerS > x.outputTokPerS ? y : x));
  return {
    ...best,
    concurrency: a.concurrency,
    promptTokens: a.promptTokens,
    maxTokens: a.maxTokens,
    trials: trials.map((t) => ({ flashAttention: t.flashAttention, outputTokPerS: t.outputTokPerS, itlP50Ms: t.itlP50Ms, itlP99Ms: t.itlP99Ms })),
  };
}

async function loadNodeLlamaCpp(packageDir) {
  const require = createRequire(join(packageDir, 'package.json'));
  let entry;
  try {
    entry = require.resolve('node-llama-cpp');
  } catch {
    throw new Error(`node-llama-cpp is not installed in ${packageDir}`);
  }
  const pkg = JSON.parse(readFileSync(join(packageDir, 'node_modules', 'node-llama-cpp', 'package.json'), 'utf8'));
  return { lib: await import(pathToFileURL(entry).href), version: pkg.version };
}

async function main() {
  let a;
  try {
    a = parseWorkerArgs(process.argv[2]);
  } catch (e) {
    if (!(e instanceof ArgError)) throw e;
    process.stdout.write(JSON.stringify({ ok: false, error: e.message }) + '\n');
    return 2;
  }
  const baseRssMiB = mib(process.resourceUsage().maxRSS);
  // On a shared machine other work skews the figures; the 1-minute load average says how much to trust them.
  const loadBefore = loadavg()[0];
  const { lib, version } = await loadNodeLlamaCpp(a.packageDir);
  const llama = await lib.getLlama({
    gpu: false,
    build: 'never',
    maxThreads: a.threads,
    logLevel: 'warn',
    logger: (level, message) => process.stderr.write(`[llama.cpp ${level}] ${message.trimEnd()}\n`),
  });
  if (a.mode === 'probe') {
    // Used by the installer: proves the CPU prebuilt loads here (a file is needed: node-llama-cpp tests its binary in
    // a fork() that inherits execArgv, which breaks under `node -e`).
    const out = { ok: true, mode: 'probe', nodeLlamaCpp: version, buildType: llama.buildType, cpuMathCores: llama.cpuMathCores, systemInfo: llama.systemInfo };
    await llama.dispose();
    process.stdout.write(JSON.stringify(out) + '\n');
    return 0;
  }
  const model = await llama.loadModel({ modelPath: a.gguf, gpuLayers: 0 });
  const figures = a.mode === 'engine' ? await measureEngine(model, a) : await measureServe(model, a);
  const out = {
    ok: true,
    mode: a.mode,
    ...figures,
    peakRssMiB: mib(process.resourceUsage().maxRSS),
    baseRssMiB,
    threads: a.threads,
    repeats: a.repeats,
    loadAvg1m: { before: round(loadBefore, 2), after: round(loadavg()[0], 2) },
    gguf: a.gguf,
    model: { type: model.typeDescription, sizeBytes: model.size, trainContextSize: model.trainContextSize },
    nodeLlamaCpp: version,
    buildType: llama.buildType,
  };
  await model.dispose();
  await llama.dispose();
  process.stdout.write(JSON.stringify(out) + '\n');
  return 0;
}

// Run only as a script, so the test can import parseWorkerArgs without loading anything.
if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  main().then(
    (code) => { process.exitCode = code; },
    (err) => {
      process.stdout.write(JSON.stringify({ ok: false, error: err instanceof Error ? err.message : String(err) }) + '\n');
      if (err instanceof Error && err.stack) process.stderr.write(err.stack + '\n');
      process.exitCode = 1;
    },
  );
}
