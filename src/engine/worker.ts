// The model-runner thread: owns the kernels, the weights, the KV pool and the samplers, and
// executes StepPlans sent by the engine's scheduler on the main thread. Keeping compute here leaves
// the main thread free for HTTP, metrics and KV transfers.

import { parentPort } from 'node:worker_threads';
import { kvBlockBytes, type KvPoolLayout } from '../kernels/types.ts';
import { loadModel } from '../model/index.ts';
import { createRunner } from './generate.ts';
import { SimulatedStepRunner } from './simulate.ts';
import { ComputeStepRunner, type StepRunner } from './step-runner.ts';
import type { WorkerReply, WorkerRequest } from './worker-protocol.ts';

let runner: StepRunner | undefined;

async function handle(msg: WorkerRequest): Promise<WorkerReply | undefined> {
  switch (msg.type) {
    case 'init': {
      const model = await loadModel(msg.model, { tokenizer: msg.tokenizer });
      const profile = msg.simulate;
      const modelLen = profile ? profile.maxModelLen : model.config.contextLength;
      const ctx = Math.min(modelLen, msg.maxModelLen ?? modelLen);
      const common = { name: model.name, tokenizer: model.tokenizer, chatTemplate: model.chatTemplate, fingerprint: model.fingerprint };
      if (profile) {
        // No arithmetic, so no KV memory: the block pool is pure accounting sized like the simulated
        // GPU's KV cache (--kv-cache-memory counts the simulated model's bytes per token).
        const tokenBytes = profile.kvBytesPerToken;
        const numBlocks =
          msg.numBlocks ??
          Math.max(1, Math.floor(msg.kvCacheMemoryBytes !== undefined ? msg.kvCacheMemoryBytes / (tokenBytes * msg.blockSize) : profile.kvCacheTokens / msg.blockSize));
        runner = new SimulatedStepRunner(profile, model.config.vocabSize);
        const memory = new WebAssembly.Memory({ initial: 1, maximum: 1, shared: true });
        const pool: KvPoolLayout = { ...poolShape(model.config, msg), base: 0, numBlocks };
        return { type: 'ready', ...common, config: { ...model.config, contextLength: ctx }, memory, pool };
      }
      const blockBytes = kvBlockBytes({ ...poolShape(model.config, msg) });
      const numBlocks = msg.numBlocks ?? Math.max(1, Math.floor((msg.kvCacheMemoryBytes ?? 256 * 1024 * 1024) / blockBytes));
      const compute = await createRunner(model, { kernels: msg.kernels, kvDtype: msg.kvDtype, blockSize: msg.blockSize, numBlocks });
      runner = new ComputeStepRunner(compute);
      return {
        type: 'ready',
        ...common,
        config: { ...model.config, contextLength: ctx },
        memory: compute.kernels.memory,
        pool: compute.pool,
      };
    }
    case 'step': {
      const { results, ms } = runner!.step(msg.chunks, msg.sentAt);
      return { type: 'result', seq: msg.seq, results, ms };
    }
    case 'free':
      runner?.free(msg.rids);
      return undefined;
  }
}

function poolShape(c: { nLayers: number; nKvHeads: number; headDim: number }, msg: { blockSize: number; kvDtype: 'f32' | 'f16' }) {
  return { blockSize: msg.blockSize, nLayers: c.nLayers, nKvHeads: c.nKvHeads, headDim: c.headDim, dtype: msg.kvDtype };
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
