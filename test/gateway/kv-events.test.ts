// KV events over a real ZMQ PUB socket, both vLLM encodings, into the precise prefix index.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Publisher } from 'zeromq';
import { Encoder } from '@msgpack/msgpack';
import { decodeEventBatch, ObservedRates, pluginRegistry, type Endpoint, type SchedulingRequest } from '../../src/gateway/index.ts';
import type { PrecisePrefixProducer } from '../../src/gateway/plugins/producer/precise-prefix-cache-producer.ts';
import { freePort } from '../../src/cli/up.ts';
import { waitFor } from './fake-engine.ts';

const enc = new Encoder({ useBigInt64: true });
const range = (a: number, b: number) => Array.from({ length: b - a }, (_, i) => a + i);
const BIG = 0xfedcba9876543210n; // above 2^53: must survive as an exact key

test('decodeEventBatch: positional and map encodings, int and bytes hashes; garbage is an error', () => {
  const positional = decodeEventBatch(enc.encode([1.5, [['BlockStored', [1, BIG], null, range(0, 32), 16, null, 'GPU'], ['BlockRemoved', [1], 'GPU'], ['AllBlocksCleared']], 0]));
  assert.equal(positional.ts, 1.5);
  assert.equal(positional.dataParallelRank, 0);
  assert.deepEqual(positional.events[0], { type: 'BlockStored', blockHashes: ['1', BIG.toString()], parentBlockHash: null, tokenIds: range(0, 32), blockSize: 16, medium: 'GPU' });
  assert.deepEqual(positional.events[1], { type: 'BlockRemoved', blockHashes: ['1'], medium: 'GPU' });
  assert.deepEqual(positional.events[2], { type: 'AllBlocksCleared' });
  const map = decodeEventBatch(enc.encode({ ts: 2, events: [{ type: 'BlockStored', block_hashes: [new Uint8Array([1, 2])], parent_block_hash: 7, token_ids: range(0, 16), block_size: 16 }] }));
  assert.deepEqual(map.events[0], { type: 'BlockStored', blockHashes: ['x0102'], parentBlockHash: '7', tokenIds: range(0, 16), blockSize: 16, medium: undefined });
  assert.throws(() => decodeEventBatch(new Uint8Array([0xc1])), /not msgpack/);
  assert.throws(() => decodeEventBatch(enc.encode({ ts: 1, events: 5 })), /events must be a list/);
  assert.throws(() => decodeEventBatch(enc.encode([1, [['BlockStored', 'nope', null, [], 16]]])), /block_hashes must be a list/);
  // unknown event kinds are skipped, not fatal
  assert.equal(decodeEventBatch(enc.encode([1, [['SomethingNew', 1]]])).events.length, 0);
});

test('precise index over ZMQ: stored blocks (both encodings) are matched by token ids; removals and clears apply', async () => {
  const port = await freePort();
  const pub = new Publisher();
  await pub.bind(`tcp://127.0.0.1:${port}`);
  const engine: Endpoint = {
    id: '127.0.0.1:9999', url: 'http://127.0.0.1:9999', role: 'decode', labels: {}, models: ['m'], healthy: true,
    metrics: { waiting: 0, running: 0, kvUsage: 0, scrapedAt: 0 }, metricsFresh: false, blockSize: 16, inflight: 0, inflightTokens: 0,
    kvEventsEndpoint: `tcp://*:${port}`,
  };
  const other: Endpoint = { ...engine, id: '127.0.0.1:9998', url: 'http://127.0.0.1:9998', kvEventsEndpoint: undefined };
  const logs: string[] = [];
  const producer = pluginRegistry.get('precise-prefix-cache-producer')!.create('precise', {}, {
    rates: new ObservedRates(),
    endpoints: { onEndpoint: (added) => (added(engine), () => {}) },
    tokenizer: { tokenize: async () => undefined, mayTokenize: () => false },
    log: (l) => logs.push(l),
  }) as PrecisePrefixProducer;
  let seq = 0n;
  const send = async (payload: Uint8Array) => {
    const s = Buffer.alloc(8);
    s.writeBigUInt64BE(seq++);
    await pub.send([`kv@127.0.0.1:9999@m`, s, payload]);
  };
  try {
    // ZMQ slow joiner: repeat the first batch until the subscriber has it (same hashes: idempotent)
    const first = enc.encode([0, [['BlockStored', [101, BIG], null, range(0, 32), 16, null, 'GPU']]]);
    await waitFor(async () => {
      await send(first);
      await new Promise((r) => setTimeout(r, 20));
      return producer.blocks(engine.id) === 2;
    }, 5000, 'first batch');
    await send(enc.encode({ ts: 1, events: [{ type: 'BlockStored', block_hashes: [103], parent_block_hash: BIG, token_ids: range(32, 48), block_size: 16, medium: 'GPU' }] }));
    await waitFor(() => producer.blocks(engine.id) === 3, 3000, 'map-encoded batch');

    const match = (ids: number[]) => {
      const req: SchedulingRequest = { requestId: 'r', model: 'm', kind: 'completions', body: {}, promptText: '', prefix: new Map(), headers: new Map(), tokens: { count: ids.length, ids, exact: true } };
      void producer.produce(req, [engine, other]);
      const m = req.prefix.get('precise')!;
      return [m.get(engine.id)!.matchBlocks, m.get(other.id)!.matchBlocks, m.get(engine.id)!.totalBlocks];
    };
    assert.deepEqual(match(range(0, 50)), [3, 0, 3]);
    assert.deepEqual(match([...range(0, 20), 999, ...range(21, 50)]), [1, 0, 3]); // diverges in block 1
    assert.deepEqual(match(range(0, 15)), [0, 0, 0]); // not a full block
    assert.deepEqual(match([...range(0, 48)].map((t) => t + 1)), [0, 0, 3]);

    await send(enc.encode([2, [['BlockRemoved', [103], 'GPU']]]));
    await waitFor(() => producer.blocks(engine.id) === 2, 3000, 'removal');
    assert.deepEqual(match(range(0, 50)), [2, 0, 3]);
    // a child whose parent the index never saw cannot be placed: skipped and reported
    await send(enc.encode([3, [['BlockStored', [104], 555, range(48, 64), 16, null, 'GPU']]]));
    await send(enc.encode([4, [['AllBlocksCleared']]]));
    await waitFor(() => producer.blocks(engine.id) === 0, 3000, 'clear');
    assert.ok(logs.some((l) => /parent block is unknown/.test(l)));

    // the engine restarts: its publisher counts from 0 again and its memory holds nothing of before
    await send(enc.encode([5, [['BlockStored', [101, BIG], null, range(0, 32), 16, null, 'GPU']]]));
    await waitFor(() => producer.blocks(engine.id) === 2, 3000, 'stored again');
    seq = 0n;
    await send(enc.encode([6, [['BlockStored', [201], null, range(100, 116), 16, null, 'GPU']]]));
    await waitFor(() => producer.blocks(engine.id) === 1, 3000, 'the old blocks dropped, the new one kept');
    assert.deepEqual(match(range(0, 50)), [0, 0, 3]);
    assert.deepEqual(match(range(100, 120)), [1, 0, 1]);
    assert.ok(logs.some((l) => /sequence went back \d+ → 0: the engine restarted; its block-pool and CPU-tier entries are dropped/.test(l)), logs.join('\n'));
  } finally {
    await producer.close?.();
    pub.close();
  }
});

test('precise index weights KV-store tiers: a CPU hit counts 0.75, DISK/REMOTE 0.25, GPU 1; the pool block size stays', () => {
  const ep: Endpoint = {
    id: 'e:1', url: 'http://e:1', role: 'decode', labels: {}, models: ['m'], healthy: true,
    metrics: { waiting: 0, running: 0, kvUsage: 0, scrapedAt: 0 }, metricsFresh: false, blockSize: 16, inflight: 0, inflightTokens: 0,
  };
  const producer = pluginRegistry.get('precise-prefix-cache-producer')!.create('precise', {}, {
    rates: new ObservedRates(),
    endpoints: { onEndpoint: () => () => {} },
    tokenizer: { tokenize: async () => undefined, mayTokenize: () => false },
    log: () => {},
  }) as PrecisePrefixProducer;
  const match = (ids: number[]) => {
    const req: SchedulingRequest = { requestId: 'r', model: 'm', kind: 'completions', body: {}, promptText: '', prefix: new Map(), headers: new Map(), tokens: { count: ids.length, ids, exact: true } };
    void producer.produce(req, [ep]);
    const m = req.prefix.get('precise')!.get(ep.id)!;
    return [m.matchBlocks, m.blockSize];
  };
  // GPU holds the first 2 blocks of 16; the CPU tier holds one 64-token chunk; the disk tier 128 tokens
  producer.apply(ep.id, 'm', { ts: 0, events: [{ type: 'BlockStored', blockHashes: ['1', '2'], parentBlockHash: null, tokenIds: range(0, 32), blockSize: 16, medium: 'GPU' }] });
  producer.apply(ep.id, 'm', { ts: 0, events: [{ type: 'BlockStored', blockHashes: ['c1'], parentBlockHash: null, tokenIds: range(0, 64), blockSize: 64, medium: 'CPU' }] });
  assert.deepEqual(match(range(0, 200)), [2 + (32 * 0.75) / 16, 16]);
  producer.apply(ep.id, 'm', { ts: 0, events: [{ type: 'BlockStored', blockHashes: ['d1', 'd2'], parentBlockHash: null, tokenIds: range(0, 128), blockSize: 64, medium: 'DISK' }] });
  assert.deepEqual(match(range(0, 200)), [2 + (32 * 0.75 + 64 * 0.25) / 16, 16]);
  // a pool reset forgets GPU blocks only
  producer.apply(ep.id, 'm', { ts: 0, events: [{ type: 'AllBlocksCleared' }] });
  assert.deepEqual(match(range(0, 200)), [(64 * 0.75 + 64 * 0.25) / 16, 16]);
});
