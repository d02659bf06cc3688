// Pulls between a KvTransferServer in a child process and this process, over real sockets, on
// seeded pools: exact data across block sizes and dtypes, partial pulls, multiplexing, tokens,
// handshake compatibility, leases and metrics.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { Registry } from 'prom-client';
import { gatherTokens, tokenMajorBytes, type PoolRef } from '../../src/engine/kv-layout.ts';
import { KvTransferClient, KvTransferError, type KvCompat } from '../../src/kvconnector/index.ts';
import { compatOf, makePool, metricValue, scatteredBlocks, ServerProcess, SHAPE, type ServerConfig } from './helpers.ts';

const HOST = '127.0.0.1';
// A: f32 pool in wasm memory (checksummed in place), 16-token blocks, small frames (many DATA frames
// per pull, batched through the reader's scratch).
const A_CFG: ServerConfig = { engineId: 'engine-A', blockSize: 16, numBlocks: 96, dtype: 'f32', seed: 11, frameBytes: 16 * 1024, wasm: true };
// B: f16 pool, 4-token blocks, default 1 MiB frames (large-frame path), HMAC tokens.
const B_CFG: ServerConfig = { engineId: 'engine-B', blockSize: 4, numBlocks: 400, dtype: 'f16', seed: 22, secret: 's3cret' };
// C: f32 pool in wasm memory, 32-token blocks of 128 KiB: 1 MiB frames of eight whole-block pieces.
const C_CFG: ServerConfig = { engineId: 'engine-C', blockSize: 32, numBlocks: 100, dtype: 'f32', seed: 33, frameBytes: 1 << 20, wasm: true };
let A: ServerProcess;
let B: ServerProcess;
let C: ServerProcess;
const client = new KvTransferClient();
const registry = new Registry();

before(async () => {
  [A, B, C] = await Promise.all([ServerProcess.start(A_CFG), ServerProcess.start(B_CFG), ServerProcess.start(C_CFG)]);
});
after(async () => {
  client.close();
  await Promise.all([A?.stop(), B?.stop(), C?.stop()]);
});

const sources = new Map<ServerConfig, PoolRef>();
/** What the server's pool holds: the same seeded pool, rebuilt here. */
function sourceTokens(cfg: ServerConfig, blockIds: number[], start: number, count: number, dtype: 'f32' | 'f16'): Buffer {
  if (!sources.has(cfg)) sources.set(cfg, makePool(cfg, cfg.seed));
  return Buffer.from(gatherTokens(sources.get(cfg)!, blockIds, start, count, dtype));
}

function localTokens(pool: PoolRef, table: number[], start: number, count: number, dtype: 'f32' | 'f16'): Buffer {
  return Buffer.from(gatherTokens(pool, table, start, count, dtype));
}

interface PullCase {
  server: ServerProcess;
  requestId: string;
  numTokens: number;
  dest: { blockSize: number; numBlocks: number; dtype: 'f32' | 'f16'; wasm?: boolean };
  startToken?: number;
  destSeed?: number;
  compat?: KvCompat;
}

async function offerAndPull(c: PullCase) {
  const { transferToken, blockIds } = await c.server.offer(c.requestId, c.numTokens);
  const dest = makePool(c.dest, c.destSeed ?? 0);
  const table = scatteredBlocks(c.numTokens, c.dest.blockSize, c.dest.numBlocks, 77);
  const before = Buffer.from(new Uint8Array(dest.buffer).slice());
  const r = await client.pull({
    host: HOST,
    port: c.server.port,
    requestId: c.requestId,
    transferToken,
    compat: c.compat ?? compatOf(),
    remoteEngineId: c.server.config.engineId,
    startToken: c.startToken ?? 0,
    numTokens: c.numTokens,
    dest: { pool: dest, blockTable: table },
    registry,
  });
  return { r, dest, table, blockIds, before, transferToken };
}

test('f32 → f32 across block sizes (16 → 8) is bit-exact', async () => {
  const n = 300; // not a multiple of either block size
  const { r, dest, table, blockIds } = await offerAndPull({ server: A, requestId: 'f32-f32', numTokens: n, dest: { blockSize: 8, numBlocks: 64, dtype: 'f32' } });
  assert.equal(r.tokens, n);
  assert.equal(r.bytes, tokenMajorBytes(SHAPE, n, 'f32'));
  assert.ok(localTokens(dest, table, 0, n, 'f32').equals(sourceTokens(A_CFG, blockIds, 0, n, 'f32')));
  assert.equal(await A.waitRelease('f32-f32'), 'pulled');
});

test('f32 → f16 (block size 16 → 32) equals f32ToF16 of the source', async () => {
  const n = 257;
  const { dest, table, blockIds } = await offerAndPull({ server: A, requestId: 'f32-f16', numTokens: n, dest: { blockSize: 32, numBlocks: 16, dtype: 'f16' } });
  assert.ok(localTokens(dest, table, 0, n, 'f16').equals(sourceTokens(A_CFG, blockIds, 0, n, 'f16')));
});

test('f16 → f16 (4 → 16) and f16 → f32 (4 → 5) are exact, with 1 MiB frames', async () => {
  const n = 1100; // 2.2 MB of f16 KV: three DATA frames, each larger than the reader's scratch
  const a = await offerAndPull({ server: B, requestId: 'f16-f16', numTokens: n, dest: { blockSize: 16, numBlocks: 80, dtype: 'f16' } });
  assert.equal(a.r.bytes, tokenMajorBytes(SHAPE, n, 'f16'));
  assert.ok(localTokens(a.dest, a.table, 0, n, 'f16').equals(sourceTokens(B_CFG, a.blockIds, 0, n, 'f16')));
  const b = await offerAndPull({ server: B, requestId: 'f16-f32', numTokens: n, dest: { blockSize: 5, numBlocks: 230, dtype: 'f32' } });
  assert.ok(localTokens(b.dest, b.table, 0, n, 'f32').equals(sourceTokens(B_CFG, b.blockIds, 0, n, 'f32')));
});

test('KV in the destination dtype lands in place in a wasm-memory pool (whole frames, mid-block starts, other block sizes)', async () => {
  const n = 700; // 2.8 MB of f32 KV in three frames of whole 128 KiB blocks (pieces), each larger than the reader's scratch
  for (const [i, d] of [
    [0, { blockSize: 32, numBlocks: 24, dtype: 'f32', wasm: true }], // each piece is one region
    [37, { blockSize: 64, numBlocks: 12, dtype: 'f32', wasm: true }], // mid-block start, frames span two blocks
    [40, { blockSize: 8, numBlocks: 90, dtype: 'f32', wasm: true }], // 4 KiB regions: not worth landing, scattered
    [5, { blockSize: 32, numBlocks: 24, dtype: 'f16', wasm: true }], // other dtype: converted, not landed
  ] as const) {
    const { r, dest, table, blockIds, before } = await offerAndPull({ server: C, requestId: `land-${i}-${d.blockSize}-${d.dtype}`, numTokens: n, startToken: i, destSeed: 8, dest: d });
    assert.equal(r.bytes, tokenMajorBytes(SHAPE, n - i, 'f32'));
    assert.ok(localTokens(dest, table, i, n - i, d.dtype).equals(sourceTokens(C_CFG, blockIds, i, n - i, d.dtype)), `${d.blockSize} ${d.dtype} from ${i}`);
    const beforePool = { buffer: before.buffer, layout: dest.layout } as PoolRef;
    assert.ok(localTokens(dest, table, 0, i, d.dtype).equals(localTokens(beforePool, table, 0, i, d.dtype)), 'cached prefix untouched');
  }
});

test('a partial pull (decode caches a prefix) moves only the missing tokens', async () => {
  const n = 200;
  const start = 64;
  const sentBefore = metricValue(await A.metrics(), 'tandem:kv_transfer_bytes_total{direction="send"}') ?? 0;
  const { r, dest, table, blockIds, before } = await offerAndPull({
    server: A,
    requestId: 'partial',
    numTokens: n,
    startToken: start,
    destSeed: 5, // the "cached prefix": whatever is there must stay
    dest: { blockSize: 16, numBlocks: 16, dtype: 'f32' },
  });
  const rest = tokenMajorBytes(SHAPE, n - start, 'f32');
  assert.equal(r.bytes, rest);
  assert.equal(r.tokens, n - start);
  assert.ok(localTokens(dest, table, start, n - start, 'f32').equals(sourceTokens(A_CFG, blockIds, start, n - start, 'f32')));
  const beforePool = { buffer: before.buffer, layout: dest.layout } as PoolRef;
  assert.ok(localTokens(dest, table, 0, start, 'f32').equals(localTokens(beforePool, table, 0, start, 'f32')), 'cached prefix untouched');
  const sentAfter = metricValue(await A.metrics(), 'tandem:kv_transfer_bytes_total{direction="send"}') ?? 0;
  assert.equal(sentAfter - sentBefore, rest, 'the server sent exactly the remainder');
});

test('concurrent pulls multiplex over at most two pooled connections', async () => {
  const results = await Promise.all(
    Array.from({ length: 8 }, (_, i) =>
      offerAndPull({ server: A, requestId: `mux-${i}`, numTokens: 90 + 17 * i, dest: { blockSize: 16, numBlocks: 16, dtype: 'f32' } }),
    ),
  );
  results.forEach(({ dest, table, blockIds }, i) => {
    const n = 90 + 17 * i;
    assert.ok(localTokens(dest, table, 0, n, 'f32').equals(sourceTokens(A_CFG, blockIds, 0, n, 'f32')), `pull ${i}`);
  });
  assert.ok(client.connectionCount(HOST, A.port) <= 2);
  assert.ok(client.connectionCount(HOST, A.port) >= 1, 'connections stay open for reuse');
});

test('more pulls and releases at once than two connections carry (64 streams each) wait their turn, and all succeed', async () => {
  // a decode engine under a burst: the server refuses a 65th stream on a connection, so the client
  // must queue rather than open it (before the fix the whole connection died and every pull on it failed)
  const own = new KvTransferClient({ maxConnectionsPerPeer: 2 });
  try {
    const N = 300;
    const offers = await Promise.all(Array.from({ length: N }, (_, i) => A.offer(`burst-${i}`, 20 + (i % 5))));
    const results = await Promise.all(
      offers.map(({ transferToken }, i) => {
        const n = 20 + (i % 5);
        if (i % 6 === 5) return own.release({ host: HOST, port: A.port, requestId: `burst-${i}`, transferToken, compat: compatOf() }).then(() => undefined);
        const dest = makePool({ blockSize: 16, numBlocks: 2, dtype: 'f32' });
        return own
          .pull({ host: HOST, port: A.port, requestId: `burst-${i}`, transferToken, compat: compatOf(), startToken: 0, numTokens: n, dest: { pool: dest, blockTable: [0, 1] } })
          .then(() => ({ dest, n }));
      }),
    );
    results.forEach((r, i) => {
      if (!r) return;
      assert.ok(localTokens(r.dest, [0, 1], 0, r.n, 'f32').equals(sourceTokens(A_CFG, offers[i]!.blockIds, 0, r.n, 'f32')), `pull ${i}`);
    });
    for (let i = 5; i < N; i += 6) assert.equal(await A.waitRelease(`burst-${i}`), 'not-needed');
    assert.ok(own.connectionCount(HOST, A.port) <= 2, `${own.connectionCount(HOST, A.port)} connections`);
  } finally {
    own.close();
  }
});

test('a prefill engine that stops answering mid-transfer fails the pull after the idle timeout, not the 60 s deadline', async () => {
  const S = await ServerProcess.start({ ...A_CFG, engineId: 'engine-stall' });
  const own = new KvTransferClient();
  try {
    const first = await S.offer('stall-0', 40);
    const dest = () => ({ pool: makePool({ blockSize: 16, numBlocks: 4, dtype: 'f32' }), blockTable: [0, 1, 2, 3] });
    await own.pull({ host: HOST, port: S.port, requestId: 'stall-0', transferToken: first.transferToken, compat: compatOf(), startToken: 0, numTokens: 40, dest: dest() });
    const second = await S.offer('stall-1', 40);
    process.kill(S.child.pid!, 'SIGSTOP'); // the connection stays open; nothing comes back
    try {
      const t0 = Date.now();
      const err = await expectFailure(
        own.pull({ host: HOST, port: S.port, requestId: 'stall-1', transferToken: second.transferToken, compat: compatOf(), startToken: 0, numTokens: 40, dest: dest(), idleTimeoutMs: 400 }),
        'timeout',
      );
      assert.match(err.message, /nothing received for 400 ms/);
      assert.ok(Date.now() - t0 < 5000, `failed after ${Date.now() - t0} ms`);
    } finally {
      process.kill(S.child.pid!, 'SIGCONT');
    }
  } finally {
    own.close();
    await S.stop();
  }
});

async function expectFailure(p: Promise<unknown>, reason: string, field?: string): Promise<KvTransferError> {
  const err = await p.then(
    () => assert.fail(`expected a '${reason}' failure`),
    (e: unknown) => e,
  );
  assert.ok(err instanceof KvTransferError, `expected KvTransferError, got ${String(err)}`);
  assert.equal(err.reason, reason, err.message);
  if (field) assert.equal(err.field, field);
  return err;
}

function pullOpts(server: ServerProcess, requestId: string, transferToken: string, numTokens: number, over: Partial<Parameters<KvTransferClient['pull']>[0]> = {}) {
  return {
    host: HOST,
    port: server.port,
    requestId,
    transferToken,
    compat: compatOf(),
    startToken: 0,
    numTokens,
    dest: { pool: makePool({ blockSize: 16, numBlocks: 16, dtype: 'f32' }), blockTable: scatteredBlocks(numTokens, 16, 16, 3) },
    registry,
    ...over,
  };
}

test('a wrong token gets an error and no data; the right one still works', async () => {
  const { transferToken } = await A.offer('tok', 40);
  const failuresBefore = metricValue(await registry.metrics(), 'tandem:kv_load_failures_total{reason="bad-token"}') ?? 0;
  const wrong = transferToken.replace(/^./, (c) => (c === '0' ? '1' : '0'));
  const o = pullOpts(A, 'tok', wrong, 40);
  await expectFailure(client.pull(o), 'bad-token');
  // No data crossed: the destination pool is still all zeros.
  assert.ok(new Uint8Array((o.dest.pool as PoolRef).buffer).every((b) => b === 0));
  assert.equal(metricValue(await registry.metrics(), 'tandem:kv_load_failures_total{reason="bad-token"}'), failuresBefore + 1);
  await expectFailure(client.pull(pullOpts(A, 'no-such-request', transferToken, 40)), 'unknown-request');
  await client.pull(pullOpts(A, 'tok', transferToken, 40));
  // Pulled: the lease is gone.
  await expectFailure(client.pull(pullOpts(A, 'tok', transferToken, 40)), 'unknown-request');
});

test('with a secret, tokens are HMACs bound to their request', async () => {
  const x = await B.offer('hmac-x', 30);
  const y = await B.offer('hmac-y', 30);
  assert.match(x.transferToken, /^[0-9a-f]{32}\.[0-9a-f]{64}$/);
  await expectFailure(client.pull(pullOpts(B, 'hmac-y', x.transferToken, 30)), 'bad-token');
  await client.pull(pullOpts(B, 'hmac-x', x.transferToken, 30));
  await client.pull(pullOpts(B, 'hmac-y', y.transferToken, 30));
});

test('the handshake refuses an incompatible engine, naming the field', async () => {
  const { transferToken } = await A.offer('compat', 20);
  const cases: [keyof KvCompat, KvCompat[keyof KvCompat]][] = [
    ['architecture', 'mistral'],
    ['nLayers', 5],
    ['nKvHeads', 2],
    ['headDim', 16],
    ['fingerprint', 'fp-other'],
  ];
  for (const [field, value] of cases) {
    const compat = { ...compatOf(), [field]: value } as KvCompat;
    const pool = makePool({ blockSize: 16, numBlocks: 4, dtype: 'f32' }, 0, compat);
    const err = await expectFailure(client.pull(pullOpts(A, 'compat', transferToken, 20, { compat, dest: { pool, blockTable: [0, 1] } })), 'incompatible', field);
    assert.match(err.message, new RegExp(field));
  }
  // A restarted engine at the same address would not hold the lease.
  await expectFailure(client.pull(pullOpts(A, 'compat', transferToken, 20, { remoteEngineId: 'engine-Z' })), 'unknown-request');
  // The lease survived all of that and the server still serves.
  await client.pull(pullOpts(A, 'compat', transferToken, 20));
});

test('an expired lease frees its blocks and answers lease-expired', async () => {
  const gauge = async () => metricValue(await A.metrics(), 'tandem:kv_leased_blocks');
  const before = await gauge();
  await A.offer('short', 50, { leaseMs: 100 });
  assert.equal(await gauge(), before! + Math.ceil(50 / 16));
  assert.equal(await A.waitRelease('short'), 'expired');
  assert.equal(await gauge(), before);
  await expectFailure(client.pull(pullOpts(A, 'short', '0'.repeat(32), 50)), 'lease-expired');
});

test('releaseKv frees the lease without a transfer', async () => {
  const { transferToken } = await A.offer('not-needed', 33);
  await expectFailure(client.release({ host: HOST, port: A.port, requestId: 'not-needed', transferToken: 'f'.repeat(32) }), 'bad-token');
  await client.release({ host: HOST, port: A.port, requestId: 'not-needed', transferToken });
  assert.equal(await A.waitRelease('not-needed'), 'not-needed');
  await expectFailure(client.pull(pullOpts(A, 'not-needed', transferToken, 33)), 'unknown-request');
  assert.equal(metricValue(await A.metrics(), 'tandem:kv_leased_blocks'), 0, 'no lease left behind by any test so far');
});

test('metrics count both directions', async () => {
  const server = await A.metrics();
  const local = await registry.metrics();
  const sent = metricValue(server, 'tandem:kv_transfer_bytes_total{direction="send"}')!;
  const received = metricValue(local, 'tandem:kv_transfer_bytes_total{direction="recv"}')!;
  assert.ok(sent > 0 && received > 0);
  assert.ok(metricValue(server, 'tandem:kv_transfer_tokens_total{direction="send"}')! > 0);
  assert.ok(metricValue(local, 'tandem:kv_transfer_seconds_count{direction="recv"}')! >= 10);
  assert.ok(metricValue(local, 'tandem:kv_load_failures_total{reason="incompatible"}')! >= 5);
});
