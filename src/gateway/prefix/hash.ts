// Chained block keys for prefix matching: key_i = H(key_{i-1}, block_i). Keys are 53-bit integers
// (cyrb53-style two-lane mixing) so they live in plain JS numbers and Maps without BigInt cost.
// These are the gateway's own "request keys" (llm-d §5.3): engine hashes are opaque and only mapped onto them.

function finish(h1: number, h2: number): number {
  h1 = Math.imul(h1 ^ (h1 >>> 16), 2246822507) ^ Math.imul(h2 ^ (h2 >>> 13), 3266489909);
  h2 = Math.imul(h2 ^ (h2 >>> 16), 2246822507) ^ Math.imul(h1 ^ (h1 >>> 13), 3266489909);
  return 4294967296 * (2097151 & h2) + (h1 >>> 0);
}

/** Key of the token block ids[start, end) chained onto `parent`. */
export function hashTokenBlock(parent: number, ids: ArrayLike<number>, start: number, end: number): number {
  let h1 = 0xdeadbeef ^ (parent >>> 0);
  let h2 = 0x41c6ce57 ^ Math.floor(parent / 4294967296);
  for (let i = start; i < end; i++) {
    const t = ids[i]! | 0;
    h1 = Math.imul(h1 ^ t, 2654435761);
    h2 = Math.imul(h2 ^ t, 1597334677);
  }
  return finish(h1, h2);
}

/**
 * Key of the text block text[start, end) (UTF-16 code units) chained onto `parent`. Two code units
 * are packed into one 32-bit word per step (injective, so nothing is lost): half the multiply chain
 * of a unit-at-a-time loop, which matters on 100 KB prompts hashed on every request.
 */
export function hashTextBlock(parent: number, text: string, start: number, end: number): number {
  let h1 = 0xdeadbeef ^ (parent >>> 0);
  let h2 = 0x41c6ce57 ^ Math.floor(parent / 4294967296);
  let i = start;
  for (const last = end - 1; i < last; i += 2) {
    const w = text.charCodeAt(i) | (text.charCodeAt(i + 1) << 16);
    h1 = Math.imul(h1 ^ w, 2654435761);
    h2 = Math.imul(h2 ^ w, 1597334677);
  }
  if (i < end) {
    // an odd last unit (the block length fixes whether there is one, so keys stay injective per length)
    const w = text.charCodeAt(i);
    h1 = Math.imul(h1 ^ w, 2654435761);
    h2 = Math.imul(h2 ^ w, 1597334677);
  }
  return finish(h1, h2);
}

/** Root of a chain: isolates models (and tenants, when a cache_salt is given) from each other. */
export function chainSeed(model: string, salt = ''): number {
  return hashTextBlock(0, salt ? `${model}\u0000${salt}` : model, 0, salt ? model.length + 1 + salt.length : model.length);
}

/** Keys of every full block of `ids`, at most `maxBlocks`. */
export function tokenBlockKeys(seed: number, ids: ArrayLike<number>, blockSize: number, maxBlocks: number): number[] {
  const n = Math.min(Math.floor(ids.length / blockSize), maxBlocks);
  const keys = new Array<number>(n);
  let parent = seed;
  for (let b = 0; b < n; b++) {
    parent = hashTokenBlock(parent, ids, b * blockSize, (b + 1) * blockSize);
    keys[b] = parent;
  }
  return keys;
}

/** Keys of every full block of `text`, `blockChars` code units each, at most `maxBlocks`. */
export function textBlockKeys(seed: number, text: string, blockChars: number, maxBlocks: number): number[] {
  const n = Math.min(Math.floor(text.length / blockChars), maxBlocks);
  const keys = new Array<number>(n);
  let parent = seed;
  for (let b = 0; b < n; b++) {
    parent = hashTextBlock(parent, text, b * blockChars, (b + 1) * blockChars);
    keys[b] = parent;
  }
  return keys;
}
