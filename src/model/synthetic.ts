// Synthetic Llama models: seeded random weights and a generated SentencePiece-style vocabulary,
// bit-identical on every machine (integer PRNG, exact float arithmetic; no Math.random), for
// benchmarks and tests at realistic shapes without shipping large files.
import { buildWeights } from './layout.ts';
import type { LoadedParts } from './llama2c.ts';
import type { Matrix, ModelConfig, TokenizerSpec } from './types.ts';

export interface SyntheticPreset {
  dim: number;
  hiddenDim: number;
  nLayers: number;
  nHeads: number;
  nKvHeads: number;
  vocabSize: number;
  contextLength: number;
}

export const SYNTHETIC_PRESETS: Readonly<Record<string, Readonly<SyntheticPreset>>> = Object.freeze({
  /** for fast tests */
  tiny: { dim: 64, hiddenDim: 176, nLayers: 2, nHeads: 4, nKvHeads: 2, vocabSize: 512, contextLength: 512 },
  /** the shape of Karpathy's stories15M */
  '15m': { dim: 288, hiddenDim: 768, nLayers: 6, nHeads: 6, nKvHeads: 6, vocabSize: 32000, contextLength: 2048 },
  /** the shape of stories110M */
  '100m': { dim: 768, hiddenDim: 2048, nLayers: 12, nHeads: 12, nKvHeads: 12, vocabSize: 32000, contextLength: 8192 },
});

/** Part of every seed: changing the generator must change it, so pinned checksums catch it. */
export const SYNTHETIC_GENERATOR = 'tandem-synthetic-v1';

/** Uniform on [-a, a] has std a/√3; matrices get std 0.02 like common Llama initialisations. */
const UNIFORM_HALF_WIDTH = 0.02 * Math.sqrt(3);

/** 32-bit FNV-1a of a string (seed derivation only). */
function fnv1a(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

/** Fill `out` with uniform values on [-a, a) from a splitmix32 stream. Each value uses the top 24
 * bits of one output, so (u·2⁻²⁴·2 − 1)·a is computed exactly in doubles before rounding to f32. */
export function fillUniform(out: Float32Array, seed: number, a: number): void {
  let state = seed | 0;
  for (let i = 0; i < out.length; i++) {
    state = (state + 0x9e3779b9) | 0;
    let z = state;
    z = Math.imul(z ^ (z >>> 16), 0x21f0aaad);
    z = Math.imul(z ^ (z >>> 15), 0x735a2d97);
    z ^= z >>> 15;
    out[i] = ((z >>> 8) * 2 ** -23 - 1) * a;
  }
}

const SPACE = '\u2581';
const LETTERS_BY_FREQUENCY = 'etaoinshrdlcumwfgypbvkjxqz';
const BASE_CHARS = [
  SPACE,
  ...LETTERS_BY_FREQUENCY,
  ...LETTERS_BY_FREQUENCY.toUpperCase(),
  ...'0123456789',
  ...'.,!?\'"-:;()',
];
const COMMON_FRAGMENTS = (
  'th he in er an re on at en nd ti es or te of ed is it al ar st to nt ng se ha as ou io le ve co me de hi ri ro ' +
  'ic ne ea ra ce li ch ll be ma si om ur ing ion ent ly tion ness est ful'
).split(' ');
const COMMON_WORDS = (
  'the and a to was he she it of in they her his said with you for on had that is day play big little time once upon ' +
  'there girl boy named lily tim ben mom dad happy sad friend friends saw went wanted very one so not but we all at be ' +
  'can see what were have do like loved look go up out toy ball park dog cat bird tree sun fun help them then new run ' +
  'ran how from make made good would could too home house box red blue car find found into are my me him i this let ' +
  'came come back away down played asked smiled felt thought way'
).split(' ');
const CAPITALIZED = 'Once The She He They One Lily Tim Ben Sue Max It But'.split(' ');

/** A deterministic SentencePiece-style vocabulary of exactly `size` pieces: <unk>, <s>, </s>, the 256
 * byte-fallback pieces, single characters, then merges. Every merged piece is the concatenation of
 * an earlier piece and a single character, so a score-merge encoder can actually produce it; scores
 * decrease with the index, so earlier (more common) merges win. */
export function syntheticVocab(size: number): { pieces: string[]; scores: Float32Array; tokenTypes: Int32Array } {
  if (size < 259 + BASE_CHARS.length) throw new RangeError(`synthetic vocab needs at least ${259 + BASE_CHARS.length} pieces`);
  const pieces = ['<unk>', '<s>', '</s>'];
  for (let b = 0; b < 256; b++) pieces.push(`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`);
  const seen = new Set(pieces);
  const add = (p: string) => {
    if (pieces.length < size && !seen.has(p)) {
      seen.add(p);
      pieces.push(p);
    }
  };
  for (const c of BASE_CHARS) add(c);
  // prefix chains keep every piece reachable: 'tion' ← 'tio' + 'n' ← 'ti' + 'o' ← 't' + 'i'
  const chain = (text: string) => {
    for (let n = 2; n <= [...text].length; n++) add([...text].slice(0, n).join(''));
  };
  for (const f of COMMON_FRAGMENTS) chain(f);
  for (const w of COMMON_WORDS) chain(SPACE + w);
  for (const w of CAPITALIZED) chain(SPACE + w);
  // then breadth-first extension by one letter, most frequent letters first, up to 10 characters
  for (let i = 259; pieces.length < size && i < pieces.length; i++) {
    const p = pieces[i]!;
    if (p.length >= 10 || !/^\u2581?[a-zA-Z]*$/.test(p)) continue;
    for (const c of LETTERS_BY_FREQUENCY) add(p + c);
  }
  if (pieces.length !== size) throw new RangeError(`synthetic vocab ran out of pieces at ${pieces.length}`);
  const scores = new Float32Array(size);
  const tokenTypes = new Int32Array(size).fill(1);
  tokenTypes[0] = 2;
  tokenTypes[1] = tokenTypes[2] = 3;
  for (let i = 3; i < 259; i++) tokenTypes[i] = 6;
  for (let i = 259; i < size; i++) scores[i] = -(i - 259);
  return { pieces, scores, tokenTypes };
}

export function isSyntheticRef(ref: string): boolean {
  return ref.startsWith('synthetic:');
}

export function syntheticConfig(preset: string): ModelConfig | undefined {
  const p = Object.hasOwn(SYNTHETIC_PRESETS, preset) ? SYNTHETIC_PRESETS[preset] : undefined;
  if (!p) return undefined;
  return {
    architecture: 'llama',
    dim: p.dim,
    hiddenDim: p.hiddenDim,
    nLayers: p.nLayers,
    nHeads: p.nHeads,
    nKvHeads: p.nKvHeads,
    headDim: p.dim / p.nHeads,
    vocabSize: p.vocabSize,
    contextLength: p.contextLength,
    ropeTheta: 10000,
    rmsEps: 1e-5,
    ropeStyle: 'interleaved',
    tiedEmbeddings: true,
  };
}

/** Build a preset's model. Each tensor has its own stream, seeded from (generator, preset, tensor name). */
export function generateSynthetic(preset: string): LoadedParts {
  const config = syntheticConfig(preset);
  if (!config) throw new RangeError(`unknown synthetic preset ${preset}`);
  const weights = buildWeights(config, (slot) => {
    if (slot.kind === 'vector') return new Float32Array(slot.shape[0]).fill(1);
    const [rows, cols] = slot.shape as [number, number];
    const data = new Float32Array(rows * cols);
    fillUniform(data, fnv1a(`${SYNTHETIC_GENERATOR}/${preset}/${slot.name}`), UNIFORM_HALF_WIDTH);
    const m: Matrix = { type: 'f32', rows, cols, data };
    return m;
  });
  const vocab = syntheticVocab(config.vocabSize);
  const tokenizer: TokenizerSpec = {
    kind: 'spm',
    ...vocab,
    bos: 1,
    eos: 2,
    unk: 0,
    addBos: true,
    spaceChar: SPACE,
    addDummyPrefix: true,
  };
  return { format: 'synthetic', config, weights, tokenizer };
}
