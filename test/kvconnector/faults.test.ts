// Faults on real sockets: garbage, bad checksums, truncated and oversized frames written with a plain
// socket at a real server (child process); a fake prefill server misbehaving towards pullKv; dead
// peers, timeouts, aborts, and a server killed mid-transfer. Every failure is typed and nothing hangs.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { gatherTokens } from '../../src/engine/kv-layout.ts';
import { KvTransferClient, KvTransferError, type PullKvOptions } from '../../src/kvconnector/index.ts';
import { DATA_FLAG_LAST, encodeControl, FrameReader, FrameType, HEADER_BYTES, parseControl, PROTOCOL_VERSION, writeHeader, type FrameHeader } from '../../src/kvconnector/wire.ts';
import { frameChecksum } from '../../src/kvconnector/checksum.ts';
import { compatOf, makePool, scatteredBlocks, ServerProcess, type ServerConfig } from './helpers.ts';

const HOST = '127.0.0.1';
const S_CFG: ServerConfig = { engineId: 'engine-S', blockSize: 16, numBlocks: 64, dtype: 'f32', seed: 3 };
let S: ServerProcess;
const client = new KvTransferClient();

before(async () => {
  S = await ServerProcess.start(S_CFG);
});
after(async () => {
  client.close();
  await S?.stop();
});

function opts(port: number, requestId: string, transferToken: string, numTokens: number, over: Partial<PullKvOptions> = {}): PullKvOptions {
  return {
    host: HOST,
    port,
    requestId,
    transferToken,
    compat: compatOf(),
    startToken: 0,
    numTokens,
    connectTimeoutMs: 2000,
    transferTimeoutMs: 5000,
    ...over,
    dest: over.dest ?? { pool: makePool({ blockSize: 16, numBlocks: 16, dtype: 'f32' }), blockTable: scatteredBlocks(numTokens, 16, 16, 9) },
  };
}

async function expectFailure(p: Promise<unknown>, reasons: string[], message?: RegExp): Promise<KvTransferError> {
  const err = await p.then(
    () => assert.fail(`expected a ${reasons.join('/')} failure`),
    (e: unknown) => e,
  );
  assert.ok(err instanceof KvTransferError, `expected KvTransferError, got ${String(err)}`);
  assert.ok(reasons.includes(err.reason), `reason ${err.reason}: ${err.message}`);
  if (message) assert.match(err.message, message);
  return err;
}

/** The real server still serves a good pull, exactly. */
async function goodPull(id: string): Promise<void> {
  const { transferToken, blockIds } = await S.offer(id, 70);
  const o = opts(S.port, id, transferToken, 70);
  await client.pull(o);
  const src = gatherTokens(makePool(S_CFG, S_CFG.seed), blockIds, 0, 70, 'f32');
  const got = gatherTokens(o.dest!.pool as ReturnType<typeof makePool>, o.dest!.blockTable, 0, 70, 'f32');
  assert.ok(Buffer.from(src).equals(Buffer.from(got)));
}

/** A plain socket to the real server that records the frames it gets back. */
async function raw(port: number) {
  const sock = net.connect({ host: HOST, port });
  const frames: { h: FrameHeader; body: Record<string, unknown> | null }[] = [];
  const reader = new FrameReader(
    () => 1 << 20,
    (h, payload) => frames.push({ h, body: h.type === FrameType.DATA ? null : parseControl(payload, 'test') }),
    (err) => assert.fail(`server sent a bad frame: ${err.message}`),
  );
  sock.on('data', (d) => reader.push(d));
  sock.on('error', () => {});
  const closed = new Promise<void>((resolve) => sock.on('close', () => resolve()));
  await new Promise<void>((resolve) => sock.once('connect', () => resolve()));
  return { sock, frames, closed };
}

const hello = () => encodeControl(FrameType.HELLO, 0, { version: PROTOCOL_VERSION, compat: compatOf(), maxFrameBytes: 1 << 20 });

test('garbage from a client gets an ERROR frame and is dropped; the server keeps serving', async () => {
  const r = await raw(S.port);
  r.sock.write('GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n');
  await r.closed;
  assert.equal(r.frames.length, 1);
  assert.equal(r.frames[0]!.h.type, FrameType.ERROR);
  assert.equal(r.frames[0]!.body!['code'], 'corrupt');
  await goodPull('after-garbage');
});

test('a frame with a bad checksum is refused and the connection dropped', async () => {
  const { transferToken } = await S.offer('crc', 20);
  const r = await raw(S.port);
  const pull = encodeControl(FrameType.PULL, 1, { requestId: 'crc', transferToken, startToken: 0, endToken: 20 });
  pull[HEADER_BYTES + 3]! ^= 0x20; // flip one payload bit, keep the header's checksum
  r.sock.write(Buffer.concat([hello(), pull]));
  await r.closed;
  assert.deepEqual(r.frames.map((f) => f.h.type), [FrameType.HELLO_OK, FrameType.ERROR]);
  assert.equal(r.frames[1]!.body!['code'], 'corrupt');
  assert.match(String(r.frames[1]!.body!['message']), /checksum mismatch/);
  assert.ok(!r.frames.some((f) => f.h.type === FrameType.DATA), 'no data on a corrupt request');
  await goodPull('after-crc'); // and the lease 'crc' is still there for an honest pull:
  await client.pull(opts(S.port, 'crc', transferToken, 20));
});

test('a truncated frame: the server drops that connection and keeps serving', async () => {
  const r = await raw(S.port);
  const header = Buffer.alloc(HEADER_BYTES);
  writeHeader(header, FrameType.PULL, 1, 100, 0);
  r.sock.write(Buffer.concat([hello(), header, Buffer.from('{"requestI')]));
  r.sock.end();
  await r.closed;
  assert.deepEqual(r.frames.map((f) => f.h.type), [FrameType.HELLO_OK]);
  await goodPull('after-truncated');
});

test('an oversized length or a PULL before HELLO is refused at once', async () => {
  const big = await raw(S.port);
  const header = Buffer.alloc(HEADER_BYTES);
  writeHeader(header, FrameType.PULL, 1, 0x7fffffff, 0);
  big.sock.write(Buffer.concat([hello(), header]));
  await big.closed; // without waiting for 2 GiB that will never come
  assert.match(String(big.frames.at(-1)!.body!['message']), /exceeds/);
  const early = await raw(S.port);
  early.sock.write(encodeControl(FrameType.PULL, 1, { requestId: 'x', transferToken: 'y', startToken: 0, endToken: 1 }));
  await early.closed;
  assert.match(String(early.frames[0]!.body!['message']), /before HELLO/);
  await goodPull('after-oversized');
});

// ---- a fake prefill server misbehaving towards pullKv ------------------------------------------

type Behaviour = (sock: net.Socket, streamId: number) => void;

/** Answers HELLO (unless `silent`), then reacts to a PULL with `onPull`. */
async function fakeServer(onPull: Behaviour, silent = false) {
  const sockets: net.Socket[] = [];
  const server = net.createServer((sock) => {
    sockets.push(sock);
    sock.on('error', () => {});
    const reader = new FrameReader(
      () => 1 << 16,
      (h) => {
        if (h.type === FrameType.HELLO && !silent) {
          sock.write(encodeControl(FrameType.HELLO_OK, 0, { version: PROTOCOL_VERSION, engineId: 'fake', compat: compatOf(), blockSize: 16, kvDtype: 'f32' }));
        } else if (h.type === FrameType.PULL) onPull(sock, h.streamId);
      },
      () => sock.destroy(),
    );
    sock.on('data', (d) => reader.push(d));
  });
  await new Promise<void>((resolve) => server.listen(0, HOST, () => resolve()));
  const port = (server.address() as net.AddressInfo).port;
  const allClosed = () => Promise.all(sockets.map((s) => (s.destroyed ? null : new Promise((r) => s.once('close', r)))));
  return { port, allClosed, close: () => new Promise<void>((resolve) => (sockets.forEach((s) => s.destroy()), server.close(() => resolve()))) };
}

/** One DATA frame for tokens [first, first+count) of the test shape in f32 (values: zeros), one token-major piece. */
function dataFrame(streamId: number, first: number, count: number, flags = 0): Buffer {
  const kv = count * 4 * 2 * 128 * 4;
  const frame = Buffer.alloc(HEADER_BYTES + 12 + kv);
  frame.writeUInt32LE(first, HEADER_BYTES);
  frame.writeUInt32LE(count, HEADER_BYTES + 4);
  frame[HEADER_BYTES + 8] = 1;
  frame[HEADER_BYTES + 9] = flags;
  writeHeader(frame, FrameType.DATA, streamId, 12 + kv, frameChecksum(frame.subarray(HEADER_BYTES)));
  return frame;
}

const misbehaviours: [string, Behaviour, RegExp][] = [
  [
    'a DATA frame with a bad checksum',
    (sock, id) => {
      const f = dataFrame(id, 0, 4);
      f[f.length - 1]! ^= 1;
      sock.write(f);
    },
    /checksum mismatch/,
  ],
  ['a truncated DATA frame', (sock, id) => sock.end(dataFrame(id, 0, 4).subarray(0, 5000)), /truncated/],
  ['garbage', (sock) => sock.write(Buffer.alloc(64, 0xab)), /magic/],
  ['DATA for tokens that were not asked for', (sock, id) => sock.write(dataFrame(id, 8, 4)), /expecting token 0/],
  ['an END that does not add up', (sock, id) => sock.write(Buffer.concat([dataFrame(id, 0, 4), encodeControl(FrameType.END, id, { tokens: 8, bytes: 1 })])), /END says/],
  ['a DATA frame flagged last before the last token', (sock, id) => sock.write(dataFrame(id, 0, 4, DATA_FLAG_LAST)), /last DATA frame ends at token 4/],
  ['a DATA frame with unknown flags', (sock, id) => sock.write(dataFrame(id, 0, 4, 0x80)), /unknown flags/],
];

for (const [what, behaviour, message] of misbehaviours) {
  test(`pullKv: ${what} → 'corrupt', connection dropped`, async () => {
    const fake = await fakeServer(behaviour);
    try {
      await expectFailure(client.pull(opts(fake.port, 'r', 't', 8)), ['corrupt'], message);
      await fake.allClosed();
      assert.equal(client.connectionCount(HOST, fake.port), 0);
    } finally {
      await fake.close();
    }
  });
}

// The same with frames large enough to land straight in a wasm-memory destination pool.
const landingMisbehaviours: [string, Behaviour, RegExp][] = [
  [
    'a landed DATA frame with a bad checksum',
    (sock, id) => {
      const f = dataFrame(id, 0, 32);
      f[f.length - 100]! ^= 4;
      sock.write(f);
    },
    /checksum mismatch/,
  ],
  // The landing is decided from the sub-header: a frame for other tokens is refused, not landed.
  ['a large DATA frame for tokens not asked for', (sock, id) => sock.write(dataFrame(id, 1, 32)), /expecting token 0/],
  ['a DATA frame cut off while landing', (sock, id) => sock.end(dataFrame(id, 0, 32).subarray(0, 100_000)), /truncated/],
];

for (const [what, behaviour, message] of landingMisbehaviours) {
  test(`pullKv: ${what} → 'corrupt', connection dropped`, async () => {
    const fake = await fakeServer(behaviour);
    try {
      // 32-token blocks: a 32-token frame is one 128 KiB region of block 3
      const dest = { pool: makePool({ blockSize: 32, numBlocks: 4, dtype: 'f32', wasm: true }), blockTable: [3, 1, 0, 2] };
      await expectFailure(client.pull(opts(fake.port, 'r', 't', 64, { dest })), ['corrupt'], message);
      await fake.allClosed();
      assert.equal(client.connectionCount(HOST, fake.port), 0);
    } finally {
      await fake.close();
    }
  });
}

test('pullKv: no handshake → timeout; no data → timeout; abort → aborted', { timeout: 20_000 }, async () => {
  const silent = await fakeServer(() => {}, true);
  const stalled = await fakeServer(() => {});
  try {
    await expectFailure(client.pull(opts(silent.port, 'r', 't', 8, { connectTimeoutMs: 200 })), ['timeout'], /200 ms/);
    await expectFailure(client.pull(opts(stalled.port, 'r', 't', 8, { transferTimeoutMs: 200 })), ['timeout'], /200 ms/);
    const ac = new AbortController();
    const p = client.pull(opts(stalled.port, 'r', 't', 8, { signal: ac.signal }));
    setTimeout(() => ac.abort(), 50);
    await expectFailure(p, ['aborted']);
    // The stalled connection survives a cancelled stream and can be reused.
    assert.equal(client.connectionCount(HOST, stalled.port), 1);
  } finally {
    await Promise.all([silent.close(), stalled.close()]);
  }
});

test('pullKv: nobody listening → unreachable', async () => {
  const probe = net.createServer();
  await new Promise<void>((resolve) => probe.listen(0, HOST, () => resolve()));
  const port = (probe.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => probe.close(() => resolve()));
  await expectFailure(client.pull(opts(port, 'r', 't', 8)), ['unreachable']);
});

test('prefill server killed mid-transfer → a typed error at once, and other servers still serve', { timeout: 30_000 }, async () => {
  const K = await ServerProcess.start({ engineId: 'engine-K', blockSize: 16, numBlocks: 300, dtype: 'f32', seed: 4, frameBytes: 64 * 1024 });
  try {
    const n = 4096; // 16 MiB in 256 frames
    const { transferToken } = await K.offer('big', n);
    let killed = false;
    const o = opts(K.port, 'big', transferToken, n, {
      dest: { pool: makePool({ blockSize: 16, numBlocks: 256, dtype: 'f32' }), blockTable: scatteredBlocks(n, 16, 256, 1) },
      transferTimeoutMs: 20_000,
      onProgress: () => {
        if (!killed) K.child.kill('SIGKILL');
        killed = true;
      },
    });
    // Where the stream is cut decides which: between frames 'unreachable', inside one 'corrupt' (truncated).
    await expectFailure(client.pull(o), ['unreachable', 'corrupt']);
    assert.ok(killed);
  } finally {
    await K.stop();
  }
  await goodPull('after-kill');
});
