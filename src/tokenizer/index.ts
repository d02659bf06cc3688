// Tokenizers for the model families tandem serves: SentencePiece-BPE with merge scores (llama2.c
// tokenizer.bin, GGUF "llama" vocabularies) and Hugging Face tokenizer.json BPE exports.

import type { TokenizerSpec } from '../model/types.ts';
import { createHfTokenizer } from './hf.ts';
import { createSpmTokenizer } from './spm.ts';
import type { Tokenizer } from './types.ts';

export type { StreamDecoder, Tokenizer } from './types.ts';
export type { TokenizerSpec } from '../model/types.ts';
export { readLlama2cTokenizer } from './llama2c.ts';

/** Build a tokenizer; an unusable spec throws ModelLoadError naming the problem. */
export function createTokenizer(spec: TokenizerSpec): Tokenizer {
  switch (spec.kind) {
    case 'spm':
      return createSpmTokenizer(spec);
    case 'hf':
      return createHfTokenizer(spec);
    default:
      throw new TypeError(`unknown tokenizer kind ${JSON.stringify((spec as { kind?: unknown }).kind)}`);
  }
}
