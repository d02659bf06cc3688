// The prefill side of the KV connector: serves leased KV blocks to decode engines.
//
// After a leg-1 prefill the engine calls offer(): the prompt's blocks stay readable under a lease
// until a decode engine has pulled them ('pulled'), said it needs none ('not-needed'), or the lease
// runs out ('expired'); then onRelease tells the engine to free them. Blocks are only read while a
// lease is live and each DATA frame is gathered synchronously, so a block freed by an expiry is
// never read afterwards: a pull still running when its lease expires gets an ERROR instead.

import net from 'node:net';
import { performance } from 'node:perf_hooks';
import type { Registry } from 'prom-client';
import { eltBytes, gatherTokens, kvDimOf, poolRowOffset, tokenMajorBytes, type PoolRef } from '../engine/kv-layout.ts';
import { FrameBufferPool } from './buffers.ts';
import { anyChecksum, checksumIn, frameChecksum } from './checksum.ts';
import type { KvFailureReason } from './errors.ts';
import { createKvMetrics, type KvMetrics } from './metrics.ts';
import { mintTransferToken, verifyTransferToken } from './token.ts';
import {
  bool,
  compatMismatch,
  DATA_FLAG_LAST,
  DATA_FLAG_PAYLOADLESS,
  DATA_SUBHEADER_BYTES,
  DTYPE_CODE,
  encodeControl,
  forEachPiece,
  FrameReader,
  FrameType,
  frameTypeName,
  HEADER_BYTES,
  int,
  MAX_CONTROL_PAYLOAD,
  MAX_DATA_PAYLOAD,
  MAX_STREAMS_PER_CONNECTION,
  parseCompat,
  parseControl,
  PROTOCOL_VERSION,
  SIMULATED_SUBHEADER_BYTES,
  str,
  WireError,
  writeHeader,
  writeSubheader,
  type FrameHeader,
  type KvCompat,
} from './wire.ts';

export type LeaseReleaseReason = 'pulled' | 'not-needed' | 'expired' | 'closed';

export interface KvTransferServerOptions {
  /** bind address (default 127.0.0.1) */
  host?: string;
  /** 0 = any free port */
  port?: number;
  engineId: string;
  compat: KvCompat;
  /** the engine's KV pool, looked up per frame (the wasm memory's buffer may be replaced when it grows); optional with simulatedLink */
  pool?: () => PoolRef;
  /** --kv-secret: transfer tokens become HMACs bound to engine and request */
  secret?: string;
  /** registers the tandem:kv_* metrics here (shared with the engine: see createKvMetrics) */
  registry?: Registry;
  /** the engine frees the lease's blocks when this fires */
  onRelease?: (requestId: string, reason: LeaseReleaseReason) => void;
  log?: (level: 'info' | 'warn', message: string) => void;
  /**
   * KV bytes per DATA frame sent straight from the pool (default 4 MiB: a pull of up to that is one
   * frame and one writev). Frames gathered through a buffer (pools of tiny blocks) are ≤ 1 MiB.
   */
  frameBytes?: number;
  /** gathered DATA frames per stream queued in the socket before gathering more (default 2: double buffering); zero-copy frames queue up to 8 MiB */
  framesInFlight?: number;
  maxConnections?: number;
  /** a connection that has not said HELLO by then is dropped (default 10 s) */
  handshakeTimeoutMs?: number;
  /**
   * Simulated engines (no real KV): DATA frames carry no payload, only the size it would have
   * (tokens × bytesPerToken), and leave paced by one shared link of this bandwidth, plus latencyMs
   * once per transfer. Leases, tokens, handshake and errors are the real ones. Decode engines must
   * pull with `simulated: true`; the handshake refuses a mix of real and simulated peers.
   */
  simulatedLink?: SimulatedLink;
}

export interface SimulatedLink {
  /** KV bytes one token would occupy on the wire (2 · layers · KV heads · head dim · dtype bytes) */
  bytesPerToken: number;
  bandwidthBytesPerSec: number;
  /** added once per transfer (first byte out → first byte in) */
  latencyMs: number;
}

export interface LeaseOffer {
  requestId: string;
  /** the sequence's block table: token p lives in block blockIds[floor(p / blockSize)] */
  blockIds: ArrayLike<number>;
  /** tokens of KV computed for this request (the prompt length) */
  numTokens: number;
  leaseMs: number;
}

interface Lease {
  requestId: string;
  token: string;
  blockIds: Int32Array;
  numTokens: number;
  timer: NodeJS.Timeout;
  streams: Set<ServeStream>;
  pulled: boolean;
  released: boolean;
  /** frames that point into this lease's blocks and are not yet in the kernel (zero-copy sends) */
  framesQueued: number;
  /** set when released while frames were queued: the engine hears of it once they drain */
  pendingRelease: LeaseReleaseReason | null;
}

interface ServeStream {
  id: number;
  conn: Conn;
  cancelled: boolean;
  wake: (() => void) | null;
  /** settle functions of this stream's frames still queued in the socket */
  queued: Set<() => void>;
}

interface Conn {
  socket: net.Socket;
  reader: FrameReader;
  hello: boolean;
  /** the client proved it holds the same model; without it the connection may only RELEASE */
  compatible: boolean;
  maxFrameBytes: number;
  streams: Map<number, ServeStream>;
  closed: boolean;
  handshakeTimer: NodeJS.Timeout | null;
}

/** Smallest gathered DATA frame worth cutting a transfer into. */
const MIN_FRAME_BYTES = 256 * 1024;
/** Gathered frames are copies in pooled buffers: keep them at most this big (and pipeline them). */
const MAX_GATHERED_FRAME_BYTES = 1 << 20;
const DEFAULT_FRAME_BYTES = 4 << 20;
/**
 * Zero-copy frames are views of the pool and cost no memory to queue, so a stream may queue this
 * much: the sender then hands the kernel a whole transfer of up to this size without waking up
 * per frame (each wake-up is a round trip through both event loops). The cap keeps one large
 * transfer from queuing far ahead of the other streams on its connection.
 */
const ZERO_COPY_QUEUE_BYTES = 8 * 1024 * 1024;
/** Below this many contiguous bytes per (block, layer, K|V) run, gather instead of writev. */
const MIN_ZERO_COPY_RUN = 4096;
/** Remember this many expired request ids, to answer 'lease-expired' rather than 'unknown-request'. */
const EXPIRED_MEMORY = 4096;
/** A simulated transfer is announced in at most this many DATA frames (progress granularity; each is one timer). */
const SIMULATED_FRAMES = 4;

export class KvTransferServer {
  private server: net.Server | null = null;
  private readonly leases = new Map<string, Lease>();
  private readonly expired = new Set<string>();
  private readonly conns = new Set<Conn>();
  private readonly buffers = new FrameBufferPool();
  private readonly metrics: KvMetrics | null;
  private readonly frameBytes: number;
  private readonly framesInFlight: number;
  private readonly link: SimulatedLink | null;
  /** simulated link: when (performance.now() ms) the last scheduled byte has left */
  private linkBusyUntil = 0;
  private boundPort = 0;

  constructor(private readonly opts: KvTransferServerOptions) {
    if (!opts.engineId) throw new TypeError('KvTransferServer: engineId is required');
    this.link = opts.simulatedLink ? validateLink(opts.simulatedLink) : null;
    if (!opts.pool && !this.link) throw new TypeError('KvTransferServer: pool is required (unless the link is simulated)');
    this.metrics = opts.registry ? createKvMetrics(opts.registry) : null;
    this.frameBytes = Math.max(4096, Math.min(opts.frameBytes ?? DEFAULT_FRAME_BYTES, MAX_DATA_PAYLOAD - DATA_SUBHEADER_BYTES));
    this.framesInFlight = Math.max(1, opts.framesInFlight ?? 2);
  }

  get port(): number {
    return this.boundPort;
  }

  /** Listen; resolves with the bound port (the one to advertise as remote_port). */
  async start(): Promise<number> {
    if (this.server) throw new Error('KvTransferServer already started');
    const l = this.opts.pool?.().layout;
    const c = this.opts.compat;
    if (l && !this.link && (l.nLayers !== c.nLayers || l.nKvHeads !== c.nKvHeads || l.headDim !== c.headDim)) {
      throw new TypeError(`KvTransferServer: pool layout (${l.nLayers}×${l.nKvHeads}×${l.headDim}) does not match compat (${c.nLayers}×${c.nKvHeads}×${c.headDim})`);
    }
    const server = net.createServer({ noDelay: true }, (socket) => this.accept(socket));
    server.maxConnections = this.opts.maxConnections ?? 256;
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.opts.port ?? 0, this.opts.host ?? '127.0.0.1', () => {
        server.off('error', reject);
        resolve();
      });
    });
    server.on('error', (err) => this.log('warn', `listener error: ${err.message}`));
    this.boundPort = (server.address() as net.AddressInfo).port;
    return this.boundPort;
  }

  /** Stop listening, drop connections, and release every lease with reason 'closed'. */
  async close(): Promise<void> {
    const server = this.server;
    this.server = null;
    for (const c of this.conns) this.dropConn(c);
    for (const lease of [...this.leases.values()]) this.release(lease, 'closed');
    this.buffers.clear();
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  /** Hold a finished prefill's blocks for a decode engine; the token goes into kv_transfer_params. */
  offer(o: LeaseOffer): { transferToken: string } {
    // A simulated engine may have no pool: then the block table is taken as given.
    const layout = this.opts.pool?.().layout;
    if (typeof o.requestId !== 'string' || o.requestId.length === 0 || o.requestId.length > 512) {
      throw new TypeError('offer: requestId must be a non-empty string of at most 512 characters');
    }
    if (this.leases.has(o.requestId)) throw new Error(`offer: request ${o.requestId} already has a lease`);
    if (!Number.isInteger(o.numTokens) || o.numTokens < 0) throw new RangeError(`offer: numTokens must be a non-negative integer`);
    if (!(o.leaseMs > 0) || !Number.isFinite(o.leaseMs)) throw new RangeError('offer: leaseMs must be a positive number');
    const needed = layout ? Math.ceil(o.numTokens / layout.blockSize) : o.blockIds.length;
    if (o.blockIds.length < needed) throw new RangeError(`offer: ${o.numTokens} tokens need ${needed} blocks, got ${o.blockIds.length}`);
    const numBlocks = layout?.numBlocks ?? 2 ** 31;
    const blockIds = Int32Array.from({ length: needed }, (_, i) => {
      const b = o.blockIds[i]!;
      if (!Number.isInteger(b) || b < 0 || b >= numBlocks) throw new RangeError(`offer: block id ${b} outside the pool (0..${numBlocks - 1})`);
      return b;
    });
    const token = mintTransferToken(this.opts.engineId, o.requestId, this.opts.secret);
    const lease: Lease = {
      requestId: o.requestId,
      token,
      blockIds,
      numTokens: o.numTokens,
      timer: setTimeout(() => this.expire(lease), o.leaseMs),
      streams: new Set(),
      pulled: false,
      released: false,
      framesQueued: 0,
      pendingRelease: null,
    };
    lease.timer.unref();
    this.leases.set(o.requestId, lease);
    this.expired.delete(o.requestId);
    this.metrics?.leasedBlocks.inc(blockIds.length);
    return { transferToken: token };
  }

  /** Requests currently holding blocks under a lease. */
  get leasedRequests(): number {
    return this.leases.size;
  }

  // ---- leases ---------------------------------------------------------------------------------

  private expire(lease: Lease): void {
    if (lease.released) return;
    this.expired.add(lease.requestId);
    if (this.expired.size > EXPIRED_MEMORY) this.expired.delete(this.expired.values().next().value!);
    this.release(lease, 'expired');
  }

  private release(lease: Lease, reason: LeaseReleaseReason): void {
    if (lease.released) return;
    lease.released = true;
    clearTimeout(lease.timer);
    this.leases.delete(lease.requestId);
    // Pulls still running stop before their next frame (see serve()).
    for (const s of lease.streams) s.wake?.();
    // Frames sent zero-copy still point into the blocks until the kernel has them.
    if (lease.framesQueued > 0) lease.pendingRelease = reason;
    else this.notifyRelease(lease, reason);
  }

  private notifyRelease(lease: Lease, reason: LeaseReleaseReason): void {
    this.metrics?.leasedBlocks.dec(lease.blockIds.length);
    try {
      this.opts.onRelease?.(lease.requestId, reason);
    } catch (err) {
      this.log('warn', `onRelease(${lease.requestId}, ${reason}) threw: ${(err as Error).message}`);
    }
  }

  /** The lease for this request if the token is right; otherwise the error code to answer with. */
  private authorize(requestId: string, token: string): Lease | KvFailureReason {
    const lease = this.leases.get(requestId);
    if (!lease) return this.expired.has(requestId) ? 'lease-expired' : 'unknown-request';
    if (!verifyTransferToken(token, lease.token, this.opts.engineId, requestId, this.opts.secret)) return 'bad-token';
    return lease;
  }

  // ---- connections ----------------------------------------------------------------------------

  private accept(socket: net.Socket): void {
    const conn: Conn = {
      socket,
      reader: null as unknown as FrameReader,
      hello: false,
      compatible: false,
      maxFrameBytes: 0,
      streams: new Map(),
      closed: false,
      handshakeTimer: null,
    };
    // Clients only send control frames; a DATA frame is a violation whatever its size.
    conn.reader = new FrameReader(
      (t) => (t === FrameType.DATA ? 0 : MAX_CONTROL_PAYLOAD),
      (h, payload) => this.onFrame(conn, h, payload),
      (err) => this.protocolError(conn, err),
    );
    this.conns.add(conn);
    conn.handshakeTimer = setTimeout(() => {
      this.log('info', `dropping ${peer(socket)}: no HELLO within the handshake timeout`);
      this.dropConn(conn);
    }, this.opts.handshakeTimeoutMs ?? 10_000);
    conn.handshakeTimer.unref();
    socket.setKeepAlive(true, 30_000);
    socket.on('data', (chunk) => conn.reader.push(chunk));
    socket.on('error', (err) => this.log('info', `connection ${peer(socket)}: ${err.message}`));
    socket.on('close', () => this.connClosed(conn));
  }

  private connClosed(conn: Conn): void {
    conn.closed = true;
    if (conn.handshakeTimer) clearTimeout(conn.handshakeTimer);
    for (const s of conn.streams.values()) {
      s.cancelled = true;
      // The socket is gone: libuv no longer reads the queued frames' memory.
      for (const settle of [...s.queued]) settle();
      s.wake?.();
    }
    conn.streams.clear();
    this.conns.delete(conn);
  }

  private dropConn(conn: Conn): void {
    if (!conn.socket.destroyed) conn.socket.destroy();
    this.connClosed(conn);
  }

  /** Report the violation in an ERROR frame, then drop the connection: framing can't be trusted any more. */
  private protocolError(conn: Conn, err: WireError): void {
    this.log('warn', `dropping ${peer(conn.socket)}: ${err.message}`);
    this.sendError(conn, 0, err.code, err.message, err.field);
    for (const s of conn.streams.values()) s.cancelled = true;
    conn.socket.end();
    // Don't wait for a misbehaving peer to close its side.
    setTimeout(() => this.dropConn(conn), 1000).unref();
  }

  private sendError(conn: Conn, streamId: number, code: string, message: string, field?: string): void {
    if (conn.closed || conn.socket.destroyed || !conn.socket.writable) return;
    conn.socket.write(encodeControl(FrameType.ERROR, streamId, field ? { code, message, field } : { code, message }));
  }

  private onFrame(conn: Conn, h: FrameHeader, payload: Buffer): void {
    if (!conn.hello && h.type !== FrameType.HELLO) throw new WireError('corrupt', `${frameTypeName(h.type)} before HELLO`);
    switch (h.type) {
      case FrameType.HELLO:
        return this.onHello(conn, h, payload);
      case FrameType.PULL:
        return this.onPull(conn, h, payload);
      case FrameType.RELEASE:
        return this.onRelease(conn, h, payload);
      case FrameType.CANCEL: {
        const s = conn.streams.get(h.streamId);
        if (s) {
          s.cancelled = true;
          s.wake?.();
        }
        return;
      }
      default:
        throw new WireError('corrupt', `unexpected ${frameTypeName(h.type)} frame from a client`);
    }
  }

  private onHello(conn: Conn, h: FrameHeader, payload: Buffer): void {
    if (conn.hello) throw new WireError('corrupt', 'second HELLO on one connection');
    if (h.streamId !== 0) throw new WireError('corrupt', 'HELLO must use stream 0');
    const o = parseControl(payload, 'HELLO');
    const version = int(o, 'version', 'HELLO');
    if (version !== PROTOCOL_VERSION) throw new WireError('incompatible', `protocol version ${version}, this server speaks ${PROTOCOL_VERSION}`, 'version');
    const maxFrameBytes = int(o, 'maxFrameBytes', 'HELLO', 4096, 0xffffffff);
    // A client that only releases leases may omit compat; it can't pull on this connection.
    const compat = o['compat'] === undefined ? null : parseCompat(o['compat'], 'HELLO');
    const diff = compat && compatMismatch(this.opts.compat, compat);
    if (diff) {
      throw new WireError('incompatible', `incompatible KV: ${diff.field} is ${JSON.stringify(diff.local)} on the prefill engine, ${JSON.stringify(diff.remote)} on the decode engine`, diff.field);
    }
    const simulated = bool(o, 'simulated', 'HELLO');
    if (compat && simulated !== (this.link !== null)) {
      throw new WireError('incompatible', `the ${this.link ? 'prefill engine simulates its KV transfers, the decode engine expects real KV' : 'prefill engine moves real KV, the decode engine is simulated'}`, 'simulated');
    }
    conn.hello = true;
    conn.compatible = compat !== null;
    conn.maxFrameBytes = Math.min(maxFrameBytes, MAX_DATA_PAYLOAD);
    if (conn.handshakeTimer) clearTimeout(conn.handshakeTimer);
    conn.handshakeTimer = null;
    const layout = this.opts.pool?.().layout;
    conn.socket.write(
      encodeControl(FrameType.HELLO_OK, 0, {
        version: PROTOCOL_VERSION,
        engineId: this.opts.engineId,
        compat: this.opts.compat,
        simulated: this.link !== null,
        ...(layout ? { blockSize: layout.blockSize, kvDtype: layout.dtype } : {}),
      }),
    );
  }

  private newStream(conn: Conn, h: FrameHeader): ServeStream {
    if (h.streamId === 0) throw new WireError('corrupt', `${frameTypeName(h.type)} on stream 0`);
    if (conn.streams.has(h.streamId)) throw new WireError('corrupt', `stream ${h.streamId} is already in use`);
    if (conn.streams.size >= MAX_STREAMS_PER_CONNECTION) throw new WireError('corrupt', `more than ${MAX_STREAMS_PER_CONNECTION} streams in flight on one connection`);
    return { id: h.streamId, conn, cancelled: false, wake: null, queued: new Set() };
  }

  private onRelease(conn: Conn, h: FrameHeader, payload: Buffer): void {
    this.newStream(conn, h); // validates the id; a release is answered at once
    const o = parseControl(payload, 'RELEASE');
    const lease = this.authorize(str(o, 'requestId', 'RELEASE'), str(o, 'transferToken', 'RELEASE', 256));
    if (typeof lease === 'string') return this.sendError(conn, h.streamId, lease, errorText(lease, String(o['requestId'])));
    this.release(lease, 'not-needed');
    conn.socket.write(encodeControl(FrameType.END, h.streamId, {}));
  }

  private onPull(conn: Conn, h: FrameHeader, payload: Buffer): void {
    const stream = this.newStream(conn, h);
    const o = parseControl(payload, 'PULL');
    const requestId = str(o, 'requestId', 'PULL');
    const token = str(o, 'transferToken', 'PULL', 256);
    const startToken = int(o, 'startToken', 'PULL');
    const endToken = int(o, 'endToken', 'PULL');
    if (!conn.compatible) return this.sendError(conn, h.streamId, 'incompatible', 'PULL on a connection whose HELLO carried no compat', 'compat');
    const lease = this.authorize(requestId, token);
    if (typeof lease === 'string') return this.sendError(conn, h.streamId, lease, errorText(lease, requestId));
    if (startToken > endToken || endToken > lease.numTokens) {
      return this.sendError(conn, h.streamId, 'unknown-request', `tokens [${startToken}, ${endToken}) are outside request ${requestId}'s ${lease.numTokens} leased tokens`);
    }
    conn.streams.set(stream.id, stream);
    lease.streams.add(stream);
    (this.link ? this.serveSimulated(stream, lease, startToken, endToken, this.link) : this.serve(stream, lease, startToken, endToken)).catch((err: Error) => {
      this.log('warn', `pull of ${requestId} failed: ${err.message}`);
      this.sendError(conn, stream.id, 'corrupt', `prefill engine failed to read the KV: ${err.message}`);
    }).finally(() => {
      conn.streams.delete(stream.id);
      lease.streams.delete(stream);
      if (lease.pulled && lease.streams.size === 0) this.release(lease, 'pulled');
    });
  }

  /** Stream tokens [start, end) as DATA frames, the last one flagged DATA_FLAG_LAST. */
  private async serve(stream: ServeStream, lease: Lease, start: number, end: number): Promise<void> {
    const t0 = performance.now();
    const { socket } = stream.conn;
    const layout = this.opts.pool!().layout;
    const tokenBytes = tokenMajorBytes(layout, 1, layout.dtype);
    // Send straight from the pool (writev of block views) when rows come in runs long enough that
    // the kernel's copy beats gathering into a buffer first.
    // (A block size beyond the sub-header's u16 piece field is gathered as one piece instead.)
    const zeroCopy = layout.blockSize * kvDimOf(layout) * eltBytes(layout.dtype) >= MIN_ZERO_COPY_RUN && layout.blockSize <= 0xffff;
    const room = Math.min(zeroCopy ? this.frameBytes : Math.min(this.frameBytes, MAX_GATHERED_FRAME_BYTES), stream.conn.maxFrameBytes - DATA_SUBHEADER_BYTES);
    if (tokenBytes > room) {
      this.sendError(stream.conn, stream.id, 'incompatible', `one token of KV (${tokenBytes} bytes) exceeds the decode engine's frame limit`, 'maxFrameBytes');
      return;
    }
    // Zero-copy frames are as large as allowed: a frame of whole-block pieces costs one writev on
    // the sender and one region per block on the receiver, whatever its size, and the receiver
    // checksums each read as it lands, so nothing is gained by cutting finer. Gathered frames are
    // cut in ~4 so that gathering frame n+1 overlaps sending frame n.
    const target = zeroCopy ? room : Math.min(room, Math.max(MIN_FRAME_BYTES, Math.ceil(((end - start) * tokenBytes) / 4)));
    let chunkTokens = Math.max(1, Math.floor(target / tokenBytes));
    // Frames end on block boundaries, so that (at equal block sizes) the receiver's regions are whole blocks.
    if (chunkTokens >= layout.blockSize) chunkTokens -= chunkTokens % layout.blockSize;
    const aligned = chunkTokens % layout.blockSize === 0;
    const inFlight = zeroCopy ? Math.max(this.framesInFlight, Math.floor(ZERO_COPY_QUEUE_BYTES / (chunkTokens * tokenBytes))) : this.framesInFlight;
    let bytes = 0;
    for (let p = start; p < end; ) {
      while (stream.queued.size >= inFlight && !stream.cancelled && !lease.released) {
        await new Promise<void>((resolve) => (stream.wake = resolve));
        stream.wake = null;
      }
      if (stream.cancelled || stream.conn.closed) return;
      if (lease.released) {
        this.sendError(stream.conn, stream.id, 'lease-expired', `the lease of request ${lease.requestId} ended during the transfer`);
        return;
      }
      // A pull that starts mid-block (the decode side had a prefix) sends the block's rest first.
      const n = Math.min(aligned ? chunkTokens - (p % layout.blockSize) : chunkTokens, end - p);
      const kvBytes = tokenMajorBytes(layout, n, layout.dtype);
      const last = p + n === end;
      const frame = zeroCopy ? this.poolFrame(stream.id, lease, p, n, kvBytes, last) : this.gatheredFrame(stream.id, lease, p, n, kvBytes, last);
      let settled = false;
      const settle = () => {
        if (settled) return;
        settled = true;
        stream.queued.delete(settle);
        frame.done();
        if (zeroCopy && --lease.framesQueued === 0 && lease.pendingRelease) {
          const reason = lease.pendingRelease;
          lease.pendingRelease = null;
          this.notifyRelease(lease, reason);
        }
        stream.wake?.();
      };
      stream.queued.add(settle);
      if (zeroCopy) lease.framesQueued++;
      bytes += kvBytes;
      p += n;
      // One writev per frame, not per batch: frame n is on its way while frame n+1 is checksummed.
      socket.cork();
      for (let i = 0; i < frame.chunks.length - 1; i++) socket.write(frame.chunks[i]!);
      socket.write(frame.chunks[frame.chunks.length - 1]!, settle);
      socket.uncork();
    }
    if (stream.cancelled || stream.conn.closed) return;
    if (start === end) socket.write(encodeControl(FrameType.END, stream.id, { tokens: 0, bytes: 0 }));
    lease.pulled = true;
    if (this.metrics) {
      this.metrics.bytes.inc({ direction: 'send' }, bytes);
      this.metrics.tokens.inc({ direction: 'send' }, end - start);
      this.metrics.seconds.observe({ direction: 'send' }, (performance.now() - t0) / 1000);
    }
  }

  /**
   * Announce tokens [start, end) in payload-less DATA frames, each sent when its last byte would
   * have arrived: the link carries one transfer at a time, so a transfer starts when the link is
   * free, takes bytes / bandwidth, and arrives latencyMs later. Timers, no busy waiting.
   */
  private async serveSimulated(stream: ServeStream, lease: Lease, start: number, end: number, link: SimulatedLink): Promise<void> {
    const t0 = performance.now();
    const { socket } = stream.conn;
    const tokens = end - start;
    const msPerByte = 1000 / link.bandwidthBytesPerSec;
    const begin = Math.max(t0, this.linkBusyUntil);
    // The link is reserved for the whole transfer up front (a cancelled transfer keeps its slot).
    this.linkBusyUntil = begin + tokens * link.bytesPerToken * msPerByte;
    const frames = Math.min(SIMULATED_FRAMES, tokens);
    let bytes = 0;
    for (let k = 0, p = start; k < frames; k++) {
      const n = Math.floor((tokens * (k + 1)) / frames) - (p - start);
      const frameBytes = n * link.bytesPerToken;
      await this.sleepUntil(stream, lease, begin + (bytes + frameBytes) * msPerByte + link.latencyMs);
      if (stream.cancelled || stream.conn.closed) return;
      if (lease.released) {
        this.sendError(stream.conn, stream.id, 'lease-expired', `the lease of request ${lease.requestId} ended during the transfer`);
        return;
      }
      const frame = Buffer.alloc(HEADER_BYTES + SIMULATED_SUBHEADER_BYTES);
      const flags = DATA_FLAG_PAYLOADLESS | (p + n === end ? DATA_FLAG_LAST : 0);
      writeSubheader(frame, HEADER_BYTES, { first: p, count: n, dtypeCode: 0, flags, pieceTokens: 0 }); // dtype 0: there is no data
      frame.writeUInt32LE(frameBytes % 2 ** 32, HEADER_BYTES + 12);
      frame.writeUInt32LE(Math.floor(frameBytes / 2 ** 32), HEADER_BYTES + 16);
      writeHeader(frame, FrameType.DATA, stream.id, SIMULATED_SUBHEADER_BYTES, frameChecksum(frame.subarray(HEADER_BYTES)));
      bytes += frameBytes;
      p += n;
      socket.write(frame);
    }
    if (stream.cancelled || stream.conn.closed) return;
    if (tokens === 0) socket.write(encodeControl(FrameType.END, stream.id, { tokens: 0, bytes: 0 }));
    lease.pulled = true;
    if (this.metrics) {
      this.metrics.bytes.inc({ direction: 'send' }, bytes);
      this.metrics.tokens.inc({ direction: 'send' }, tokens);
      this.metrics.seconds.observe({ direction: 'send' }, (performance.now() - t0) / 1000);
    }
  }

  /** Wait until `at` (performance.now() ms), or less if the stream is cancelled or the lease ends. */
  private async sleepUntil(stream: ServeStream, lease: Lease, at: number): Promise<void> {
    for (let ms = at - performance.now(); ms > 0 && !stream.cancelled && !stream.conn.closed && !lease.released; ms = at - performance.now()) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.ceil(ms));
        stream.wake = () => (clearTimeout(timer), resolve());
      });
      stream.wake = null;
    }
  }

  /**
   * A DATA frame as a header plus views of the pool, one piece per block (token-major within it):
   * no copy, and a whole block is one view; blocks adjacent in the pool merge into one.
   */
  private poolFrame(streamId: number, lease: Lease, first: number, count: number, kvBytes: number, last: boolean): { chunks: Buffer[]; done: () => void } {
    const pool = this.opts.pool!();
    const l = pool.layout;
    const rowBytes = kvDimOf(l) * eltBytes(l.dtype);
    const head = Buffer.allocUnsafe(HEADER_BYTES + DATA_SUBHEADER_BYTES);
    writeSubheader(head, HEADER_BYTES, { first, count, dtypeCode: DTYPE_CODE[l.dtype], flags: last ? DATA_FLAG_LAST : 0, pieceTokens: l.blockSize });
    // In the engine the pool lies in its WebAssembly.Memory: the checksum reads the blocks in place.
    const ck = (pool.memory && pool.memory.buffer === pool.buffer ? checksumIn(pool.memory) : anyChecksum()).begin();
    ck.update(head.subarray(HEADER_BYTES));
    const chunks: Buffer[] = [head];
    // Runs that continue where the previous one ended (a whole block's layers) become one view.
    let runAt = -1;
    let runBytes = 0;
    const flush = () => {
      if (runBytes === 0) return;
      const view = Buffer.from(pool.buffer, runAt, runBytes);
      ck.update(view);
      chunks.push(view);
    };
    forEachPiece(first, count, l.blockSize, (p, n) => {
      const block = lease.blockIds[Math.floor(p / l.blockSize)]!;
      for (let layer = 0; layer < l.nLayers; layer++) {
        for (let kv = 0; kv < 2; kv++) {
          const at = poolRowOffset(l, block, layer, kv, p % l.blockSize);
          if (at === runAt + runBytes) runBytes += n * rowBytes;
          else {
            flush();
            runAt = at;
            runBytes = n * rowBytes;
          }
        }
      }
    });
    flush();
    writeHeader(head, FrameType.DATA, streamId, DATA_SUBHEADER_BYTES + kvBytes, ck.end());
    return { chunks, done: () => {} };
  }

  /** A DATA frame gathered into one pooled buffer (pools with short rows: many tiny writes would cost more). */
  private gatheredFrame(streamId: number, lease: Lease, first: number, count: number, kvBytes: number, last: boolean): { chunks: Buffer[]; done: () => void } {
    const pool = this.opts.pool!();
    const payloadBytes = DATA_SUBHEADER_BYTES + kvBytes;
    const buf = this.buffers.acquire(HEADER_BYTES + payloadBytes);
    const kvAt = HEADER_BYTES + DATA_SUBHEADER_BYTES;
    gatherTokens(pool, lease.blockIds, first, count, pool.layout.dtype, buf.subarray(kvAt, kvAt + kvBytes));
    writeSubheader(buf, HEADER_BYTES, { first, count, dtypeCode: DTYPE_CODE[pool.layout.dtype], flags: last ? DATA_FLAG_LAST : 0, pieceTokens: 0 });
    writeHeader(buf, FrameType.DATA, streamId, payloadBytes, frameChecksum(buf.subarray(HEADER_BYTES, HEADER_BYTES + payloadBytes)));
    return { chunks: [buf.subarray(0, HEADER_BYTES + payloadBytes)], done: () => this.buffers.release(buf) };
  }

  private log(level: 'info' | 'warn', message: string): void {
    this.opts.log?.(level, `kv-transfer: ${message}`);
  }
}

function validateLink(l: SimulatedLink): SimulatedLink {
  if (!Number.isInteger(l.bytesPerToken) || l.bytesPerToken <= 0) throw new RangeError(`simulatedLink.bytesPerToken must be a positive integer, got ${l.bytesPerToken}`);
  if (!(l.bandwidthBytesPerSec > 0) || !Number.isFinite(l.bandwidthBytesPerSec)) {
    throw new RangeError(`simulatedLink.bandwidthBytesPerSec must be a positive number, got ${l.bandwidthBytesPerSec}`);
  }
  if (!(l.latencyMs >= 0) || !Number.isFinite(l.latencyMs)) throw new RangeError(`simulatedLink.latencyMs must be a non-negative number, got ${l.latencyMs}`);
  return { ...l };
}

function errorText(code: KvFailureReason, requestId: string): string {
  switch (code) {
    case 'lease-expired':
      return `the lease of request ${requestId} expired`;
    case 'bad-token':
      return `wrong transfer token for request ${requestId}`;
    default:
      return `no KV is leased for request ${requestId}`;
  }
}

function peer(s: net.Socket): string {
  return `${s.remoteAddress ?? '?'}:${s.remotePort ?? '?'}`;
}
