// The KV transfer wire format: length-prefixed binary frames over TCP.
//
// Every frame is a 16-byte header followed by the payload (all integers little-endian):
//   0  u8[2] magic "TK"
//   2  u8    protocol version (3)
//   3  u8    frame type
//   4  u32   stream id (0 = the connection itself; otherwise one pull/release, chosen by the client)
//   8  u32   payload length
//   12 u32   checksum of the payload (checksum.ts: 4-stream Fletcher-4 folded to 32 bits)
// Control payloads (HELLO, PULL, END, RELEASE, ERROR, ...) are small UTF-8 JSON objects, validated
// field by field. DATA payloads are binary: a 12-byte sub-header (u32 first token, u32 token count,
// u8 dtype, u8 flags, u16 piece tokens) followed by the KV of those tokens in the sender's pool
// dtype, as pieces: the tokens are cut at multiples of `piece tokens` (the sender's block size; 0 =
// one piece) and each piece is in token-major format (src/engine/kv-layout.ts). A whole-block piece
// is exactly the bytes the pool stores for that block, so a frame of many blocks is one writev of
// pool views and lands as one region per block. 16 + 12 = 28 keeps the KV bytes 4-aligned in the
// sender's frame buffer, so gatherTokens writes straight into it.
//
// The reader lands large payloads straight in one reusable, pre-faulted buffer (net's `onread`
// hook hands the kernel the exact region to fill) and checksums each read as it lands, while the
// rest of the frame is still in flight; so a 1 MiB DATA frame costs one copy out of the kernel, a
// checksum pass over cache-hot bytes and one scatter into the pool. Small frames are batched
// through a scratch. Both live in a private WebAssembly.Memory, which the checksum reads in place.

import type { KvDtype } from '../kernels/types.ts';
import { FrameChecksum, frameChecksum } from './checksum.ts';

/**
 * 3: DATA frames carry several whole-block pieces (sub-header u16 piece tokens) and the last one
 * of a pull carries DATA_FLAG_LAST instead of a separate END. 2: the frame checksum became
 * checksum.ts's Fletcher-4 (version 1 used CRC-32).
 */
export const PROTOCOL_VERSION = 3;
export const HEADER_BYTES = 16;
export const DATA_SUBHEADER_BYTES = 12;
/** DATA sub-header byte 9 (flags), bit 0: the frame carries no KV, only its size (simulated engines). */
export const DATA_FLAG_PAYLOADLESS = 1;
/** DATA flags bit 1: the pull's last frame; no END follows (one frame, one read less per pull). */
export const DATA_FLAG_LAST = 2;
const DATA_FLAGS_KNOWN = DATA_FLAG_PAYLOADLESS | DATA_FLAG_LAST;
/** A payload-less DATA frame: the sub-header, then u32 lo, u32 hi of the KV bytes it stands for. */
export const SIMULATED_SUBHEADER_BYTES = DATA_SUBHEADER_BYTES + 8;
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
/** Pulls and releases in flight on one connection; a client opening more is a protocol error. */
export const MAX_STREAMS_PER_CONNECTION = 64;

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
  /** the payload's checksum as the header declares it */
  checksum: number;
}

export function writeHeader(buf: Uint8Array, type: FrameType, streamId: number, length: number, checksum: number): void {
  const dv = new DataView(buf.buffer, buf.byteOffset, HEADER_BYTES);
  dv.setUint8(0, MAGIC_0);
  dv.setUint8(1, MAGIC_1);
  dv.setUint8(2, PROTOCOL_VERSION);
  dv.setUint8(3, type);
  dv.setUint32(4, streamId, true);
  dv.setUint32(8, length, true);
  dv.setUint32(12, checksum, true);
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
  return { type: type as FrameType, streamId: dv.getUint32(4, true), length, checksum: dv.getUint32(12, true) };
}

/** One control frame (header + JSON payload) in a fresh buffer: these are small and rare. */
export function encodeControl(type: FrameType, streamId: number, body?: object): Buffer {
  const payload = body === undefined ? Buffer.alloc(0) : Buffer.from(JSON.stringify(body), 'utf8');
  const frame = Buffer.allocUnsafe(HEADER_BYTES + payload.length);
  writeHeader(frame, type, streamId, payload.length, frameChecksum(payload));
  payload.copy(frame, HEADER_BYTES);
  return frame;
}

export const DTYPE_CODE: Record<KvDtype, number> = { f32: 1, f16: 2 };

/** A DATA frame's sub-header, decoded; `pieceTokens` 0 means the frame is one token-major piece. */
export interface DataSubheader {
  first: number;
  count: number;
  /** 0 on payload-less frames */
  dtypeCode: number;
  flags: number;
  pieceTokens: number;
}

export function writeSubheader(buf: Uint8Array, at: number, s: DataSubheader): void {
  const dv = new DataView(buf.buffer, buf.byteOffset + at, DATA_SUBHEADER_BYTES);
  dv.setUint32(0, s.first, true);
  dv.setUint32(4, s.count, true);
  dv.setUint8(8, s.dtypeCode);
  dv.setUint8(9, s.flags);
  dv.setUint16(10, s.pieceTokens, true);
}

/** Decode (and check the flags of) a DATA sub-header; `buf` holds at least DATA_SUBHEADER_BYTES. */
export function readSubheader(buf: Uint8Array): DataSubheader {
  if (buf.length < DATA_SUBHEADER_BYTES) throw new WireError('corrupt', 'DATA frame shorter than its sub-header');
  const dv = new DataView(buf.buffer, buf.byteOffset, DATA_SUBHEADER_BYTES);
  const flags = dv.getUint8(9);
  if (flags & ~DATA_FLAGS_KNOWN) throw new WireError('corrupt', `DATA frame with unknown flags 0x${flags.toString(16)}`);
  return { first: dv.getUint32(0, true), count: dv.getUint32(4, true), dtypeCode: dv.getUint8(8), flags, pieceTokens: dv.getUint16(10, true) };
}

/**
 * Visit the pieces of tokens [first, first+count): cut at multiples of pieceTokens (0: one piece).
 * The wire's piece order; each piece's bytes are token-major over its own tokens.
 */
export function forEachPiece(first: number, count: number, pieceTokens: number, visit: (start: number, n: number) => void): void {
  const end = first + count;
  for (let p = first; p < end; ) {
    const n = pieceTokens > 0 ? Math.min(pieceTokens - (p % pieceTokens), end - p) : end - p;
    visit(p, n);
    p += n;
  }
}

export function dtypeFromCode(code: number): KvDtype | undefined {
  return code === 1 ? 'f32' : code === 2 ? 'f16' : undefined;
}

/** Allocate and touch every page now: a fresh buffer faults at ~1 GB/s on first write, a warm one copies at ~11 GB/s. */
export function prefaulted(bytes: number): Buffer {
  return Buffer.allocUnsafeSlow(bytes).fill(0);
}

const SCRATCH_BYTES = 64 * 1024;
const FRAME_HEAD_BYTES = HEADER_BYTES + DATA_SUBHEADER_BYTES;
const MIN_READ_ROOM = 8 * 1024;
const WASM_PAGE = 64 * 1024;
/** Large payloads land here in the reader's memory, after the scratch. */
const BIG_AT = SCRATCH_BYTES;

/**
 * Where a large DATA frame's payload goes instead of the reader's buffer: its sub-header into a
 * small buffer, the rest, in order, into `regions` of `checksum.memory` (the destination KV
 * blocks). `checksum` must be this reader's alone: it runs across reads.
 */
export interface Landing {
  regions: [offset: number, bytes: number][];
  checksum: FrameChecksum;
}

/**
 * Reassembles frames from a byte stream. Feed it either through net's `onread`
 * (`{ buffer: () => r.readTarget(), callback: (n) => r.commit(n) }`, zero extra copies) or with
 * `push(chunk)`. `onFrame` gets each checksum-verified frame; the payload view is only valid until
 * it returns (the buffer is reused for the next frame). After the first error the reader is dead.
 */
export class FrameReader {
  private readonly memory = new WebAssembly.Memory({ initial: SCRATCH_BYTES / WASM_PAGE });
  private readonly checksum = new FrameChecksum(this.memory);
  private scratch = Buffer.from(this.memory.buffer, 0, SCRATCH_BYTES).fill(0);
  private start = 0;
  private end = 0;
  private big: Buffer | null = null;
  private bigHeader: FrameHeader | null = null;
  private bigFilled = 0;
  private failed = false;
  private readonly sink = Buffer.allocUnsafe(4096);
  /**
   * This connection carries large frames: read each header on its own, so that a large payload
   * goes where it belongs from its first byte instead of partly through the scratch (copying into
   * a SharedArrayBuffer pool is a slow relaxed memmove; one more read per frame is not).
   */
  private headerFirst = false;
  /** a DATA frame being landed in place: its segments (sub-header, then regions) and progress */
  private landing: { h: FrameHeader; head: Buffer; segments: Buffer[]; at: number[]; seg: number; filled: number; got: number; ck: FrameChecksum } | null = null;

  /**
   * @param land asked for every DATA frame too large for the scratch once its sub-header is in,
   *   before the rest of its payload is read; returning a Landing makes the KV land in place, and
   *   onFrame then gets only the sub-header (with `landed` true). The checksum is still verified
   *   (over the sub-header too) before onFrame.
   */
  constructor(
    private readonly maxPayload: (type: FrameType) => number,
    private readonly onFrame: (h: FrameHeader, payload: Buffer, landed: boolean) => void,
    private readonly onError: (err: WireError) => void,
    private readonly land?: (h: FrameHeader, subheader: Buffer) => Landing | null,
  ) {}

  /** Bytes of an incomplete frame are buffered (an EOF now means a truncated frame). */
  get midFrame(): boolean {
    return !this.failed && (this.bigHeader !== null || this.landing !== null || this.end > this.start);
  }

  get dead(): boolean {
    return this.failed;
  }

  /** Where the next read should land. */
  readTarget(): Buffer {
    if (this.failed) return this.sink;
    if (this.landing) return this.landing.segments[this.landing.seg]!.subarray(this.landing.filled);
    if (this.bigHeader) return this.big!.subarray(this.bigFilled, this.bigHeader.length);
    if (this.scratch.length - this.end < MIN_READ_ROOM && this.start > 0) {
      this.scratch.copy(this.scratch, 0, this.start, this.end);
      this.end -= this.start;
      this.start = 0;
    }
    // Header and DATA sub-header in one read: the landing is decided from both.
    if (this.headerFirst && this.end - this.start < FRAME_HEAD_BYTES) return this.scratch.subarray(this.end, this.start + FRAME_HEAD_BYTES);
    return this.scratch.subarray(this.end);
  }

  /** `n` bytes were written at the start of the last readTarget(). */
  commit(n: number): void {
    if (this.failed || n <= 0) return;
    if (this.landing) return this.landed(n);
    if (this.bigHeader) {
      // Checksum what just landed while it is in cache and the rest of the frame is on its way.
      this.checksum.updateAt(BIG_AT + this.bigFilled, n);
      this.bigFilled += n;
      if (this.bigFilled === this.bigHeader.length) {
        const h = this.bigHeader;
        this.bigHeader = null;
        this.deliver(h, this.big!.subarray(0, h.length), this.checksum.end());
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
      if (HEADER_BYTES + h.length > this.scratch.length) this.headerFirst = true;
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
        this.deliver(h, this.scratch.subarray(at, at + h.length), this.checksum.begin().updateAt(at, h.length).end());
        continue;
      }
      if (HEADER_BYTES + h.length <= this.scratch.length) break; // small frame: wait for the rest
      const mayLand = h.type === FrameType.DATA && this.land !== undefined;
      if (mayLand && have < DATA_SUBHEADER_BYTES) break; // the landing depends on the sub-header
      let landing: Landing | null = null;
      try {
        const at = this.start + HEADER_BYTES;
        landing = mayLand ? this.land!(h, this.scratch.subarray(at, at + DATA_SUBHEADER_BYTES)) : null;
      } catch (err) {
        this.fail(new WireError('corrupt', `cannot place a DATA frame of ${h.length} bytes: ${(err as Error).message}`));
        return;
      }
      if (landing) {
        this.startLanding(h, landing);
        return;
      }
      // Large frame: move what we have into the payload buffer; later reads land there directly.
      this.ensureBig(h.length);
      this.scratch.copy(this.big!, 0, this.start + HEADER_BYTES, this.end);
      this.bigFilled = have;
      this.bigHeader = h;
      this.checksum.begin().updateAt(BIG_AT, have);
      this.start = this.end = 0;
      return;
    }
    if (this.start === this.end) this.start = this.end = 0;
  }

  private startLanding(h: FrameHeader, l: Landing): void {
    const head = Buffer.alloc(DATA_SUBHEADER_BYTES);
    const mem = l.checksum.memory.buffer;
    const segments = [head, ...l.regions.map(([offset, bytes]) => Buffer.from(mem, offset, bytes))];
    const total = segments.reduce((n, b) => n + b.length, 0);
    if (total !== h.length) throw new Error(`Landing of ${total} bytes for a ${h.length}-byte payload`);
    this.landing = { h, head, segments, at: [-1, ...l.regions.map(([offset]) => offset)], seg: 0, filled: 0, got: 0, ck: l.checksum.begin() };
    // What already arrived with the header goes where later reads will.
    let from = this.start + HEADER_BYTES;
    this.start = this.end;
    while (from < this.end && this.landing) {
      const target = this.readTarget();
      const n = Math.min(target.length, this.end - from);
      this.scratch.copy(target, 0, from, from + n);
      from += n;
      this.landed(n);
    }
    this.start = this.end = 0;
  }

  private landed(n: number): void {
    const l = this.landing!;
    const seg = l.segments[l.seg]!;
    // The sub-header is fed from JS; the regions are checksummed in place in the pool's memory.
    if (l.seg === 0) l.ck.update(seg.subarray(l.filled, l.filled + n));
    else l.ck.updateAt(l.at[l.seg]! + l.filled, n);
    l.filled += n;
    l.got += n;
    if (l.filled === seg.length) {
      l.seg++;
      l.filled = 0;
    }
    if (l.got === l.h.length) {
      this.landing = null;
      this.deliver(l.h, l.head, l.ck.end(), true);
    }
  }

  private ensureBig(bytes: number): void {
    if (this.big && this.big.length >= bytes) return;
    const want = Math.max(bytes, (this.big?.length ?? 0) * 2);
    const have = this.memory.buffer.byteLength;
    if (BIG_AT + want > have) this.memory.grow(Math.ceil((BIG_AT + want - have) / WASM_PAGE));
    // grow() detached the old views; the bytes stay where they were.
    this.scratch = Buffer.from(this.memory.buffer, 0, SCRATCH_BYTES);
    this.big = Buffer.from(this.memory.buffer, BIG_AT, this.memory.buffer.byteLength - BIG_AT);
    this.big.fill(0, have - BIG_AT > 0 ? have - BIG_AT : 0); // touch new pages now, not during the transfer
  }

  private deliver(h: FrameHeader, payload: Buffer, checksum: number, landed = false): void {
    if (checksum !== h.checksum) {
      this.fail(new WireError('corrupt', `checksum mismatch on a ${frameTypeName(h.type)} frame of ${h.length} bytes (stream ${h.streamId})`));
      return;
    }
    try {
      this.onFrame(h, payload, landed);
    } catch (err) {
      this.fail(err instanceof WireError ? err : new WireError('corrupt', `bad ${frameTypeName(h.type)} frame: ${(err as Error).message}`));
    }
  }

  private fail(err: WireError): void {
    if (this.failed) return;
    this.failed = true;
    this.big = null;
    this.landing = null;
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

/** An optional boolean field (absent = false). */
export function bool(o: Record<string, unknown>, key: string, what: string): boolean {
  const v = o[key];
  if (v !== undefined && typeof v !== 'boolean') throw new WireError('corrupt', `${what}: '${key}' must be a boolean`);
  return v === true;
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
