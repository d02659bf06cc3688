// Tokenizer files that live outside the model file: llama2.c's tokenizer.bin and Hugging Face's
// tokenizer.json (+ tokenizer_config.json). They are parsed into a TokenizerSpec; encoding is the
// tokenizer component's job.
import { basename, dirname, join } from 'node:path';
import { isObject, kindOf, readBytes, readJson } from './files.ts';
import { parseLlama2cTokenizer } from '../tokenizer/llama2c.ts';
import type { TokenizerSpec } from './types.ts';
import { ModelLoadError } from './types.ts';

export type SpmSpec = Extract<TokenizerSpec, { kind: 'spm' }>;
export type HfSpec = Extract<TokenizerSpec, { kind: 'hf' }>;

const BYTE_PIECE = /^<0x[0-9A-Fa-f]{2}>$/;

/** GGUF token types for a vocabulary that does not record them: unknown 2, control 3, byte 6, else normal 1. */
export function deriveTokenTypes(pieces: readonly string[], ids: { bos: number; eos: number; unk: number }): Int32Array {
  const types = new Int32Array(pieces.length).fill(1);
  pieces.forEach((p, i) => {
    if (BYTE_PIECE.test(p)) types[i] = 6;
  });
  if (ids.unk >= 0 && ids.unk < pieces.length) types[ids.unk] = 2;
  for (const id of [ids.bos, ids.eos]) if (id >= 0 && id < pieces.length) types[id] = 3;
  return types;
}

/** llama2.c tokenizer.bin (parsed by the tokenizer component), which must hold exactly `vocabSize` tokens
 * since the file does not store the vocabulary size. */
export async function readLlama2cTokenizer(path: string, vocabSize: number): Promise<SpmSpec> {
  const spec = parseLlama2cTokenizer(await readBytes(path), path, vocabSize) as SpmSpec;
  return { ...spec, tokenTypes: deriveTokenTypes(spec.pieces, spec) };
}

function chatTemplateOf(config: unknown): string | undefined {
  if (!isObject(config)) return undefined;
  const t = config.chat_template;
  if (typeof t === 'string') return t;
  // newer tokenizer_config.json files hold a list of named templates
  if (Array.isArray(t)) {
    const named = t.filter(isObject) as { name?: unknown; template?: unknown }[];
    const pick = named.find((x) => x.name === 'default') ?? named[0];
    if (pick && typeof pick.template === 'string') return pick.template;
  }
  return undefined;
}

/** A Hugging Face tokenizer.json with its tokenizer_config.json (same folder) when present. */
export async function readHfTokenizer(
  path: string,
  vocabSize: number,
  overrides: { bos?: number; eos?: number } = {},
): Promise<{ spec: HfSpec; chatTemplate?: string }> {
  const json = await readJson(path, 'tokenizer file');
  if (!isObject(json) || !isObject(json.model))
    throw new ModelLoadError(path, 'bad tokenizer file: no "model" object (not a Hugging Face tokenizer.json?)');
  const vocab = json.model.vocab;
  if (!isObject(vocab) && !Array.isArray(vocab)) throw new ModelLoadError(path, 'bad tokenizer file: "model.vocab" is missing');
  if (isObject(vocab)) {
    for (const [piece, id] of Object.entries(vocab)) {
      if (!Number.isInteger(id) || (id as number) < 0 || (id as number) >= vocabSize)
        throw new ModelLoadError(path, `bad tokenizer file: token ${JSON.stringify(piece)} has id ${id}, outside the model's vocab of ${vocabSize}`);
    }
  }
  const configPath = join(dirname(path), 'tokenizer_config.json');
  const tokenizerConfig = (await kindOf(configPath)) === 'file' ? await readJson(configPath, 'tokenizer_config.json') : undefined;
  const spec: HfSpec = { kind: 'hf', tokenizerJson: json };
  if (tokenizerConfig !== undefined) spec.tokenizerConfig = tokenizerConfig;
  if (overrides.bos !== undefined) spec.bos = overrides.bos;
  if (overrides.eos !== undefined) spec.eos = overrides.eos;
  const chatTemplate = chatTemplateOf(tokenizerConfig);
  return chatTemplate === undefined ? { spec } : { spec, chatTemplate };
}

/** An explicit --tokenizer: *.json is a Hugging Face tokenizer, anything else a llama2.c tokenizer.bin. */
export async function readTokenizerOverride(
  path: string,
  vocabSize: number,
  overrides: { bos?: number; eos?: number } = {},
): Promise<{ spec: TokenizerSpec; chatTemplate?: string }> {
  const kind = await kindOf(path);
  if (kind === undefined) throw new ModelLoadError(path, 'no such tokenizer file');
  if (kind === 'dir') {
    const json = join(path, 'tokenizer.json');
    if ((await kindOf(json)) === 'file') return readHfTokenizer(json, vocabSize, overrides);
    throw new ModelLoadError(path, 'is a directory without tokenizer.json');
  }
  if (basename(path).toLowerCase().endsWith('.json')) return readHfTokenizer(path, vocabSize, overrides);
  return { spec: await readLlama2cTokenizer(path, vocabSize) };
}
