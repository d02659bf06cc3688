// Built-in model names for the models shipped under models/ at the repo root.
import { fileURLToPath } from 'node:url';

const MODELS_DIR = fileURLToPath(new URL('../../models/', import.meta.url));

export interface BuiltinModel {
  name: string;
  /** absolute path of the model file or folder */
  model: string;
  /** absolute path of the tokenizer file to use instead of the model's own, when needed */
  tokenizer?: string;
  description: string;
}

const BUILTINS: readonly BuiltinModel[] = [
  {
    name: 'stories260K',
    model: `${MODELS_DIR}stories260K/stories260K.bin`,
    tokenizer: `${MODELS_DIR}stories260K/tok512.bin`,
    description: "Karpathy's stories260K, llama2.c checkpoint (the default model)",
  },
  {
    name: 'stories260K-gguf',
    model: `${MODELS_DIR}stories260K-gguf/stories260K.gguf`,
    description: 'the same stories260K as an F32 GGUF',
  },
  {
    name: 'tinystories-656k',
    model: `${MODELS_DIR}tinystories-656k/TinyStories-656K-Q8_0.gguf`,
    // the GGUF's SentencePiece scores are converter placeholders (-1000): encode with the BPE merges
    tokenizer: `${MODELS_DIR}tinystories-656k/tokenizer.json`,
    description: 'TinyStories-656K, Q8_0 GGUF with its Hugging Face tokenizer',
  },
  {
    name: 'tinystories-656k-f32',
    model: `${MODELS_DIR}tinystories-656k`,
    description: 'TinyStories-656K, float32 Hugging Face folder (safetensors)',
  },
];

export const DEFAULT_MODEL = 'stories260K';

export function builtinNames(): string[] {
  return BUILTINS.map((b) => b.name);
}

/** The built-in model called `name`, or undefined. */
export function resolveBuiltin(name: string): BuiltinModel | undefined {
  const b = BUILTINS.find((x) => x.name === name);
  return b && { ...b };
}
