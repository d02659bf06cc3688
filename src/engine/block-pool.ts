// The block pool owns the KV blocks: who holds each one, which full blocks are cached under a
// prefix hash, and the free queue. Like vLLM's v1 BlockPool, cached blocks that nobody references
// stay in the free queue (least recently used first) and keep their contents until the space is
// needed, so a later request with the same prefix can take them back.

import { createHash } from 'node:crypto';

export interface Block {
  readonly id: number;
  refCount: number;
  /** prefix hash when this full block is in the cache */
  hash?: string;
  // free-queue links (doubly linked for O(1) removal from the middle)
  prev?: Block;
  next?: Block;
  inFree: boolean;
}

export interface BlockEvents {
  /** full blocks entered the prefix cache (in order, each block's parent is the previous one) */
  stored?(e: { hashes: string[]; parentHash: string | null; tokenIds: number[]; blockSize: number }): void;
  /** cached blocks were evicted */
  removed?(hashes: string[]): void;
}

/** Root of every hash chain. Fixed (not per process) so hashes agree across engines. */
export const NONE_HASH = createHash('sha256').update('tandem-prefix-cache-v1').digest('hex');

/** hash_i = H(hash_{i-1}, token ids of block i, extra keys). Extra keys carry the cache_salt on the first block, as in vLLM. */
export function hashBlock(parent: string, tokens: ArrayLike<number>, extra?: string): string {
  const h = createHash('sha256');
  h.update(parent, 'hex');
  const buf = Buffer.allocUnsafe(tokens.length * 4);
  for (let i = 0; i < tokens.length; i++) buf.writeUInt32LE(tokens[i]! >>> 0, i * 4);
  h.update(buf);
  if (extra !== undefined) h.update('\u0000salt\u0000' + extra);
  return h.digest('hex');
}

/** Hashes of the full blocks of `tokens`, continuing from `prev` (the hashes already known). */
export function blockHashes(tokens: ArrayLike<number>, blockSize: number, cacheSalt?: string, prev: string[] = []): string[] {
  const out = prev.slice();
  for (let b = out.length; (b + 1) * blockSize <= tokens.length; b++) {
    const parent = b === 0 ? NONE_HASH : out[b - 1]!;
    const slice = Array.prototype.slice.call(tokens, b * blockSize, (b + 1) * blockSize) as number[];
    out.push(hashBlock(parent, slice, b === 0 ? cacheSalt : undefined));
  }
  return out;
}

export class BlockPool {
  readonly blocks: Block[];
  private readonly cached = new Map<string, Block>();
  private head?: Block; // least recently freed
  private tail?: Block;
  private free = 0;

  constructor(
    readonly numBlocks: number,
    readonly enableCaching: boolean,
    private readonly events: BlockEvents = {},
  ) {
    this.blocks = Array.from({ length: numBlocks }, (_, id) => ({ id, refCount: 0, inFree: false }));
    for (const b of this.blocks) this.pushFree(b);
  }

  get numFree(): number {
    return this.free;
  }

  /** Fraction of blocks held by running requests (cached-but-free blocks count as free, as in vLLM). */
  get usage(): number {
    return this.numBlocks === 0 ? 0 : 1 - this.free / this.numBlocks;
  }

  get numCached(): number {
    return this.cached.size;
  }

  lookup(hash: string): Block | undefined {
    return this.cached.get(hash);
  }

  /** Take `n` blocks (fresh contents, refCount 1), evicting cached ones least recently used first. */
  allocate(n: number): Block[] | undefined {
    if (n > this.free) return undefined;
    const out: Block[] = [];
    const evicted: string[] = [];
    for (let i = 0; i < n; i++) {
      const b = this.head!;
      this.unlinkFree(b);
      if (b.hash !== undefined) {
        this.cached.delete(b.hash);
        evicted.push(b.hash);
        b.hash = undefined;
      }
      b.refCount = 1;
      out.push(b);
    }
    if (evicted.length) this.events.removed?.(evicted);
    return out;
  }

  /** Reference cached blocks (prefix hit). */
  touch(blocks: Block[]): void {
    for (const b of blocks) {
      if (b.refCount === 0) this.unlinkFree(b);
      b.refCount++;
    }
  }

  /** Drop one reference to each block; unreferenced blocks go to the free queue tail (cached ones keep their hash).
   * Blocks are freed in reverse so the tail of a sequence (least likely to be shared) is evicted first. */
  release(blocks: readonly Block[]): void {
    for (let i = blocks.length - 1; i >= 0; i--) {
      const b = blocks[i]!;
      if (b.refCount <= 0) throw new Error(`block ${b.id} released twice`);
      b.refCount--;
      if (b.refCount === 0) {
        if (!this.enableCaching && b.hash !== undefined) {
          this.cached.delete(b.hash);
          b.hash = undefined;
        }
        this.pushFree(b);
      }
    }
  }

  /** Register full blocks under their hashes (no-op for blocks already cached or hashes already present). */
  cacheBlocks(blocks: readonly Block[], hashes: readonly string[], tokens: ArrayLike<number>, firstBlock: number, blockSize: number): void {
    if (!this.enableCaching) return;
    const stored: string[] = [];
    let parent: string | null = firstBlock === 0 ? null : hashes[firstBlock - 1]!;
    const parentOfFirst = parent;
    const storedTokens: number[] = [];
    for (let i = firstBlock; i < hashes.length; i++) {
      const b = blocks[i]!;
      const h = hashes[i]!;
      if (b.hash !== undefined || this.cached.has(h)) continue;
      b.hash = h;
      this.cached.set(h, b);
      stored.push(h);
      for (let t = i * blockSize; t < (i + 1) * blockSize; t++) storedTokens.push(tokens[t]!);
      parent = h;
    }
    if (stored.length) this.events.stored?.({ hashes: stored, parentHash: parentOfFirst, tokenIds: storedTokens, blockSize });
  }

  /** Forget every cached hash (prefix-cache reset). */
  resetCache(): void {
    for (const b of this.cached.values()) b.hash = undefined;
    this.cached.clear();
  }

  private pushFree(b: Block): void {
    b.inFree = true;
    b.prev = this.tail;
    b.next = undefined;
    if (this.tail) this.tail.next = b;
    else this.head = b;
    this.tail = b;
    this.free++;
  }

  private unlinkFree(b: Block): void {
    if (!b.inFree) return;
    if (b.prev) b.prev.next = b.next;
    else this.head = b.next;
    if (b.next) b.next.prev = b.prev;
    else this.tail = b.prev;
    b.prev = b.next = undefined;
    b.inFree = false;
    this.free--;
  }
}
