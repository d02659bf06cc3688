// The request path's own machinery: coarse request deadlines (504 without a timer per request),
// client-disconnect and timeout cancelling the upstream leg, and the word-at-a-time prefix hashing.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { FakeEngine, waitFor } from './fake-engine.ts';
import { startGateway, type Gateway } from '../../src/gateway/index.ts';
import { chainSeed, hashTextBlock, textBlockKeys } from '../../src/gateway/prefix/hash.ts';
import { DeadlineList, type Deadlined } from '../../src/gateway/deadlines.ts';

const NEVER_SPLIT = `plugins:
- {type: token-producer, parameters: {backend: estimate}}
- type: decode-filter
`;

const open: (Gateway | FakeEngine)[] = [];
after(async () => {
  for (const x of open.reverse()) await (x instanceof FakeEngine ? x.stop() : x.close());
});

test('a request past --request-timeout gets 504 and its upstream leg is cancelled', async () => {
  const d = await new FakeEngine({ role: 'decode' }).start();
  open.push(d);
  const gw = await startGateway({ port: 0, log: () => {}, endpoints: [{ url: d.url, role: 'decode' }], configText: NEVER_SPLIT, requestTimeoutMs: 200, pool: { healthIntervalMs: 100 } });
  open.push(gw);
  await waitFor(() => gw.pool.all().every((e) => e.healthy), 5000, 'endpoint healthy');
  d.fail = 'hang';
  const t0 = Date.now();
  const r = await fetch(`${gw.url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model: 'fake', prompt: 'x' }) });
  assert.equal(r.status, 504);
  assert.equal(((await r.json()) as { error: { code: string } }).error.code, 'timeout');
  assert.ok(Date.now() - t0 >= 200);
  await waitFor(() => d.inference()[0]?.aborted === true, 3000, 'upstream leg aborted');
  const metrics = await (await fetch(`${gw.url}/metrics`)).text();
  assert.match(metrics, /tandem_gateway_errors_total\{reason="timeout"\} 1/);
  // the gateway keeps serving
  d.fail = 'none';
  const ok = await fetch(`${gw.url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model: 'fake', prompt: 'y' }) });
  assert.equal(ok.status, 200);
  await ok.text();
});

test('deadline list: expires in order, removed entries never fire', () => {
  const list = new DeadlineList(1000);
  const fired: string[] = [];
  const entry = (name: string): Deadlined => ({ deadline: 0, prevDeadline: undefined, nextDeadline: undefined, listed: false, expired: () => fired.push(name) });
  const a = entry('a');
  const b = entry('b');
  const c = entry('c');
  list.add(a, 10);
  list.add(b, 20);
  list.add(c, 30);
  list.remove(b);
  list.expire(25);
  assert.deepEqual(fired, ['a']);
  list.remove(a); // already expired: a no-op
  list.expire(100);
  assert.deepEqual(fired, ['a', 'c']);
});

test('text block keys: chained, per-block consistent, sensitive to every unit and to length', () => {
  const seed = chainSeed('m');
  const text = 'a'.repeat(64) + 'b'.repeat(64) + 'tail';
  const keys = textBlockKeys(seed, text, 64, 100);
  assert.equal(keys.length, 2);
  assert.equal(keys[0], hashTextBlock(seed, text, 0, 64));
  assert.equal(keys[1], hashTextBlock(keys[0]!, text, 64, 128));
  // a change in any position of a block changes its key and every later one
  for (const pos of [0, 1, 2, 3, 63]) {
    const t2 = text.slice(0, pos) + 'x' + text.slice(pos + 1);
    const k2 = textBlockKeys(seed, t2, 64, 100);
    assert.notEqual(k2[0], keys[0], `position ${pos}`);
    assert.notEqual(k2[1], keys[1], `position ${pos}`);
  }
  // odd lengths are not confused with zero padding; non-ASCII text hashes by code unit
  const seen = new Set(['abc', 'abc\u0000', 'ab', '', 'é', 'e', '日本'].map((t) => hashTextBlock(0, t, 0, t.length)));
  assert.equal(seen.size, 7);
  assert.notEqual(chainSeed('m'), chainSeed('m', 'salt'));
  // odd block sizes still work
  assert.equal(textBlockKeys(seed, text, 63, 100).length, 2);
});
