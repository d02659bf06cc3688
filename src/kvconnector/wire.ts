// The KV transfer wire format: length-prefixed binary frames over TCP.
//
// Every frame is a 16-byte header followed by the payload (all integers little-endian):
//   0  u8[2] magic "TK"
//   2  u8    protocol version (1)
//   3  u8    frame type
//   4  u32   stream id (0 = the connection itself; otherwise one pull/release, chosen by the client)
//   8  u32   payload length
//   12 u32   CRC-32 (zlib polynomial) of the payload
// Control payloads (HELLO, PULL, END, RELEASE, ERROR, ...) are small UTF-8 JSON objects, validated
// field by field. DATA payloads are binary: a 12-byte sub-header (u32 first token, u32 token count,
// u8 dtype, 3 zero bytes) followed by the KV of those tokens in token-major format
// (src/engine/kv-layout.ts) in the sender's pool dtype. 16 + 12 = 28 keeps the KV bytes 4-aligned
// in the sender's frame buffer, so gatherTokens writes straight into it.
//
// The reader lands large payloads straight in one reusable, pre-faulted buffer (net's `onread`
// hook hands the kernel the exact region to fill), so a 1 MiB DATA frame costs one copy out of the
// kernel, one CRC pass and one scatter into the pool; small frames are batched through a scratch.

import { crc32 } from 'node:zlib';
import type { KvDtype } from '../kernels/types.ts';

export const PROTOCOL_VERSION = 1;
export const HEADER_BYTES = 16;
export const DATA_SUBHEADER_BYTES = 12;
const MAGIC_0 = 0x54; // 'T'
const MAGIC_1 = 0x4b; // 'K'

export const FrameType = {
  HELLO: 1,
  HELLO_OK: 2,
  PULL: 3,
  DATA: 4,
  END: 5,
  RELEASE: 6,
  ERROR: 7,
  /** client → server: stop sending this stream (the puller timed out or was aborted) */
  CANCEL: 8,
} as const;
export type FrameType = (typeof FrameType)[keyof typeof FrameType];
const FRAME_TYPE_NAMES = new Map<number, string>(Object.entries(FrameType).map(([k, v]) => [v, k]));

export function frameTypeName(t: number): string {
  return FRAME_TYPE_NAMES.get(t) ?? `type ${t}`;
}

/** Control frames carry a few hundred bytes of JSON; anything bigger is garbage. */
export const MAX_CONTROL_PAYLOAD = 16 * 1024;
/** Hard ceiling for one DATA frame, whatever a peer asks for. */
export const MAX_DATA_PAYLOAD = 64 * 1024 * 1024;
/** Default receive limit a client advertises; the server sizes frames below it. */
export const DEFAULT_MAX_FRAME_BYTES = 16 * 1024 * 1024;
export const MAX_REQUEST_ID_LENGTH = 512;

/** A protocol violation by the peer: the connection is dropped after reporting it. */
export class WireError extends Error {
  override name = 'WireError';
  constructor(
    readonly code: 'corrupt' | 'incompatible',
    message: string,
    readonly field?: string,
  ) {
    super(message);
  }
}

export interface FrameHeader {
  type: FrameType;
  streamId: number;
  length: number;
  crc: number;
}

export function writeHeader(buf: Uint8Array, type: FrameType, streamId: number, length: number, crc: number): void {
  const dv = new DataView(buf.buffer, buf.byteOffset, HEADER_BYTES);
  dv.setUint8(0, MAGIC_0);
  dv.setUint8(1, MAGIC_1);
  dv.setUint8(2, PROTOCOL_VERSION);
  dv.setUint8(3, type);
  dv.setUint32(4, streamId, true);
  dv.setUint32(8, length, true);
  dv.setUint32(12, crc, true);
}

export function readHeader(buf: Uint8Array, offset: number, maxPayload: (type: FrameType) => number): FrameHeader {
  const dv = new DataView(buf.buffer, buf.byteOffset + offset, HEADER_BYTES);
  if (dv.getUint8(0) !== MAGIC_0 || dv.getUint8(1) !== MAGIC_1) throw new WireError('corrupt', 'bad frame magic (not a tandem KV transfer peer, or the stream lost sync)');
  const version = dv.getUint8(2);
  if (version !== PROTOCOL_VERSION) {
    throw new WireError('incompatible', `protocol version ${version}, this side speaks ${PROTOCOL_VERSION}`, 'version');
  }
  const type = dv.getUint8(3);
  if (!FRAME_TYPE_NAMES.has(type)) throw new WireError('corrupt', `unknown frame type ${type}`);
  const length = dv.getUint32(8, true);
  const limit = maxPayload(type as FrameType);
  if (length > limit) throw new WireError('corrupt', `${frameTypeName(type)} frame of ${length} bytes exceeds the limit of ${limit}`);
  return { type: type as FrameType, streamId: dv.getUint32(4, true), length, crc: dv.getUint32(12, true) };
}

/** One control frame (header + JSON payload) in a fresh buffer: these are small and rare. */
export function encodeControl(type: FrameType, streamId: number, body?: object): Buffer {
  const payload = body === undefined ? Buffer.alloc(0) : Buffer.from(JSON.stringify(body), 'utf8');
  const frame = Buffer.allocUnsafe(HEADER_BYTES + payload.length);
  writeHeader(frame, type, streamId, payload.length, crc32(payload));
  payload.copy(frame, HEADER_BYTES);
  return frame;
}

export const DTYPE_CODE: Record<KvDtype, number> = { f32: 1, f16: 2 };

export function dtypeFromCode(code: number): KvDtype | undefined {
  return code === 1 ? 'f32' : code === 2 ? 'f16' : undefined;
}

/** Allocate and touch every page now: a fresh buffer faults at ~1 GB/s on first write, a warm one copies at ~11 GB/s. */
export function prefaulted(bytes: number): Buffer {
  return Buffer.allocUnsafeSlow(bytes).fill(0);
}

const SCRATCH_BYTES = 64 * 1024;
const MIN_READ_ROOM = 8 * 1024;

/**
 * Reassembles frames from a byte stream. Feed it either through net's `onread`
 * (`{ buffer: () => r.readTarget(), callback: (n) => r.commit(n) }`, zero extra copies) or with
 * `push(chunk)`. `onFrame` gets each checksum-verified frame; the payload view is only valid until
 * it returns (the buffer is reused for the next frame). After the first error the reader is dead.
 */
export class FrameReader {
  private scratch = prefaulted(SCRATCH_BYTES);
  private start = 0;
  private end = 0;
  private big: Buffer | null = null;
  private bigHeader: FrameHeader | null = null;
  private bigFilled = 0;
  private failed = false;
  private readonly sink = Buffer.allocUnsafe(4096);

  constructor(
    private readonly maxPayload: (type: FrameType) => number,
    private readonly onFrame: (h: FrameHeader, payload: Buffer) => void,
    private readonly onError: (err: WireError) => void,
  ) {}

  /** Bytes of an incomplete frame are buffered (an EOF now means a truncated frame). */
  get midFrame(): boolean {
    return !this.failed && (this.bigHeader !== null || this.end > this.start);
  }

  get dead(): boolean {
    return this.failed;
  }

  /** Where the next read should land. */
  readTarget(): Buffer {
    if (this.failed) return this.sink;
    if (this.bigHeader) return this.big!.subarray(this.bigFilled, this.bigHeader.length);
    if (this.scratch.length - this.end < MIN_READ_ROOM && this.start > 0) {
      this.scratch.copy(this.scratch, 0, this.start, this.end);
      this.end -= this.start;
      this.start = 0;
    }
    return this.scratch.subarray(this.end);
  }

  /** `n` bytes were written at the start of the last readTarget(). */
  commit(n: number): void {
    if (this.failed || n <= 0) return;
    if (this.bigHeader) {
      this.bigFilled += n;
      if (this.bigFilled === this.bigHeader.length) {
        const h = this.bigHeader;
        this.bigHeader = null;
        this.deliver(h, this.big!.subarray(0, h.length));
      }
      return;
    }
    this.end += n;
    this.parse();
  }

  push(chunk: Uint8Array): void {
    let off = 0;
    while (off < chunk.length && !this.failed) {
      const target = this.readTarget();
      const n = Math.min(target.length, chunk.length - off);
      target.set(chunk.subarray(off, off + n));
      off += n;
      this.commit(n);
    }
  }

  private parse(): void {
    while (!this.failed) {
      const avail = this.end - this.start;
      if (avail < HEADER_BYTES) break;
      let h: FrameHeader;
      try {
        h = readHeader(this.scratch, this.start, this.maxPayload);
      } catch (err) {
        this.fail(err as WireError);
        return;
      }
      const have = avail - HEADER_BYTES;
      if (have >= h.length) {
        let at = this.start + HEADER_BYTES;
        this.start = at + h.length;
        // Typed-array views of KV need 4-byte alignment: slide a misaligned payload back over its
        // own (already parsed) header rather than copying it elsewhere.
        const skew = at & 3;
        if (skew) {
          this.scratch.copyWithin(at - skew, at, at + h.length);
          at -= skew;
        }
        this.deliver(h, this.scratch.subarray(at, at + h.length));
        continue;
      }
      if (HEADER_BYTES + h.length <= this.scratch.length) break; // small frame: wait for the rest
      // Large frame: move what we have into the payload buffer; later reads land there directly.
      if (!this.big || this.big.length < h.length) this.big = prefaulted(Math.max(h.length, (this.big?.length ?? 0) * 2));
      this.scratch.copy(this.big, 0, this.start + HEADER_BYTES, this.end);
      this.bigFilled = have;
      this.bigHeader = h;
      this.start = this.end = 0;
      return;
    }
    if (this.start === this.end) this.start = this.end = 0;
  }

  private deliver(h: FrameHeader, payload: Buffer): void {
    if (crc32(payload) !== h.crc) {
      this.fail(new WireError('corrupt', `CRC mismatch on a ${frameTypeName(h.type)} frame of ${h.length} bytes (stream ${h.streamId})`));
      return;
    }
    try {
      this.onFrame(h, payload);
    } catch (err) {
      this.fail(err instanceof WireError ? err : new WireError('corrupt', `bad ${frameTypeName(h.type)} frame: ${(err as Error).message}`));
    }
  }

  private fail(err: WireError): void {
    if (this.failed) return;
    this.failed = true;
    this.big = null;
    this.onError(err);
  }
}

// ---- control payload validation -------------------------------------------------------------

export function parseControl(payload: Uint8Array, what: string): Record<string, unknown> {
  let v: unknown;
  try {
    v = JSON.parse(Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength).toString('utf8'));
  } catch {
    throw new WireError('corrupt', `${what}: payload is not JSON`);
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new WireError('corrupt', `${what}: payload is not an object`);
  return v as Record<string, unknown>;
}

export function str(o: Record<string, unknown>, key: string, what: string, maxLength = MAX_REQUEST_ID_LENGTH): string {
  const v = o[key];
  if (typeof v !== 'string' || v.length === 0 || v.length > maxLength) {
    throw new WireError('corrupt', `${what}: '${key}' must be a non-empty string of at most ${maxLength} characters`);
  }
  return v;
}

export function int(o: Record<string, unknown>, key: string, what: string, min = 0, max = 0xffffffff): number {
  const v = o[key];
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    throw new WireError('corrupt', `${what}: '${key}' must be an integer in [${min}, ${max}]`);
  }
  return v;
}

/** What two engines must share for one's KV to be valid in the other (vLLM's handshake compat hash, spelled out). */
export interface KvCompat {
  /** model architecture, e.g. 'llama' */
  architecture: string;
  nLayers: number;
  nKvHeads: number;
  headDim: number;
  /** weights fingerprint (src/model/fingerprint.ts): same weights ⇒ same KV */
  fingerprint: string;
}

const COMPAT_FIELDS = ['architecture', 'nLayers', 'nKvHeads', 'headDim', 'fingerprint'] as const;

export function parseCompat(o: unknown, what: string): KvCompat {
  if (o === null || typeof o !== 'object') throw new WireError('corrupt', `${what}: 'compat' must be an object`);
  const c = o as Record<string, unknown>;
  return {
    architecture: str(c, 'architecture', what, 64),
    nLayers: int(c, 'nLayers', what, 1, 4096),
    nKvHeads: int(c, 'nKvHeads', what, 1, 4096),
    headDim: int(c, 'headDim', what, 1, 65536),
    fingerprint: str(c, 'fingerprint', what, 256),
  };
}

/** The first field where the engines differ, or null when compatible. */
export function compatMismatch(local: KvCompat, remote: KvCompat): { field: string; local: unknown; remote: unknown } | null {
  for (const f of COMPAT_FIELDS) {
    if (local[f] !== remote[f]) return { field: f, local: local[f], remote: remote[f] };
  }
  return null;
}
