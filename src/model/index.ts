// Model loading: llama2.c checkpoints, GGUF, Hugging Face folders and synthetic presets, all into
// the LoadedModel contract of types.ts; plus a GGUF writer for export.
export * from './types.ts';
export { loadModel, type LoadOptions } from './load.ts';
export { resolveBuiltin, builtinNames, DEFAULT_MODEL, type BuiltinModel } from './registry.ts';
export { SYNTHETIC_PRESETS, type SyntheticPreset } from './synthetic.ts';
export { writeGguf, encodeGguf, type WriteGgufOptions } from './gguf-writer.ts';
export { dequantizeQ8_0, f16ToF32 } from './numeric.ts';
