// The model-runner thread: owns the kernels, the weights, the KV pool and the samplers, and
// executes StepPlans sent by the engine's scheduler on the main thread. Keeping compute here leaves
// the main thread free for HTTP, metrics and KV transfers.

import { parentPort } from 'node:worker_threads';
import { loadModel } from '../model/index.ts';
import type { SamplingParams, TokenLogprob } from './api.ts';
import { createRunner } from './generate.ts';
import type { ModelRunner } from './model-runner.ts';
import { SamplerState, sample } from './sampler.ts';
import type { WorkerReply, WorkerRequest } from './worker-protocol.ts';
import { busyFor, loadProfile, simulatedToken, stepMs, type GpuProfile } from './simulate.ts';

let runner: ModelRunner | undefined;
const samplers = new Map<string, SamplerState>();
let profile: GpuProfile | undefined;

async function handle(msg: WorkerRequest): Promise<WorkerReply | undefined> {
  switch (msg.type) {
    case 'init': {
      const model = await loadModel(msg.model, { tokenizer: msg.tokenizer });
      if (msg.simulate) profile = loadProfile(msg.simulate);
      const modelLen = profile ? profile.maxModelLen : model.config.contextLength;
      const ctx = Math.min(modelLen, msg.maxModelLen ?? modelLen);
      const blockBytes = model.config.nLayers * 2 * msg.blockSize * model.config.nKvHeads * model.config.headDim * (msg.kvDtype === 'f16' ? 2 : 4);
      const numBlocks = msg.numBlocks ?? Math.max(1, Math.floor((msg.kvCacheMemoryBytes ?? 256 * 1024 * 1024) / blockBytes));
      runner = await createRunner(model, { kernels: msg.kernels, kvDtype: msg.kvDtype, blockSize: msg.blockSize, numBlocks });
      return {
        type: 'ready',
        name: model.name,
        config: { ...model.config, contextLength: ctx },
        tokenizer: model.tokenizer,
        chatTemplate: model.chatTemplate,
        fingerprint: model.fingerprint,
        memory: runner.kernels.memory,
        pool: runner.pool,
      };
    }
    case 'step': {
      const r = runner!;
      const t0 = performance.now();
      if (profile) return simulatedStep(msg, r.config.vocabSize, profile, t0);
      const logits = r.forward(msg.chunks);
      const vocab = r.config.vocabSize;
      const results: { rid: string; id: number; logprob?: TokenLogprob }[] = [];
      let row = 0;
      for (const ch of msg.chunks) {
        if (!ch.wantLogits) continue;
        const s = ch.sample!;
        let st = samplers.get(ch.rid);
        if (!st) {
          st = new SamplerState(s.params as SamplingParams, s.promptIds ?? [], s.seed);
          samplers.set(ch.rid, st);
        }
        const res = sample(logits, row * vocab, vocab, st, { banned: s.banned, logprobs: s.logprobs });
        st.accept(res.id);
        results.push({ rid: ch.rid, id: res.id, logprob: res.logprob });
        row++;
      }
      return { type: 'result', seq: msg.seq, results, ms: performance.now() - t0 };
    }
    case 'free':
      for (const rid of msg.rids) samplers.delete(rid);
      return undefined;
  }
}

/** A step of a simulated engine: no arithmetic, the profile's GPU time, deterministic tokens. */
function simulatedStep(msg: Extract<WorkerRequest, { type: 'step' }>, vocab: number, p: GpuProfile, t0: number): WorkerReply {
  let decodeRows = 0;
  let contextSum = 0;
  let prefillTokens = 0;
  const results: { rid: string; id: number }[] = [];
  for (const ch of msg.chunks) {
    const end = ch.start + ch.tokens.length;
    if (ch.tokens.length === 1 && ch.start > 0) {
      decodeRows++;
      contextSum += end;
    } else prefillTokens += ch.tokens.length;
    if (ch.wantLogits) results.push({ rid: ch.rid, id: simulatedToken(ch.sample!.seed, end, ch.tokens[ch.tokens.length - 1]!, vocab) });
  }
  busyFor(stepMs(p, decodeRows, decodeRows ? contextSum / decodeRows : 0, prefillTokens) - (performance.now() - t0));
  return { type: 'result', seq: msg.seq, results, ms: performance.now() - t0 };
}

parentPort!.on('message', (msg: WorkerRequest) => {
  handle(msg).then(
    (reply) => reply && parentPort!.postMessage(reply),
    (err: Error) =>
      parentPort!.postMessage({
        type: 'error',
        seq: 'seq' in msg ? msg.seq : undefined,
        name: err.name,
        message: err.message,
        stack: err.stack,
      } satisfies WorkerReply),
  );
});
