// llama2.c tokenizer.bin: int32 max_token_length, then for every token a float32 merge score,
// an int32 byte length and the piece's UTF-8 bytes, little-endian, up to the end of the file.
// The file does not store the vocabulary size; it is however many records the file holds.

import { readFileSync } from 'node:fs';
import { ModelLoadError, type TokenizerSpec } from '../model/types.ts';

export function readLlama2cTokenizer(path: string, vocabSize?: number): TokenizerSpec {
  let buf: Buffer;
  try {
    buf = readFileSync(path);
  } catch (err) {
    throw new ModelLoadError(path, `cannot read the tokenizer: ${(err as Error).message}`);
  }
  return parseLlama2cTokenizer(buf, path, vocabSize);
}

/** Parse a tokenizer.bin. With `vocabSize` (the model's), the file must hold exactly that many tokens. */
export function parseLlama2cTokenizer(buf: Uint8Array, file: string, vocabSize?: number): TokenizerSpec {
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  if (buf.byteLength < 4) throw new ModelLoadError(file, `too short for a llama2.c tokenizer (${buf.byteLength} bytes)`);
  const maxTokenLength = view.getInt32(0, true);
  if (maxTokenLength <= 0) throw new ModelLoadError(file, `bad max_token_length ${maxTokenLength}`);
  const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
  const pieces: string[] = [];
  const scores: number[] = [];
  let at = 4;
  while (vocabSize === undefined ? at < buf.byteLength : pieces.length < vocabSize) {
    const id = pieces.length;
    if (at === buf.byteLength) throw new ModelLoadError(file, `has ${id} tokens but the model's vocab_size is ${vocabSize}`);
    if (at + 8 > buf.byteLength) throw new ModelLoadError(file, `truncated record for token ${id} at byte ${at}`);
    const score = view.getFloat32(at, true);
    const len = view.getInt32(at + 4, true);
    at += 8;
    if (Number.isNaN(score)) throw new ModelLoadError(file, `token ${id} has a NaN score`);
    if (len < 0 || len > maxTokenLength) {
      throw new ModelLoadError(file, `token ${id} has length ${len}, outside 0..max_token_length ${maxTokenLength}`);
    }
    if (at + len > buf.byteLength) throw new ModelLoadError(file, `token ${id} runs past the end of the file`);
    try {
      pieces.push(utf8.decode(buf.subarray(at, at + len)));
    } catch {
      throw new ModelLoadError(file, `token ${id} is not valid UTF-8`);
    }
    scores.push(score);
    at += len;
  }
  if (at < buf.byteLength) {
    throw new ModelLoadError(file, `${buf.byteLength - at} bytes left after ${vocabSize} tokens (tokenizer for a different vocab_size?)`);
  }
  if (pieces.length < 3) {
    throw new ModelLoadError(file, `only ${pieces.length} tokens; llama2.c needs at least <unk>, BOS and EOS`);
  }
  return {
    kind: 'spm',
    pieces,
    scores: Float32Array.from(scores),
    bos: 1,
    eos: 2,
    unk: 0,
    addBos: true,
    spaceChar: ' ',
    addDummyPrefix: true,
  };
}
