// Payload-less transfers for simulated engines, over real sockets: a KvTransferServer with a
// simulatedLink (and no KV pool) in a child process; pulls with `simulated: true` and no destination
// pool. Sizes, pacing on one shared link, leases, tokens and errors are real; timing is asserted
// with lower bounds only (a loaded machine can only make transfers slower).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { performance } from 'node:perf_hooks';
import { Registry } from 'prom-client';
import { KvTransferClient, KvTransferError, type PullKvOptions } from '../../src/kvconnector/index.ts';
import { compatOf, makePool, metricValue, scatteredBlocks, ServerProcess, type ServerConfig } from './helpers.ts';

const HOST = '127.0.0.1';
// 128 KiB per token (Llama-3-8B's f16 KV); 2 GB/s: 100 tokens ≈ 6.6 ms of link time.
const LINK = { bytesPerToken: 128 * 1024, bandwidthBytesPerSec: 2e9, latencyMs: 5 };
const SIM_CFG: ServerConfig = { engineId: 'sim-P', blockSize: 16, numBlocks: 4096, dtype: 'f16', seed: 0, simulatedLink: LINK };
// A slow link for the timing tests: 1 000 tokens = 131 MB ≈ 262 ms at 500 MB/s.
const SLOW = { bytesPerToken: 128 * 1024, bandwidthBytesPerSec: 5e8, latencyMs: 20 };
const SLOW_CFG: ServerConfig = { ...SIM_CFG, engineId: 'sim-slow', simulatedLink: SLOW };
const REAL_CFG: ServerConfig = { engineId: 'real-P', blockSize: 16, numBlocks: 64, dtype: 'f32', seed: 5 };
let SIM: ServerProcess;
let SLOWS: ServerProcess;
let REAL: ServerProcess;
const client = new KvTransferClient();

before(async () => {
  [SIM, SLOWS, REAL] = await Promise.all([ServerProcess.start(SIM_CFG), ServerProcess.start(SLOW_CFG), ServerProcess.start(REAL_CFG)]);
});
after(async () => {
  client.close();
  await Promise.all([SIM?.stop(), SLOWS?.stop(), REAL?.stop()]);
});

function simPull(server: ServerProcess, requestId: string, transferToken: string, numTokens: number, over: Partial<PullKvOptions> = {}): PullKvOptions {
  return { host: HOST, port: server.port, requestId, transferToken, compat: compatOf(), startToken: 0, numTokens, simulated: true, ...over };
}

async function rejection(p: Promise<unknown>): Promise<KvTransferError> {
  const err = await p.then(
    () => assert.fail('expected a KvTransferError'),
    (e: unknown) => e,
  );
  assert.ok(err instanceof KvTransferError, `not a KvTransferError: ${String(err)}`);
  return err;
}

test('a simulated pull declares tokens × bytesPerToken, writes no pool, counts the bytes, and frees the lease', async () => {
  const registry = new Registry();
  const { transferToken } = await SIM.offer('s1', 100);
  const progress: number[] = [];
  const r = await client.pull(simPull(SIM, 's1', transferToken, 100, { registry, onProgress: (n) => progress.push(n) }));
  assert.equal(r.bytes, 100 * LINK.bytesPerToken);
  assert.equal(r.tokens, 100);
  assert.equal(progress.at(-1), 100);
  assert.ok(progress.length > 1 && progress.every((n, i) => i === 0 || n > progress[i - 1]!), `progress ${progress}`);
  const text = await registry.metrics();
  assert.equal(metricValue(text, 'tandem:kv_transfer_bytes_total{direction="recv"}'), 100 * LINK.bytesPerToken);
  assert.equal(metricValue(text, 'tandem:kv_transfer_tokens_total{direction="recv"}'), 100);
  assert.equal(await SIM.waitRelease('s1'), 'pulled');
  const server = await SIM.metrics();
  assert.equal(metricValue(server, 'tandem:kv_transfer_bytes_total{direction="send"}'), 100 * LINK.bytesPerToken);

  // A partial pull (the decode engine caches a prefix) declares only the missing tokens.
  const second = await SIM.offer('s2', 50);
  const p = await client.pull(simPull(SIM, 's2', second.transferToken, 50, { startToken: 32 }));
  assert.equal(p.bytes, 18 * LINK.bytesPerToken);
  assert.equal(p.tokens, 18);

  // A destination pool is ignored, and stays untouched.
  const third = await SIM.offer('s3', 20);
  const dest = makePool({ blockSize: 16, numBlocks: 2, dtype: 'f16' }, 9);
  const before = Buffer.from(new Uint8Array(dest.buffer).slice());
  await client.pull(simPull(SIM, 's3', third.transferToken, 20, { dest: { pool: dest, blockTable: [0, 1] } }));
  assert.ok(Buffer.from(new Uint8Array(dest.buffer)).equals(before));
});

test('a transfer of N bytes takes at least N / bandwidth + latency', async () => {
  const tokens = 1000;
  const { transferToken } = await SLOWS.offer('t1', tokens);
  const t0 = performance.now();
  const r = await client.pull(simPull(SLOWS, 't1', transferToken, tokens));
  const ms = performance.now() - t0;
  const ideal = (r.bytes / SLOW.bandwidthBytesPerSec) * 1000 + SLOW.latencyMs;
  assert.ok(ms >= ideal * 0.95, `${ms.toFixed(1)} ms for ${r.bytes} bytes, the link needs ${ideal.toFixed(1)} ms`);
});

test('two concurrent transfers share one link: the second ends after about twice one transfer', async () => {
  const tokens = 600; // 78.6 MB ≈ 157 ms each
  const [a, b] = await Promise.all([SLOWS.offer('c1', tokens), SLOWS.offer('c2', tokens)]);
  const t0 = performance.now();
  const ends: number[] = [];
  await Promise.all(
    [['c1', a], ['c2', b]].map(async ([id, o]) => {
      await client.pull(simPull(SLOWS, id as string, (o as { transferToken: string }).transferToken, tokens));
      ends.push(performance.now() - t0);
    }),
  );
  const one = ((tokens * SLOW.bytesPerToken) / SLOW.bandwidthBytesPerSec) * 1000;
  const last = Math.max(...ends);
  assert.ok(last >= (2 * one + SLOW.latencyMs) * 0.95, `both done after ${last.toFixed(1)} ms; one transfer needs ${one.toFixed(1)} ms of link time`);
});

test('tokens, unknown requests and lease expiry fail as for real transfers', async () => {
  const { transferToken } = await SIM.offer('e1', 40);
  assert.equal((await rejection(client.pull(simPull(SIM, 'e1', 'f'.repeat(32), 40)))).reason, 'bad-token');
  assert.equal((await rejection(client.pull(simPull(SIM, 'nope', transferToken, 40)))).reason, 'unknown-request');
  assert.equal((await rejection(client.pull(simPull(SIM, 'e1', transferToken, 41)))).reason, 'unknown-request');
  await client.pull(simPull(SIM, 'e1', transferToken, 40)); // the lease survived the bad attempts

  const short = await SIM.offer('e2', 10, { leaseMs: 30 });
  assert.equal(await SIM.waitRelease('e2'), 'expired');
  assert.equal((await rejection(client.pull(simPull(SIM, 'e2', short.transferToken, 10)))).reason, 'lease-expired');

  // A lease that runs out while the slow link is still carrying the transfer.
  const slow = await SLOWS.offer('e3', 1000, { leaseMs: 100 });
  assert.equal((await rejection(client.pull(simPull(SLOWS, 'e3', slow.transferToken, 1000)))).reason, 'lease-expired');
  assert.equal(await SLOWS.waitRelease('e3'), 'expired');

  // A transfer the decode side gives up on stops without hurting the next one.
  const cancelled = await SLOWS.offer('e4', 1000);
  const err = await rejection(client.pull(simPull(SLOWS, 'e4', cancelled.transferToken, 1000, { transferTimeoutMs: 50 })));
  assert.equal(err.reason, 'timeout');
});

test('the handshake refuses to mix real and simulated engines, and both servers keep serving', async () => {
  const sim = await SIM.offer('m1', 16);
  const dest = makePool({ blockSize: 16, numBlocks: 4, dtype: 'f32' });
  const realIntoSim = await rejection(
    client.pull({ ...simPull(SIM, 'm1', sim.transferToken, 16), simulated: false, dest: { pool: dest, blockTable: [0, 1, 2, 3] } }),
  );
  assert.equal(realIntoSim.reason, 'incompatible');
  assert.equal(realIntoSim.field, 'simulated');

  const real = await REAL.offer('m2', 16);
  const simIntoReal = await rejection(client.pull(simPull(REAL, 'm2', real.transferToken, 16)));
  assert.equal(simIntoReal.reason, 'incompatible');
  assert.equal(simIntoReal.field, 'simulated');

  // Neither lease was touched: the right kind of puller still gets both.
  assert.equal((await client.pull(simPull(SIM, 'm1', sim.transferToken, 16))).bytes, 16 * LINK.bytesPerToken);
  const table = scatteredBlocks(16, 16, 4, 3);
  const r = await client.pull({ ...simPull(REAL, 'm2', real.transferToken, 16), simulated: false, dest: { pool: dest, blockTable: table } });
  assert.equal(r.bytes, 16 * 4 * 2 * 4 * 32 * 4);
});

test('simulatedLink and dest are validated at the boundary', async () => {
  const { KvTransferServer } = await import('../../src/kvconnector/index.ts');
  const base = { engineId: 'x', compat: compatOf() };
  assert.throws(() => new KvTransferServer({ ...base, simulatedLink: { ...LINK, bytesPerToken: 0 } }), /bytesPerToken/);
  assert.throws(() => new KvTransferServer({ ...base, simulatedLink: { ...LINK, bandwidthBytesPerSec: Number.NaN } }), /bandwidthBytesPerSec/);
  assert.throws(() => new KvTransferServer({ ...base, simulatedLink: { ...LINK, latencyMs: -1 } }), /latencyMs/);
  assert.throws(() => new KvTransferServer(base), /pool is required/);
  await assert.rejects(client.pull({ ...simPull(SIM, 'v', 'tok', 4), simulated: false }), /dest is required/);
});
