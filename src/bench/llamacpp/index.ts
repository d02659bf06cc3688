// llama.cpp baseline for tandem's benchmarks: node-llama-cpp 3.21.1 (CPU prebuilt, installed on first use into
// .bench-cache/), measured in a child process on the same GGUF files tandem runs. See docs/llamacpp-baseline.md.
export {
  measureLlamaCppEngine,
  measureLlamaCppServe,
  type FlashAttentionChoice,
  type LlamaCppEngineOptions,
  type LlamaCppEngineResult,
  type LlamaCppServeOptions,
  type LlamaCppServeResult,
} from './measure.ts';
export { ensureNodeLlamaCpp, defaultPackageDir, NODE_LLAMA_CPP_VERSION, LlamaCppInstallError } from './install.ts';
export { LlamaCppWorkerError } from './worker-process.ts';
