// KV events from a real engine over a real ZMQ socket, decoded as a router would decode vLLM's.
import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { test } from 'node:test';
import { Subscriber } from 'zeromq';
import { createEngine, GREEDY, type EngineOptions } from '../../src/engine/index.ts';
import { decodeEventBatch, type KvEvent } from '../../src/gateway/kv-events.ts';

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as { port: number }).port;
      s.close(() => resolve(p));
    });
  });
}

test('an engine publishes BlockStored/BlockRemoved (medium GPU) in vLLM format under its topic', async () => {
  const port = await freePort();
  const { engine } = await createEngine({ model: 'stories260K', numBlocks: 4, kvEventsEndpoint: `tcp://*:${port}` } as EngineOptions);
  engine.setAdvertisedAddress('127.0.0.1', 8123);
  const sub = new Subscriber();
  sub.connect(`tcp://127.0.0.1:${port}`);
  sub.subscribe('kv@');
  await new Promise((r) => setTimeout(r, 200)); // ZMQ slow joiner
  const events: KvEvent[] = [];
  const topics = new Set<string>();
  const seqs: bigint[] = [];
  const reading = (async () => {
    for await (const [topic, seq, payload] of sub) {
      topics.add(topic!.toString());
      seqs.push(seq!.readBigUInt64BE());
      events.push(...decodeEventBatch(payload!).events);
    }
  })();
  const run = async (text: string) => {
    for await (const _ of engine.submit({ requestId: text, promptIds: engine.tokenizer.encode(text), sampling: GREEDY, maxTokens: 8 })) void _;
  };
  const story = 'Once upon a time, there was a little girl named Lily. She loved to play outside in the park.';
  await run(story);
  await run('The cat and the dog played in the sun all day long and they were very happy. They ran and ran.');
  await new Promise((r) => setTimeout(r, 200));
  sub.close();
  await reading.catch(() => undefined);
  await engine.close();
  assert.deepEqual([...topics], ['kv@127.0.0.1:8123@stories260K']);
  const stored = events.filter((e) => e.type === 'BlockStored');
  assert.ok(stored.length > 0);
  const first = stored[0] as Extract<KvEvent, { type: 'BlockStored' }>;
  assert.equal(first.blockSize, 16);
  assert.equal(first.medium, 'GPU');
  assert.deepEqual(first.tokenIds.slice(0, 16), engine.tokenizer.encode(story).slice(0, 16));
  assert.ok(events.some((e) => e.type === 'BlockRemoved'), 'the small pool evicted cached blocks');
  for (let i = 1; i < seqs.length; i++) assert.equal(seqs[i], seqs[i - 1]! + 1n);
});
