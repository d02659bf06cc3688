// Chunk keys: a prefix-chained hash, as LMCache's ChunkedTokenDatabase does. A chunk's key commits to
// every token before it, so equal keys mean equal prefixes, and a lookup can stop at the first miss.
//
//   h_-1 = sha256("tandem-kv-v1" 0 modelFingerprint 0 kvDtype 0 cacheSalt 0 chunkTokens)
//   h_i  = sha256(h_{i-1} ‖ tokens of chunk i as u32 little-endian)
//
// The root binds the key to the weights, the payload dtype, the tenant salt and the chunk size, so KV
// is never shared across any of those. Only full chunks get keys (LMCache's save_unfull_chunk=false):
// a partial tail would be superseded by the full chunk as soon as the prompt grows, and storing it
// would cost a write for KV that is cheap to recompute.
import { createHash } from 'node:crypto';
import type { KvDtype } from '../kernels/types.ts';

export interface KeySpace {
  modelFingerprint: string;
  kvDtype: KvDtype;
  chunkTokens: number;
}

export function rootHash(space: KeySpace, cacheSalt = ''): Buffer {
  return createHash('sha256')
    .update(`tandem-kv-v1\0${space.modelFingerprint}\0${space.kvDtype}\0${cacheSalt}\0${space.chunkTokens}`)
    .digest();
}

/** Raw 32-byte hashes of the full chunks of `tokenIds` (at most `maxChunks`). */
export function chunkHashes(space: KeySpace, tokenIds: ArrayLike<number>, cacheSalt = '', maxChunks = Infinity): Buffer[] {
  const n = Math.min(Math.floor(tokenIds.length / space.chunkTokens), maxChunks);
  const out: Buffer[] = [];
  const tokens = Buffer.allocUnsafe(space.chunkTokens * 4);
  let prev = rootHash(space, cacheSalt);
  for (let c = 0; c < n; c++) {
    const base = c * space.chunkTokens;
    for (let t = 0; t < space.chunkTokens; t++) {
      const id = tokenIds[base + t]!;
      if (!Number.isInteger(id) || id < 0 || id > 0xffffffff) throw new RangeError(`token id at ${base + t} is not a u32: ${id}`);
      tokens.writeUInt32LE(id, t * 4);
    }
    prev = createHash('sha256').update(prev).update(tokens).digest();
    out.push(prev);
  }
  return out;
}

/** Hex keys of the full chunks of `tokenIds`. */
export function chunkKeys(space: KeySpace, tokenIds: ArrayLike<number>, cacheSalt = '', maxChunks = Infinity): string[] {
  return chunkHashes(space, tokenIds, cacheSalt, maxChunks).map((h) => h.toString('hex'));
}

export function isChunkKey(s: string): boolean {
  return /^[0-9a-f]{64}$/.test(s);
}
