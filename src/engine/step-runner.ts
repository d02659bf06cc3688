// What the model worker runs a step with. The scheduler's StepPlan (as WireChunks) goes in; one
// sampled token per sampling row comes out, with the step's duration. Two implementations: the
// real forward pass + sampler (ComputeStepRunner) and the GPU timing model (SimulatedStepRunner in
// simulate.ts) — everything else in the engine is the same code for both.
import type { SamplingParams, TokenLogprob } from './api.ts';
import type { ModelRunner } from './model-runner.ts';
import { SamplerState, sample } from './sampler.ts';
import type { WireChunk } from './worker-protocol.ts';

export interface StepResult {
  rid: string;
  id: number;
  logprob?: TokenLogprob;
}

export interface StepRunner {
  /** Run one step (sent by the scheduler at absolute time `sentAt`); `ms` is its duration on the hardware it models. */
  step(chunks: readonly WireChunk[], sentAt?: number): { results: StepResult[]; ms: number };
  /** Forget per-request state (samplers) of finished requests. */
  free(rids: readonly string[]): void;
}

/** The real thing: the forward pass over all rows, then each sampling row's sampler. */
export class ComputeStepRunner implements StepRunner {
  private readonly samplers = new Map<string, SamplerState>();

  constructor(private readonly runner: ModelRunner) {}

  step(chunks: readonly WireChunk[]): { results: StepResult[]; ms: number } {
    const t0 = performance.now();
    const logits = this.runner.forward(chunks);
    const vocab = this.runner.config.vocabSize;
    const results: StepResult[] = [];
    let row = 0;
    for (const ch of chunks) {
      if (!ch.wantLogits) continue;
      const s = ch.sample!;
      let st = this.samplers.get(ch.rid);
      if (!st) {
        st = new SamplerState(s.params as SamplingParams, s.promptIds ?? [], s.seed);
        this.samplers.set(ch.rid, st);
      }
      const res = sample(logits, row * vocab, vocab, st, { banned: s.banned, logprobs: s.logprobs });
      st.accept(res.id);
      results.push({ rid: ch.rid, id: res.id, logprob: res.logprob });
      row++;
    }
    return { results, ms: performance.now() - t0 };
  }

  free(rids: readonly string[]): void {
    for (const rid of rids) this.samplers.delete(rid);
  }
}
