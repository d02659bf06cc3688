// Shared by the tokenizer tests: model files, tokenizer.json variants and a seeded random text source.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { TokenizerSpec } from '../../src/tokenizer/index.ts';
import { readGgufMetadata } from './gguf-vocab.ts';

export const root = fileURLToPath(new URL('../../', import.meta.url));
export const TOK512 = root + 'models/stories260K/tok512.bin';
export const GGUF260K = root + 'models/stories260K-gguf/stories260K.gguf';
export const GGUF656K = root + 'models/tinystories-656k/TinyStories-656K-Q8_0.gguf';
const DIR656K = root + 'models/tinystories-656k/';

type Json = any; // eslint-disable-line @typescript-eslint/no-explicit-any

export function tokenizerJson656k(): Json {
  return JSON.parse(readFileSync(DIR656K + 'tokenizer.json', 'utf8'));
}
export function tokenizerConfig656k(): Json {
  return JSON.parse(readFileSync(DIR656K + 'tokenizer_config.json', 'utf8'));
}

function addByteTokens(j: Json): void {
  for (let b = 0; b < 256; b++) j.model.vocab[`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`] = 2048 + b;
}

/** The shipped tokenizer.json and edits of it that exercise other parts of the format. The golden ids in
 * fixtures/hf-golden.json were produced from exactly these by the Hugging Face `tokenizers` library. */
export const variants: Record<string, (j: Json) => void> = {
  // as shipped: no byte pieces, so characters outside the vocabulary become <unk>
  orig: () => {},
  // the same with <0x00>..<0xFF> appended, so byte fallback applies (as in Llama/Mistral vocabularies)
  bytes: (j) => addByteTokens(j),
  // Mistral-style: no normalizer, a Metaspace pre-tokenizer (prepend "first") and Metaspace decoder
  metaspace: (j) => {
    addByteTokens(j);
    j.normalizer = null;
    j.pre_tokenizer = { type: 'Metaspace', replacement: '▁', prepend_scheme: 'first', split: false };
    j.decoder = {
      type: 'Sequence',
      decoders: [{ type: 'ByteFallback' }, { type: 'Metaspace', replacement: '▁', prepend_scheme: 'first', split: false }],
    };
  },
  // Metaspace that splits words at U+2581 and always prepends it
  'metaspace-split': (j) => {
    j.normalizer = null;
    j.pre_tokenizer = { type: 'Metaspace', replacement: '▁', prepend_scheme: 'always', split: true };
  },
};

export function hfSpec(variant = 'orig'): TokenizerSpec {
  const j = tokenizerJson656k();
  variants[variant]!(j);
  return { kind: 'hf', tokenizerJson: j, tokenizerConfig: tokenizerConfig656k() };
}

/** The stories260K vocabulary as llama.cpp sees it in the GGUF: same pieces as tok512.bin, spaces as U+2581. */
export function ggufSpmSpec(path: string): TokenizerSpec {
  const m = readGgufMetadata(path);
  const num = (k: string): number => Number(m.get(k));
  return {
    kind: 'spm',
    pieces: m.get('tokenizer.ggml.tokens') as string[],
    scores: Float32Array.from(m.get('tokenizer.ggml.scores') as number[]),
    tokenTypes: Int32Array.from(m.get('tokenizer.ggml.token_type') as number[]),
    bos: num('tokenizer.ggml.bos_token_id'),
    eos: num('tokenizer.ggml.eos_token_id'),
    unk: num('tokenizer.ggml.unknown_token_id'),
    addBos: true,
    spaceChar: '\u2581',
    addDummyPrefix: true,
  };
}

/** Deterministic PRNG (mulberry32) so a failing property case can be replayed. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Random text from pieces chosen to hit merges, spaces, newlines, multi-byte characters and emoji. */
export function randomText(next: () => number, alphabet: readonly string[], maxLen: number): string {
  let s = '';
  const n = Math.floor(next() * (maxLen + 1));
  for (let k = 0; k < n; k++) s += alphabet[Math.floor(next() * alphabet.length)]!;
  return s;
}

export const ASCII_ALPHABET = [
  ...'abcdefghijklmnopqrstuvwxyz', ...'ABCDEFGHIJ', ' ', ' ', ' ', '\n', '.', ',', '!', '"', "'", '?',
  'Once upon a time', ' there was a ', 'little girl named ', 'the', ' and ', '|', '<', '>',
];
export const UNICODE_ALPHABET = [...ASCII_ALPHABET, 'é', 'ü', '中', '文', '€', '😀', '👍🏽', '\t', '\u0301', '\u2581', '\uFEFF'];
