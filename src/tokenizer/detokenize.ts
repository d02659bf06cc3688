// Decoding works on bytes, not strings: a byte-fallback token (<0xE2>) carries a fraction of a
// character, so the text only exists once the bytes of consecutive tokens are joined. Batch and
// streaming decode share one per-token byte emitter (which also applies the model's leading-space
// rule), and both turn bytes into text with the WHATWG UTF-8 decoder, whose output does not depend on
// how the bytes are chunked. That is what makes decode(ids) equal the concatenation of push()es.

import { TextDecoder, TextEncoder } from 'node:util';
import type { StreamDecoder } from './types.ts';

/** How a model's decoder removes the space that encoding prepended (SentencePiece's dummy prefix). */
export type LeadingSpaceRule =
  /** llama2.c: a piece that directly follows BOS loses its leading ' ' (byte pieces excepted) */
  | { kind: 'after-bos'; bos: number }
  /** tokenizers' Strip decoder after Fuse, and SentencePiece: drop up to `count` leading spaces of the text */
  | { kind: 'text-start'; count: number }
  | { kind: 'none' };

export interface DecodeTable {
  /** bytes each id decodes to; for skippable ids, what `keepSpecial` shows */
  readonly bytes: readonly Uint8Array[];
  /** 1 for control/special ids that decode to nothing unless `keepSpecial` */
  readonly special: Uint8Array;
  /** 1 for byte-fallback pieces (<0xNN>) */
  readonly isByte: Uint8Array;
  readonly leading: LeadingSpaceRule;
  /** bytes of the first emitted token when it differs from `bytes` (tokenizers' Metaspace decoder) */
  readonly firstTokenBytes?: (id: number) => Uint8Array;
}

const EMPTY = new Uint8Array(0);

export function checkId(id: number, vocabSize: number): void {
  if (!Number.isInteger(id) || id < 0 || id >= vocabSize) {
    throw new RangeError(`token id ${String(id)} is outside the vocabulary [0, ${vocabSize})`);
  }
}

/** Per-token state of a decode: what came before decides the leading-space handling. */
class ByteEmitter {
  private prev = -1;
  private emittedTokens = 0;
  private stripLeft: number;

  constructor(
    private readonly table: DecodeTable,
    private readonly keepSpecial: boolean,
  ) {
    this.stripLeft = table.leading.kind === 'text-start' ? table.leading.count : 0;
  }

  next(id: number): Uint8Array {
    const t = this.table;
    checkId(id, t.bytes.length);
    const prev = this.prev;
    this.prev = id;
    if (t.special[id] === 1 && !this.keepSpecial) return EMPTY;
    let b = this.emittedTokens === 0 && t.firstTokenBytes ? t.firstTokenBytes(id) : t.bytes[id]!;
    this.emittedTokens++;
    if (t.leading.kind === 'after-bos' && prev === t.leading.bos && t.isByte[id] === 0 && b[0] === 0x20) {
      b = b.subarray(1);
    }
    if (this.stripLeft > 0) {
      let cut = 0;
      while (this.stripLeft > 0 && cut < b.length && b[cut] === 0x20) {
        cut++;
        this.stripLeft--;
      }
      // Strip only removes leading spaces: the first other byte ends it for good.
      if (cut < b.length) this.stripLeft = 0;
      b = b.subarray(cut);
    }
    return b;
  }
}

function newUtf8Decoder(): TextDecoder {
  // ignoreBOM: a U+FEFF the model generates is text, not a byte-order mark to swallow.
  return new TextDecoder('utf-8', { fatal: false, ignoreBOM: true });
}

export function decodeIds(table: DecodeTable, ids: readonly number[], keepSpecial: boolean): string {
  const emitter = new ByteEmitter(table, keepSpecial);
  const parts: Uint8Array[] = [];
  let total = 0;
  for (const id of ids) {
    const b = emitter.next(id);
    if (b.length > 0) {
      parts.push(b);
      total += b.length;
    }
  }
  const all = new Uint8Array(total);
  let at = 0;
  for (const p of parts) {
    all.set(p, at);
    at += p.length;
  }
  return newUtf8Decoder().decode(all);
}

export function createStreamDecoder(table: DecodeTable, keepSpecial: boolean, prefix: readonly number[]): StreamDecoder {
  const emitter = new ByteEmitter(table, keepSpecial);
  // The prompt was already shown: replay it only for its effect on the leading-space state.
  for (const id of prefix) emitter.next(id);
  let utf8 = newUtf8Decoder();
  return {
    push(id: number): string {
      const b = emitter.next(id);
      return b.length > 0 ? utf8.decode(b, { stream: true }) : '';
    },
    flush(): string {
      const rest = utf8.decode();
      utf8 = newUtf8Decoder();
      return rest;
    },
  };
}

const encoder = new TextEncoder();

export function utf8Bytes(s: string): Uint8Array {
  return encoder.encode(s);
}

/** The byte value of a `<0xNN>` byte-fallback piece, or -1. */
export function byteOfPiece(piece: string): number {
  const m = /^<0x([0-9A-Fa-f]{2})>$/.exec(piece);
  return m ? parseInt(m[1]!, 16) : -1;
}
