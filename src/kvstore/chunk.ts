// The stored form of one chunk: a 64-byte header, then the token-major KV payload
// (src/engine/kv-layout.ts). The header makes every stored object self-checking, so a disk or Redis
// object that is truncated, bit-flipped, or was written for another key is caught before it reaches
// the block pool — a bad chunk costs a recompute, never a wrong answer.
//
//   off  size  field
//     0     4  magic "TKVC"
//     4     2  version (1), u16 LE
//     6     1  dtype (0 = f32, 1 = f16)
//     7     1  reserved (0)
//     8     4  token count, u32 LE
//    12     4  payload length in bytes, u32 LE
//    16    32  key (the chunk's raw sha256 chain hash)
//    48     4  CRC-32 of header bytes [0, 48) followed by the payload, u32 LE
//    52    12  reserved (0) — pads the payload to a 64-byte boundary so typed views need no copy
import * as zlib from 'node:zlib';
import type { KvDtype } from '../kernels/types.ts';

// zlib.crc32 is native (several GB/s) but only exists from Node 20.15; package.json allows 20.10.
const CRC_TABLE = new Int32Array(256).map((_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c;
});
function crc32Js(data: Uint8Array, value = 0): number {
  let c = ~value;
  for (let i = 0; i < data.length; i++) c = CRC_TABLE[(c ^ data[i]!) & 0xff]! ^ (c >>> 8);
  return ~c >>> 0;
}
const crc32: (data: Uint8Array, value?: number) => number =
  typeof (zlib as { crc32?: unknown }).crc32 === 'function' ? (zlib as unknown as { crc32: typeof crc32Js }).crc32 : crc32Js;

export const HEADER_BYTES = 64;
const MAGIC = 0x43564b54; // "TKVC" read as u32 LE
const VERSION = 1;

export interface EncodedChunk {
  header: Uint8Array;
  payload: Uint8Array;
}

export function encodedBytes(c: EncodedChunk): number {
  return c.header.byteLength + c.payload.byteLength;
}

export function encodeHeader(key: string, dtype: KvDtype, tokens: number, payload: Uint8Array): Uint8Array {
  if (payload.byteLength > 0xffffffff) throw new RangeError(`chunk payload of ${payload.byteLength} bytes exceeds 4 GiB`);
  const h = Buffer.alloc(HEADER_BYTES);
  h.writeUInt32LE(MAGIC, 0);
  h.writeUInt16LE(VERSION, 4);
  h.writeUInt8(dtype === 'f16' ? 1 : 0, 6);
  h.writeUInt32LE(tokens, 8);
  h.writeUInt32LE(payload.byteLength, 12);
  h.write(key, 16, 32, 'hex');
  h.writeUInt32LE(crc32(payload, crc32(h.subarray(0, 48))), 48);
  return h;
}

export function encodeChunk(key: string, dtype: KvDtype, tokens: number, payload: Uint8Array): EncodedChunk {
  return { header: encodeHeader(key, dtype, tokens, payload), payload };
}

/** Why a stored object was rejected; also the `reason` label of kv_store_errors_total. */
export type ChunkDefect = 'truncated' | 'corrupt';

export class ChunkError extends Error {
  override name = 'ChunkError';
  constructor(
    readonly reason: ChunkDefect,
    message: string,
  ) {
    super(message);
  }
}

/** Validate a stored object against what the reader expects and return its payload (a view, no copy). */
export function decodeChunk(
  bytes: Uint8Array,
  expect: { key: string; dtype: KvDtype; tokens: number; payloadBytes: number },
): Uint8Array {
  if (bytes.byteLength < HEADER_BYTES) throw new ChunkError('truncated', `object has ${bytes.byteLength} bytes, less than a header`);
  const h = Buffer.from(bytes.buffer, bytes.byteOffset, HEADER_BYTES);
  if (h.readUInt32LE(0) !== MAGIC) throw new ChunkError('corrupt', 'bad magic');
  if (h.readUInt16LE(4) !== VERSION) throw new ChunkError('corrupt', `unknown chunk version ${h.readUInt16LE(4)}`);
  const dtype = h.readUInt8(6) === 1 ? 'f16' : h.readUInt8(6) === 0 ? 'f32' : undefined;
  const tokens = h.readUInt32LE(8);
  const payloadBytes = h.readUInt32LE(12);
  const key = h.toString('hex', 16, 48);
  if (bytes.byteLength < HEADER_BYTES + payloadBytes) {
    throw new ChunkError('truncated', `object has ${bytes.byteLength - HEADER_BYTES} payload bytes, header says ${payloadBytes}`);
  }
  if (bytes.byteLength > HEADER_BYTES + payloadBytes) throw new ChunkError('corrupt', 'trailing bytes after payload');
  const payload = bytes.subarray(HEADER_BYTES, HEADER_BYTES + payloadBytes);
  if (crc32(payload, crc32(h.subarray(0, 48))) !== h.readUInt32LE(48)) throw new ChunkError('corrupt', 'CRC-32 mismatch');
  // A checksum-valid object with other metadata is a different chunk (or a store written with another
  // layout); reject it the same way so the prefix stops and the engine recomputes.
  if (key !== expect.key) throw new ChunkError('corrupt', `object holds key ${key.slice(0, 12)}…, expected ${expect.key.slice(0, 12)}…`);
  if (dtype !== expect.dtype) throw new ChunkError('corrupt', `dtype ${dtype ?? '?'} ≠ ${expect.dtype}`);
  if (tokens !== expect.tokens || payloadBytes !== expect.payloadBytes) {
    throw new ChunkError('corrupt', `${tokens} tokens / ${payloadBytes} bytes, expected ${expect.tokens} / ${expect.payloadBytes}`);
  }
  return payload;
}
