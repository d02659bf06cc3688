// The pieces without sockets: frame reassembly under every way of splitting a byte stream, frame
// validation, transfer tokens, kv_transfer_params, and the metrics factory.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Registry } from 'prom-client';
import {
  buildPrefillResponseParams,
  createKvMetrics,
  parseDecodeParams,
  wantsRemoteDecode,
} from '../../src/kvconnector/index.ts';
import { mintTransferToken, verifyTransferToken } from '../../src/kvconnector/token.ts';
import { encodeControl, FrameReader, FrameType, HEADER_BYTES, WireError, writeHeader, type FrameHeader } from '../../src/kvconnector/wire.ts';
import { frameChecksum } from '../../src/kvconnector/checksum.ts';

function dataFrame(streamId: number, bytes: number, seed: number): Buffer {
  const f = Buffer.alloc(HEADER_BYTES + bytes);
  for (let i = 0; i < bytes; i++) f[HEADER_BYTES + i] = (i * 31 + seed) & 0xff;
  writeHeader(f, FrameType.DATA, streamId, bytes, frameChecksum(f.subarray(HEADER_BYTES)));
  return f;
}

function collect(limit = 1 << 20) {
  const frames: { h: FrameHeader; payload: Buffer; aligned: boolean }[] = [];
  const errors: WireError[] = [];
  const reader = new FrameReader(
    (t) => (t === FrameType.DATA ? limit : 16 * 1024),
    (h, payload) => frames.push({ h, payload: Buffer.from(payload), aligned: payload.byteOffset % 4 === 0 }),
    (e) => errors.push(e),
  );
  return { reader, frames, errors };
}

// Odd-length control frames between DATA frames knock later payloads off 4-byte alignment.
const stream = [
  encodeControl(FrameType.HELLO_OK, 0, { version: 1, x: 'abc' }),
  dataFrame(1, 4000, 1),
  encodeControl(FrameType.END, 3, { tokens: 7 }),
  dataFrame(1, 200_000, 2), // larger than the reader's scratch: read straight into the payload buffer
  encodeControl(FrameType.ERROR, 5, { code: 'bad-token', message: 'x' }),
  dataFrame(7, 12, 3),
  encodeControl(FrameType.CANCEL, 9),
  dataFrame(9, 70_000, 4),
];
const wire = Buffer.concat(stream);

function checkFrames(frames: ReturnType<typeof collect>['frames']) {
  assert.equal(frames.length, stream.length);
  frames.forEach((f, i) => {
    assert.ok(f.payload.equals(stream[i]!.subarray(HEADER_BYTES)), `frame ${i}`);
    if (f.h.type === FrameType.DATA) assert.ok(f.aligned, `DATA frame ${i} payload is 4-byte aligned`);
  });
}

test('frames survive any split of the byte stream (push)', () => {
  for (const step of [1, 3, 7, 16, 17, 4096, 65_536, 100_000, wire.length]) {
    const { reader, frames, errors } = collect();
    for (let o = 0; o < wire.length; o += step) reader.push(wire.subarray(o, o + step));
    assert.deepEqual(errors, []);
    checkFrames(frames);
    assert.equal(reader.midFrame, false);
  }
});

test('frames survive reads of any size through readTarget/commit (the onread path)', () => {
  let s = 12345;
  const rnd = (n: number) => ((s = (Math.imul(s, 1103515245) + 12345) >>> 0) % n) + 1;
  for (let round = 0; round < 20; round++) {
    const { reader, frames, errors } = collect();
    let o = 0;
    while (o < wire.length) {
      const target = reader.readTarget();
      const n = Math.min(target.length, rnd(round % 2 ? 50 : 90_000), wire.length - o);
      wire.copy(target, 0, o, o + n);
      reader.commit(n);
      o += n;
    }
    assert.deepEqual(errors, []);
    checkFrames(frames);
  }
});

test('a truncated stream leaves the reader mid-frame', () => {
  const { reader, frames } = collect();
  reader.push(wire.subarray(0, wire.length - 10));
  assert.equal(frames.length, stream.length - 1);
  assert.equal(reader.midFrame, true);
});

test('bad frames are rejected with a precise error, and the reader stays dead', () => {
  const cases: [string, Buffer, RegExp, string?][] = [];
  const badCrc = dataFrame(1, 100, 5);
  badCrc[HEADER_BYTES + 50]! ^= 0x10;
  cases.push(['checksum', badCrc, /checksum mismatch/]);
  const badMagic = dataFrame(1, 10, 5);
  badMagic[0] = 0x47;
  cases.push(['magic', badMagic, /magic/]);
  const badType = dataFrame(1, 10, 5);
  badType[3] = 99;
  cases.push(['type', badType, /unknown frame type 99/]);
  const tooBig = Buffer.alloc(HEADER_BYTES);
  writeHeader(tooBig, FrameType.DATA, 1, (1 << 20) + 1, 0);
  cases.push(['length', tooBig, /exceeds the limit/]);
  const version = dataFrame(1, 10, 5);
  version[2] = 1; // a peer still on CRC-32 frames
  cases.push(['version', version, /protocol version 1/, 'version']);
  for (const [what, bytes, message, field] of cases) {
    const { reader, frames, errors } = collect();
    reader.push(Buffer.concat([bytes, dataFrame(2, 10, 1)]));
    assert.equal(errors.length, 1, what);
    assert.match(errors[0]!.message, message);
    if (field) assert.equal(errors[0]!.field, field);
    assert.equal(frames.length, 0, `${what}: nothing delivered, not even the good frame after it`);
    reader.push(dataFrame(3, 10, 1));
    assert.equal(frames.length, 0);
  }
});

test('transfer tokens: random without a secret, HMAC-bound with one', () => {
  const a = mintTransferToken('eng', 'req-1');
  assert.match(a, /^[0-9a-f]{32}$/);
  assert.notEqual(a, mintTransferToken('eng', 'req-1'));
  assert.ok(verifyTransferToken(a, a, 'eng', 'req-1'));
  assert.ok(!verifyTransferToken(a.slice(0, -1) + (a.endsWith('0') ? '1' : '0'), a, 'eng', 'req-1'));

  const t = mintTransferToken('eng', 'req-1', 'k');
  assert.match(t, /^[0-9a-f]{32}\.[0-9a-f]{64}$/);
  assert.ok(verifyTransferToken(t, t, 'eng', 'req-1', 'k'));
  assert.ok(!verifyTransferToken(t, t, 'eng', 'req-2', 'k'), 'bound to the request');
  assert.ok(!verifyTransferToken(t, t, 'other', 'req-1', 'k'), 'bound to the engine');
  assert.ok(!verifyTransferToken(t, t, 'eng', 'req-1', 'wrong secret'));
  assert.ok(!verifyTransferToken('', t, 'eng', 'req-1', 'k'));
});

test('kv_transfer_params: leg-1 response is vLLM-shaped and round-trips through leg 2', () => {
  const p = buildPrefillResponseParams({
    engineId: 'e1',
    requestId: 'cmpl-1',
    blockIds: new Int32Array([4, 9, 2]),
    host: '10.0.0.5',
    port: 5600,
    transferToken: 'tok',
    blockSize: 16,
    kvDtype: 'f16',
    numTokens: 40,
    fingerprint: 'fp',
  });
  assert.deepEqual(
    Object.keys(p).filter((k) => !k.startsWith('tandem_')),
    ['do_remote_prefill', 'do_remote_decode', 'remote_engine_id', 'remote_request_id', 'remote_block_ids', 'remote_host', 'remote_port', 'tp_size'],
  );
  assert.equal(p.do_remote_prefill, true);
  assert.equal(p.do_remote_decode, false);
  assert.equal(p.tp_size, 1);
  const parsed = parseDecodeParams(JSON.parse(JSON.stringify(p)));
  assert.deepEqual(parsed, {
    kind: 'remote-prefill',
    remote: { engineId: 'e1', requestId: 'cmpl-1', host: '10.0.0.5', port: 5600, blockIds: [4, 9, 2], transferToken: 'tok', blockSize: 16, kvDtype: 'f16', numTokens: 40, fingerprint: 'fp' },
  });
});

test('kv_transfer_params: leg-2 validation follows vLLM (missing fields → run without transfer)', () => {
  const good = buildPrefillResponseParams({
    engineId: 'e1', requestId: 'r', blockIds: [1], host: 'h', port: 1, transferToken: 't', blockSize: 16, kvDtype: 'f32', numTokens: 3, fingerprint: 'f',
  }) as unknown as Record<string, unknown>;
  assert.deepEqual(parseDecodeParams(undefined), { kind: 'none' });
  assert.deepEqual(parseDecodeParams({ do_remote_decode: true, do_remote_prefill: false }), { kind: 'none' });
  for (const k of ['remote_engine_id', 'remote_request_id', 'remote_host', 'remote_port']) {
    const r = parseDecodeParams({ ...good, [k]: undefined });
    assert.equal(r.kind, 'invalid');
    assert.match((r as { error: string }).error, new RegExp(k));
    assert.equal(parseDecodeParams({ ...good, [k]: null }).kind, 'invalid');
  }
  const invalid: Record<string, unknown>[] = [
    { remote_port: 70000 },
    { remote_port: '5600' },
    { remote_host: '' },
    { remote_block_ids: [1, -2] },
    { tp_size: 2 },
    { tandem_transfer_token: undefined },
    { tandem_kv_dtype: 'bf16' },
    { tandem_block_size: 0 },
    { tandem_num_tokens: 1.5 },
  ];
  for (const over of invalid) assert.equal(parseDecodeParams({ ...good, ...over }).kind, 'invalid', JSON.stringify(over));
  assert.equal(parseDecodeParams('yes').kind, 'invalid');
  assert.equal(parseDecodeParams([1]).kind, 'invalid');
  assert.equal(wantsRemoteDecode({ do_remote_decode: true, do_remote_prefill: false, remote_engine_id: null }), true);
  assert.equal(wantsRemoteDecode(good), false);
  assert.equal(wantsRemoteDecode(null), false);
});

test('createKvMetrics is idempotent per registry', async () => {
  const r = new Registry();
  const a = createKvMetrics(r);
  const b = createKvMetrics(r);
  assert.equal(a.bytes, b.bytes);
  a.loadFailures.inc({ reason: 'timeout' });
  const text = await r.metrics();
  for (const name of ['tandem:kv_transfer_bytes_total', 'tandem:kv_transfer_tokens_total', 'tandem:kv_transfer_seconds', 'tandem:kv_load_failures_total', 'tandem:kv_leased_blocks']) {
    assert.match(text, new RegExp(`# TYPE ${name} `));
  }
  assert.match(text, /tandem:kv_load_failures_total\{reason="timeout"\} 1/);
});
