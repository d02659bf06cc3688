// The scheduler and block pool driven with fake requests and no model (vLLM v1 style).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { BlockPool, blockHashes } from '../../src/engine/block-pool.ts';
import { Scheduler, SeqState, type StepPlan } from '../../src/engine/scheduler.ts';

function setup(numBlocks: number, opts: { maxNumSeqs?: number; budget?: number; caching?: boolean } = {}) {
  const pool = new BlockPool(numBlocks, opts.caching ?? true);
  const s = new Scheduler({ blockSize: 4, maxNumSeqs: opts.maxNumSeqs ?? 8, maxNumBatchedTokens: opts.budget ?? 64 }, pool);
  return { pool, s };
}

/** Run one step, sampling token 7 for every chunk that asks for a sample. */
function step(s: Scheduler): StepPlan {
  const plan = s.schedule();
  const sampled = new Map<SeqState, number>();
  for (const c of plan.chunks) if (c.sample) sampled.set(c.seq, 7);
  s.commit(plan, sampled);
  return plan;
}

const ids = (n: number, base = 100) => Array.from({ length: n }, (_, i) => base + i);

test('chunked prefill under the token budget, then one decode token per step', () => {
  const { s } = setup(64, { budget: 8 });
  const a = new SeqState('a', ids(20), 5);
  s.add(a);
  let p = step(s);
  assert.deepEqual(p.chunks.map((c) => [c.start, c.count, c.sample]), [[0, 8, false]]);
  p = step(s);
  assert.deepEqual(p.chunks.map((c) => [c.start, c.count, c.sample]), [[8, 8, false]]);
  p = step(s);
  assert.deepEqual(p.chunks.map((c) => [c.start, c.count, c.sample]), [[16, 4, true]]);
  assert.equal(a.tokens.length, 21);
  p = step(s);
  assert.deepEqual(p.chunks.map((c) => [c.start, c.count, c.sample]), [[20, 1, true]]);
});

test('decodes and a new prefill share one step; max_num_seqs caps the batch', () => {
  const { s } = setup(64, { budget: 16, maxNumSeqs: 2 });
  const a = new SeqState('a', ids(4), 5);
  s.add(a);
  step(s); // a prefilled
  const b = new SeqState('b', ids(6, 200), 5);
  const c = new SeqState('c', ids(6, 300), 5);
  s.add(b);
  s.add(c);
  const p = step(s);
  assert.deepEqual(p.chunks.map((ch) => [ch.seq.id, ch.count]), [['a', 1], ['b', 6]]);
  assert.equal(s.waiting[0], c);
});

test('prefix caching reuses full blocks and leaves one token to compute; cache_salt isolates', () => {
  const { s, pool } = setup(64);
  const a = new SeqState('a', ids(10), 1);
  s.add(a);
  step(s);
  s.finish(a);
  assert.equal(pool.usage, 0, 'finished blocks are free (but still cached)');
  const b = new SeqState('b', ids(10), 1);
  s.add(b);
  const p = step(s);
  assert.equal(b.numCachedTokens, 8);
  assert.deepEqual(p.chunks.map((c) => [c.start, c.count]), [[8, 2]]);
  // exactly two blocks' worth: the hit may not cover the last token
  const c = new SeqState('c', ids(8), 1);
  s.add(c);
  step(s);
  assert.equal(c.numCachedTokens, 4);
  const d = new SeqState('d', ids(10), 1, 'tenant-2');
  s.add(d);
  step(s);
  assert.equal(d.numCachedTokens, 0, 'a different cache_salt shares nothing');
});

test('without prefix caching nothing is reused', () => {
  const { s } = setup(64, { caching: false });
  const a = new SeqState('a', ids(10), 1);
  s.add(a);
  step(s);
  s.finish(a);
  const b = new SeqState('b', ids(10), 1);
  s.add(b);
  step(s);
  assert.equal(b.numCachedTokens, 0);
});

test('LRU eviction only when space is needed, oldest freed first', () => {
  const { s, pool } = setup(4);
  const a = new SeqState('a', ids(9), 1); // 3 blocks (2 full)
  s.add(a);
  step(s);
  s.finish(a);
  assert.equal(pool.numCached, 2);
  // b needs 3 blocks: the never-used one, a's uncached tail, then it must evict one cached block
  const b = new SeqState('b', ids(11, 500), 1);
  s.add(b);
  step(s);
  const aHashes = blockHashes(ids(9), 4);
  assert.ok(pool.lookup(aHashes[0]!), "a's first block (freed last) survives");
  assert.equal(pool.lookup(aHashes[1]!), undefined, "a's second block was evicted");
  assert.equal(pool.numCached, 3);
});

test('running out of blocks preempts the newest request, which is recomputed later', () => {
  const { s } = setup(4, { budget: 64 });
  const a = new SeqState('a', ids(7), 10); // 2 blocks
  const b = new SeqState('b', ids(7, 300), 10); // 2 blocks
  s.add(a);
  s.add(b);
  step(s);
  assert.equal(s.running.length, 2);
  // a grows to 8 tokens: still 2 blocks. Next token needs a third block → preempt b.
  step(s);
  const p = step(s);
  assert.equal(p.preempted.length, 1);
  assert.equal(p.preempted[0], b);
  assert.equal(b.status, 'waiting');
  assert.equal(b.numComputed, 0);
  assert.equal(s.numPreemptions, 1);
  s.finish(a);
  const p2 = step(s);
  assert.equal(p2.chunks[0]!.seq, b);
  // recomputed from its surviving cached prefix (block 0; block 1 went to a), through all 9 known tokens
  assert.deepEqual([p2.chunks[0]!.start, p2.chunks[0]!.count, p2.chunks[0]!.sample], [4, 5, true]);
});

test('a request blocked at the head of the queue is not skipped (FCFS)', () => {
  const { s } = setup(3, { budget: 64 });
  const big = new SeqState('big', ids(12), 1); // 3 blocks
  const a = new SeqState('a', ids(3), 1);
  s.add(a);
  step(s);
  s.add(big);
  const small = new SeqState('small', ids(2, 900), 1);
  s.add(small);
  const p = step(s);
  assert.deepEqual(p.chunks.map((c) => c.seq.id), ['a']);
  assert.deepEqual(s.waiting.map((q) => q.id), ['big', 'small']);
});
