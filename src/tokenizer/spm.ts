// SentencePiece-BPE with merge scores, as llama2.c's encode() and llama.cpp's SPM tokenizer do it:
// split the text into characters (byte fallback for unknown ones), then keep merging the adjacent
// pair whose concatenation is the highest-scoring piece. llama2.c files spell spaces ' ';
// GGUF/SentencePiece vocabularies spell them U+2581.

import { ModelLoadError, type TokenizerSpec } from '../model/types.ts';
import {
  byteOfPiece,
  checkId,
  createStreamDecoder,
  decodeIds,
  utf8Bytes,
  type DecodeTable,
} from './detokenize.ts';
import { LiteralMatcher, type LiteralToken } from './literals.ts';
import { applyMerges, PairTable } from './merge.ts';
import type { Tokenizer } from './types.ts';

type SpmSpec = Extract<TokenizerSpec, { kind: 'spm' }>;

// GGUF tokenizer.ggml.token_type values
const TYPE_UNKNOWN = 2;
const TYPE_CONTROL = 3;
const TYPE_USER_DEFINED = 4;
const TYPE_UNUSED = 5;
const TYPE_BYTE = 6;

const SPEC = 'tokenizer (spm)';

function validate(spec: SpmSpec): void {
  const n = Array.isArray(spec.pieces) ? spec.pieces.length : -1;
  if (n <= 0) throw new ModelLoadError(SPEC, 'the vocabulary is empty');
  if (!(spec.scores instanceof Float32Array) || spec.scores.length !== n) {
    throw new ModelLoadError(SPEC, `expected ${n} scores, got ${spec.scores?.length ?? 'none'}`);
  }
  if (spec.tokenTypes !== undefined && spec.tokenTypes.length !== n) {
    throw new ModelLoadError(SPEC, `expected ${n} token types, got ${spec.tokenTypes.length}`);
  }
  for (const [name, id] of [['bos', spec.bos], ['eos', spec.eos], ['unk', spec.unk]] as const) {
    if (!Number.isInteger(id) || id < 0 || id >= n) {
      throw new ModelLoadError(SPEC, `${name} id ${String(id)} is outside the vocabulary of ${n}`);
    }
  }
  if (typeof spec.spaceChar !== 'string' || [...spec.spaceChar].length !== 1) {
    throw new ModelLoadError(SPEC, `spaceChar must be one character, got ${JSON.stringify(spec.spaceChar)}`);
  }
  for (let i = 0; i < n; i++) {
    if (typeof spec.pieces[i] !== 'string') throw new ModelLoadError(SPEC, `piece ${i} is not a string`);
    if (Number.isNaN(spec.scores[i]!)) throw new ModelLoadError(SPEC, `piece ${i} has a NaN score`);
  }
}

export function createSpmTokenizer(spec: SpmSpec): Tokenizer {
  validate(spec);
  const { pieces, scores, tokenTypes, bos, eos, unk, spaceChar, addDummyPrefix } = spec;
  const n = pieces.length;

  const special = new Uint8Array(n);
  const isByte = new Uint8Array(n);
  const byteId = new Int32Array(256).fill(-1);
  const pieceToId = new Map<string, number>();
  const controls: LiteralToken[] = [];
  const userDefined: LiteralToken[] = [];
  for (let id = 0; id < n; id++) {
    const piece = pieces[id]!;
    const type = tokenTypes?.[id];
    // Without token types (llama2.c files), the control tokens are exactly BOS, EOS and UNK.
    const isSpecial = type !== undefined ? type === TYPE_CONTROL || type === TYPE_UNKNOWN : false;
    const byte = type === undefined || type === TYPE_BYTE ? byteOfPiece(piece) : -1;
    if (isSpecial || id === bos || id === eos || id === unk) {
      special[id] = 1;
      controls.push({ content: piece, id });
    } else if (byte >= 0) {
      isByte[id] = 1;
      if (byteId[byte] === -1) byteId[byte] = id;
    } else if (type === TYPE_USER_DEFINED) {
      userDefined.push({ content: piece, id });
    } else if (type !== TYPE_UNUSED && !pieceToId.has(piece)) {
      pieceToId.set(piece, id);
    }
  }

  // Every way to split each piece into two pieces is a merge rule. This is exactly llama2.c's
  // "is the concatenation a piece?" test, precomputed so the merge loop does integer lookups.
  // Converters that only had a BPE merge list (convert_hf_to_gguf on a tokenizer.json like
  // TinyStories-656K's) write the same placeholder score for every piece, which would make every merge
  // a tie. Such vocabularies list merged pieces in merge order, so the id is the better priority.
  const placeholderScores = scores.every((s) => s === scores[0]);
  const merges = new PairTable();
  for (const [piece, id] of pieceToId) {
    for (let k = 1; k < piece.length; k++) {
      const left = pieceToId.get(piece.slice(0, k));
      if (left === undefined) continue;
      const right = pieceToId.get(piece.slice(k));
      if (right !== undefined) merges.set(left, right, id, placeholderScores ? id : -scores[id]!);
    }
  }

  // User-defined pieces are always matched whole (llama.cpp and SentencePiece agree); control pieces only on request.
  const userMatcher = new LiteralMatcher(userDefined);
  const specialMatcher = new LiteralMatcher([...controls, ...userDefined]);

  const symbolsOf = (text: string, out: number[]): void => {
    for (const ch of text) {
      const id = pieceToId.get(ch);
      if (id !== undefined) {
        out.push(id);
        continue;
      }
      for (const b of utf8Bytes(ch)) {
        const bid = byteId[b]!;
        out.push(bid >= 0 ? bid : unk);
      }
    }
  };

  const encode: Tokenizer['encode'] = (text, opts) => {
    if (typeof text !== 'string') throw new TypeError('text to encode must be a string');
    const out: number[] = [];
    if (opts?.addBos ?? spec.addBos) out.push(bos);
    const fragments = (opts?.parseSpecial ? specialMatcher : userMatcher).split(text);
    // As llama.cpp: every text fragment that follows a special token (or starts the text) gets the dummy prefix.
    let afterSpecial = true;
    for (const f of fragments) {
      if (f.kind === 'token') {
        out.push(f.id);
        afterSpecial = true;
        continue;
      }
      let s = addDummyPrefix && afterSpecial ? ' ' + f.text : f.text;
      if (spaceChar !== ' ') s = s.replaceAll(' ', spaceChar);
      const symbols: number[] = [];
      symbolsOf(s, symbols);
      for (const id of applyMerges(symbols, merges)) out.push(id);
      afterSpecial = false;
    }
    return out;
  };

  const bytes: Uint8Array[] = new Array(n);
  for (let id = 0; id < n; id++) {
    const piece = pieces[id]!;
    if (isByte[id]) bytes[id] = Uint8Array.of(byteOfPiece(piece));
    else if (special[id]) bytes[id] = utf8Bytes(piece);
    else bytes[id] = utf8Bytes(spaceChar === ' ' ? piece : piece.replaceAll(spaceChar, ' '));
  }
  const table: DecodeTable = {
    bytes,
    special,
    isByte,
    leading:
      spaceChar === ' '
        ? { kind: 'after-bos', bos }
        : addDummyPrefix
          ? { kind: 'text-start', count: 1 }
          : { kind: 'none' },
  };

  return {
    vocabSize: n,
    bos,
    eos,
    stopIds: [eos],
    encode,
    decode: (ids, opts) => decodeIds(table, ids, opts?.keepSpecial ?? false),
    streamDecoder: (opts) => createStreamDecoder(table, opts?.keepSpecial ?? false, opts?.prefix ?? []),
    piece: (id) => {
      checkId(id, n);
      return pieces[id]!;
    },
  };
}
