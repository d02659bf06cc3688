// The decode side of the KV connector: pulls a leased prompt's KV from a prefill engine into local
// blocks, converting block size and dtype on the way in (the sender serves its own pool dtype).
//
// Connections are pooled per (host, port) and stay open; several pulls share one connection as
// multiplexed streams, and a second connection opens when all are busy. Every wait has a deadline
// (connect + handshake, then the transfer) and honours an AbortSignal, so a pull always settles.

import net from 'node:net';
import { performance } from 'node:perf_hooks';
import type { Registry } from 'prom-client';
import type { KvDtype } from '../kernels/types.ts';
import { poolRuns, scatterTokens, tokenMajorBytes, type PoolRef } from '../engine/kv-layout.ts';
import { FrameChecksum } from './checksum.ts';
import { isKvFailureReason, KvTransferError, type KvFailureReason } from './errors.ts';
import { createKvMetrics, type KvMetrics } from './metrics.ts';
import {
  bool,
  compatMismatch,
  DATA_FLAG_LAST,
  DATA_FLAG_PAYLOADLESS,
  DATA_SUBHEADER_BYTES,
  DEFAULT_MAX_FRAME_BYTES,
  dtypeFromCode,
  encodeControl,
  forEachPiece,
  FrameReader,
  FrameType,
  frameTypeName,
  int,
  MAX_CONTROL_PAYLOAD,
  MAX_DATA_PAYLOAD,
  MAX_STREAMS_PER_CONNECTION,
  parseCompat,
  parseControl,
  PROTOCOL_VERSION,
  readSubheader,
  SIMULATED_SUBHEADER_BYTES,
  str,
  WireError,
  type FrameHeader,
  type KvCompat,
  type Landing,
} from './wire.ts';

export interface PullKvOptions {
  /** remote_host / remote_port from kv_transfer_params */
  host: string;
  port: number;
  /** remote_request_id */
  requestId: string;
  /** tandem_transfer_token */
  transferToken: string;
  /** this (decode) engine's model identity; the handshake refuses a prefill engine that differs */
  compat: KvCompat;
  /** remote_engine_id: if the engine at host:port is another one (restarted), the lease is gone */
  remoteEngineId?: string;
  /** first token to pull: the decode engine already holds [0, startToken) in its own prefix cache */
  startToken: number;
  /** end of the range (exclusive): normally the prompt length, tandem_num_tokens */
  numTokens: number;
  /** where the tokens go: token p into block blockTable[floor(p / blockSize)] of this pool (ignored, and optional, when simulated) */
  dest?: { pool: PoolRef | (() => PoolRef); blockTable: ArrayLike<number> };
  /**
   * This is a simulated engine: the prefill engine must be one too (its server has a
   * simulatedLink); its DATA frames carry only sizes, nothing is written into a pool, and the
   * declared bytes are counted as received. The handshake refuses a real/simulated mix.
   */
  simulated?: boolean;
  /** connect + handshake deadline (default 3 s) */
  connectTimeoutMs?: number;
  /** deadline for the transfer itself, PULL to END (default 60 s) */
  transferTimeoutMs?: number;
  /** the transfer fails when no frame of it arrived for this long (default 10 s): a stalled prefill engine */
  idleTimeoutMs?: number;
  signal?: AbortSignal;
  /** count bytes/tokens/seconds and failures here (see createKvMetrics) */
  registry?: Registry;
  /** after each DATA frame lands in the pool: tokens [startToken, upTo) are in place */
  onProgress?: (upTo: number) => void;
}

export interface PullKvResult {
  /** KV payload bytes received (token-major, in the sender's dtype); simulated: the bytes the frames declared */
  bytes: number;
  tokens: number;
  seconds: number;
}

export interface ReleaseKvOptions {
  host: string;
  port: number;
  requestId: string;
  transferToken: string;
  /** optional: lets the release share a pooled connection opened for pulls with this compat */
  compat?: KvCompat;
  /** with compat: this engine is simulated (see PullKvOptions.simulated) */
  simulated?: boolean;
  connectTimeoutMs?: number;
  transferTimeoutMs?: number;
  signal?: AbortSignal;
}

export interface KvTransferClientOptions {
  /** connections per prefill engine before streams are multiplexed on existing ones (default 2) */
  maxConnectionsPerPeer?: number;
  /** largest DATA payload accepted (default 16 MiB); the server sizes its frames below this */
  maxFrameBytes?: number;
}

const DEFAULT_CONNECT_TIMEOUT_MS = 3000;
/** A DATA frame lands in place only if its destination regions average at least this many bytes. */
const MIN_LANDING_REGION = 16 * 1024;
const DEFAULT_TRANSFER_TIMEOUT_MS = 60_000;
/** Frames of a live transfer come milliseconds apart; this much silence means the sender stalled. */
const DEFAULT_IDLE_TIMEOUT_MS = 10_000;

interface ClientStream {
  onFrame(h: FrameHeader, payload: Buffer, landed: boolean): void;
  fail(err: KvTransferError): void;
  /** place a large DATA frame's KV straight in the destination blocks (see FrameReader) */
  land?(h: FrameHeader, subheader: Buffer): Landing | null;
}

interface HelloOk {
  engineId: string;
  compat: KvCompat;
  simulated: boolean;
  /** the prefill engine's pool dtype: what its DATA frames carry */
  kvDtype: KvDtype | undefined;
}

class ClientConnection {
  readonly socket: net.Socket;
  readonly reader: FrameReader;
  readonly ready: Promise<HelloOk>;
  readonly streams = new Map<number, ClientStream>();
  hello: HelloOk | null = null;
  dead = false;
  /** pulls/releases that picked this connection and have not settled (for load spreading) */
  users = 0;
  private nextStreamId = 1;
  private connected = false;
  /** this connection's running checksums over destination pool memories (they span reads) */
  private readonly poolChecksums = new Map<WebAssembly.Memory, FrameChecksum>();
  private settleReady!: { resolve: (h: HelloOk) => void; reject: (e: KvTransferError) => void };

  constructor(
    readonly host: string,
    readonly port: number,
    readonly compat: KvCompat | undefined,
    readonly simulated: boolean,
    maxFrameBytes: number,
    connectTimeoutMs: number,
    private readonly onDead: (c: ClientConnection) => void,
  ) {
    this.ready = new Promise<HelloOk>((resolve, reject) => (this.settleReady = { resolve, reject }));
    this.ready.catch(() => {}); // observed by every user; never an unhandled rejection
    this.reader = new FrameReader(
      (t) => (t === FrameType.DATA ? maxFrameBytes : MAX_CONTROL_PAYLOAD),
      (h, payload, landed) => this.onFrame(h, payload, landed),
      (err) => this.die(new KvTransferError(err.code, `from ${this.host}:${this.port}: ${err.message}`, err.field)),
      (h, sub) => (h.streamId !== 0 && this.hello ? (this.streams.get(h.streamId)?.land?.(h, sub) ?? null) : null),
    );
    const timer = setTimeout(
      () => this.die(new KvTransferError('timeout', `no KV transfer handshake with ${host}:${port} within ${connectTimeoutMs} ms`)),
      connectTimeoutMs,
    );
    this.ready.then(() => clearTimeout(timer), () => clearTimeout(timer));
    // Reads land directly in the frame reader's buffers: no per-read allocation, no extra copy.
    this.socket = net.connect({
      host,
      port,
      noDelay: true,
      onread: { buffer: () => this.reader.readTarget(), callback: (n: number) => (this.reader.commit(n), true) },
    });
    this.socket.on('connect', () => {
      this.connected = true;
      this.socket.setKeepAlive(true, 30_000);
      const hello: Record<string, unknown> = { version: PROTOCOL_VERSION, maxFrameBytes, simulated };
      if (compat) hello['compat'] = compat;
      this.socket.write(encodeControl(FrameType.HELLO, 0, hello));
    });
    this.socket.on('error', (err: NodeJS.ErrnoException) => this.die(this.connectionLost(err)));
    this.socket.on('close', () => this.die(this.connectionLost()));
  }

  private connectionLost(err?: NodeJS.ErrnoException): KvTransferError {
    const where = `${this.host}:${this.port}`;
    if (!this.connected) return new KvTransferError('unreachable', `cannot connect to the KV transfer service at ${where}: ${err?.message ?? 'connection closed'}`);
    if (this.reader.midFrame && err?.code !== 'ECONNRESET') {
      return new KvTransferError('corrupt', `truncated frame: the connection to ${where} closed in the middle of a frame`);
    }
    return new KvTransferError('unreachable', `the connection to ${where} was lost${err ? ` (${err.message})` : ''}`);
  }

  /** Fail every stream on this connection and take it out of the pool. */
  die(err: KvTransferError): void {
    if (this.dead) return;
    this.dead = true;
    this.onDead(this);
    this.socket.destroy();
    this.settleReady.reject(err);
    const streams = [...this.streams.values()];
    this.streams.clear();
    for (const s of streams) s.fail(err);
  }

  openStream(s: ClientStream): number {
    while (this.streams.has(this.nextStreamId)) this.nextStreamId = (this.nextStreamId % 0x7fffffff) + 1;
    const id = this.nextStreamId;
    this.nextStreamId = (id % 0x7fffffff) + 1;
    this.streams.set(id, s);
    this.socket.ref();
    return id;
  }

  closeStream(id: number, cancel: boolean): void {
    if (!this.streams.delete(id)) return;
    if (cancel && !this.dead && this.socket.writable) this.socket.write(encodeControl(FrameType.CANCEL, id));
    if (this.streams.size === 0) this.socket.unref(); // an idle pooled connection must not keep the process alive
  }

  send(frame: Buffer): void {
    this.socket.write(frame);
  }

  checksumFor(memory: WebAssembly.Memory): FrameChecksum {
    let c = this.poolChecksums.get(memory);
    if (!c) this.poolChecksums.set(memory, (c = new FrameChecksum(memory)));
    return c;
  }

  private onFrame(h: FrameHeader, payload: Buffer, landed: boolean): void {
    if (h.streamId === 0) {
      if (h.type === FrameType.HELLO_OK && !this.hello) return this.onHelloOk(payload);
      if (h.type === FrameType.ERROR) {
        const e = parseError(payload);
        return this.die(new KvTransferError(e.reason, `${this.host}:${this.port} refused: ${e.message}`, e.field));
      }
      throw new WireError('corrupt', `unexpected ${frameTypeName(h.type)} frame on stream 0`);
    }
    if (!this.hello) throw new WireError('corrupt', `${frameTypeName(h.type)} frame before HELLO_OK`);
    // Frames of a stream we cancelled (timeout/abort) may still be in flight: drop them.
    this.streams.get(h.streamId)?.onFrame(h, payload, landed);
  }

  private onHelloOk(payload: Buffer): void {
    const o = parseControl(payload, 'HELLO_OK');
    const version = int(o, 'version', 'HELLO_OK');
    if (version !== PROTOCOL_VERSION) throw new WireError('incompatible', `server speaks protocol version ${version}, this client ${PROTOCOL_VERSION}`, 'version');
    const kvDtype = o['kvDtype'] === 'f32' || o['kvDtype'] === 'f16' ? o['kvDtype'] : undefined;
    const hello: HelloOk = { engineId: str(o, 'engineId', 'HELLO_OK'), compat: parseCompat(o['compat'], 'HELLO_OK'), simulated: bool(o, 'simulated', 'HELLO_OK'), kvDtype };
    // The server checked too; checking here as well guards against a server that skips it.
    const diff = this.compat && compatMismatch(this.compat, hello.compat);
    if (diff) {
      throw new WireError('incompatible', `incompatible KV: ${diff.field} is ${JSON.stringify(diff.remote)} on the prefill engine, ${JSON.stringify(diff.local)} here`, diff.field);
    }
    if (this.compat && hello.simulated !== this.simulated) {
      throw new WireError('incompatible', `the prefill engine ${hello.simulated ? 'is simulated' : 'moves real KV'}, this engine ${this.simulated ? 'is simulated' : 'expects real KV'}`, 'simulated');
    }
    this.hello = hello;
    if (this.streams.size === 0) this.socket.unref();
    this.settleReady.resolve(hello);
  }
}

function parseError(payload: Buffer): { reason: KvFailureReason; message: string; field?: string } {
  const o = parseControl(payload, 'ERROR');
  const code = o['code'];
  const message = typeof o['message'] === 'string' ? o['message'].slice(0, 1000) : 'no message';
  const field = typeof o['field'] === 'string' ? o['field'].slice(0, 64) : undefined;
  // An unknown code from a newer peer is still a failure; 'corrupt' makes the engine recompute.
  return { reason: isKvFailureReason(code) ? code : 'corrupt', message, ...(field ? { field } : {}) };
}

function poolOf(p: PoolRef | (() => PoolRef)): PoolRef {
  return typeof p === 'function' ? p() : p;
}

/** A deadline and an AbortSignal folded into one cleanup-able guard. */
function guard(ms: number, signal: AbortSignal | undefined, onFire: (err: KvTransferError) => void, what: string): () => void {
  const timer = setTimeout(() => onFire(new KvTransferError('timeout', `${what} took longer than ${ms} ms`)), ms);
  const onAbort = () => onFire(new KvTransferError('aborted', `${what} was aborted`));
  signal?.addEventListener('abort', onAbort, { once: true });
  return () => {
    clearTimeout(timer);
    signal?.removeEventListener('abort', onAbort);
  };
}

export class KvTransferClient {
  private readonly peers = new Map<string, ClientConnection[]>();
  /** pulls waiting for a stream slot, per peer (every allowed connection carries the maximum) */
  private readonly slotWaiters = new Map<string, (() => void)[]>();
  private readonly maxConnectionsPerPeer: number;
  private readonly maxFrameBytes: number;

  constructor(opts: KvTransferClientOptions = {}) {
    this.maxConnectionsPerPeer = Math.max(1, opts.maxConnectionsPerPeer ?? 2);
    this.maxFrameBytes = Math.min(Math.max(opts.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES, 64 * 1024), MAX_DATA_PAYLOAD);
  }

  /** Pull tokens [startToken, numTokens) of a leased request into local blocks. Rejects only with KvTransferError (or TypeError/RangeError for bad arguments). */
  async pull(o: PullKvOptions): Promise<PullKvResult> {
    const metrics = o.registry ? createKvMetrics(o.registry) : null;
    const t0 = performance.now();
    validatePull(o);
    try {
      const r = await this.pullOnce(o, t0);
      if (metrics) {
        metrics.bytes.inc({ direction: 'recv' }, r.bytes);
        metrics.tokens.inc({ direction: 'recv' }, r.tokens);
        metrics.seconds.observe({ direction: 'recv' }, r.seconds);
      }
      return r;
    } catch (err) {
      if (metrics && err instanceof KvTransferError) metrics.loadFailures.inc({ reason: err.reason });
      throw err;
    }
  }

  private async pullOnce(o: PullKvOptions, t0: number): Promise<PullKvResult> {
    if (o.signal?.aborted) throw new KvTransferError('aborted', `pull of ${o.requestId} was aborted`);
    const conn = await this.acquire(o.host, o.port, o.compat, o.simulated === true, o.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS, o.transferTimeoutMs ?? DEFAULT_TRANSFER_TIMEOUT_MS, o.signal);
    try {
      const hello = conn.hello!;
      if (o.remoteEngineId !== undefined && hello.engineId !== o.remoteEngineId) {
        throw new KvTransferError(
          'unknown-request',
          `${o.host}:${o.port} is engine ${hello.engineId}, not ${o.remoteEngineId} that leased request ${o.requestId} (restarted?)`,
        );
      }
      return await this.stream(conn, o, t0);
    } finally {
      this.done(conn);
    }
  }

  private stream(conn: ClientConnection, o: PullKvOptions, t0: number): Promise<PullKvResult> {
    const end = o.numTokens;
    const simulated = o.simulated === true;
    const dest = simulated ? null : o.dest!;
    const layout = dest && poolOf(dest.pool).layout;
    return new Promise<PullKvResult>((resolve, reject) => {
      if (conn.dead) return reject(new KvTransferError('unreachable', `the connection to ${o.host}:${o.port} was lost`));
      let next = o.startToken;
      let bytes = 0;
      let done = false;
      let id = 0;
      const finish = (err: KvTransferError | null, cancel = false) => {
        if (done) return;
        done = true;
        unguard();
        clearTimeout(idle);
        conn.closeStream(id, cancel);
        if (err) reject(err);
        else resolve({ bytes, tokens: end - o.startToken, seconds: (performance.now() - t0) / 1000 });
      };
      const what = `pull of ${o.requestId} from ${o.host}:${o.port}`;
      const unguard = guard(o.transferTimeoutMs ?? DEFAULT_TRANSFER_TIMEOUT_MS, o.signal, (err) => finish(err, true), what);
      const idleMs = o.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS;
      const idle = setTimeout(() => finish(new KvTransferError('timeout', `${what}: nothing received for ${idleMs} ms`), true), idleMs);
      // KV in the destination's own dtype, into a pool whose wasm memory we know, lands in place:
      // the kernel writes the blocks, the checksum reads them there, nothing is copied.
      const senderDtype = conn.hello?.kvDtype;
      let landedTokens = 0;
      const land = (h: FrameHeader, subheader: Buffer): Landing | null => {
        if (!dest || senderDtype !== layout!.dtype) return null;
        const pool = poolOf(dest.pool);
        if (!pool.memory || pool.memory.buffer !== pool.buffer) return null;
        const sub = readSubheader(subheader);
        const tokenBytes = tokenMajorBytes(pool.layout, 1, senderDtype);
        // Anything unexpected takes the ordinary path, whose checks name the problem.
        if (sub.first !== next || sub.count === 0 || sub.first + sub.count > end || sub.flags & DATA_FLAG_PAYLOADLESS) return null;
        if (dtypeFromCode(sub.dtypeCode) !== senderDtype || h.length !== DATA_SUBHEADER_BYTES + sub.count * tokenBytes) return null;
        const regions: [number, number][] = [];
        forEachPiece(sub.first, sub.count, sub.pieceTokens, (p, n) => {
          for (const r of poolRuns(pool, dest.blockTable, p, n)) {
            const prev = regions[regions.length - 1];
            if (prev && prev[0] + prev[1] === r[0]) prev[1] += r[1];
            else regions.push(r);
          }
        });
        // Each region is one read system call: many small ones cost more than the copy they save.
        if ((h.length - DATA_SUBHEADER_BYTES) / regions.length < MIN_LANDING_REGION) return null;
        landedTokens = sub.count;
        return { regions, checksum: conn.checksumFor(pool.memory) };
      };
      /** After a DATA frame's KV is in place: advance, and finish on the pull's last frame. */
      const advance = (count: number, kvBytes: number, flags: number) => {
        next += count;
        bytes += kvBytes;
        o.onProgress?.(next);
        if (flags & DATA_FLAG_LAST) {
          if (next !== end) throw new WireError('corrupt', `the last DATA frame ends at token ${next}, the pull at ${end}`);
          finish(null);
        }
      };
      id = conn.openStream({
        fail: (err) => finish(err),
        land,
        onFrame: (h, payload, landed) => {
          idle.refresh();
          switch (h.type) {
            case FrameType.DATA: {
              const sub = readSubheader(payload);
              const { first, count } = sub;
              if (landed) {
                // The KV is already in the blocks (checksum verified, over the sub-header too).
                if (first !== next || count !== landedTokens) {
                  throw new WireError('corrupt', `DATA sub-header (tokens ${first}+${count}) contradicts its frame (tokens ${next}+${landedTokens})`);
                }
                return advance(count, h.length - DATA_SUBHEADER_BYTES, sub.flags);
              }
              if (first !== next || count === 0 || first + count > end) {
                throw new WireError('corrupt', `DATA frame for tokens [${first}, ${first + count}) while expecting token ${next} of [${o.startToken}, ${end})`);
              }
              const payloadless = (sub.flags & DATA_FLAG_PAYLOADLESS) !== 0;
              if (payloadless !== simulated) throw new WireError('corrupt', simulated ? 'a DATA frame with KV on a simulated transfer' : 'a payload-less DATA frame on a real transfer');
              if (simulated) {
                // Sizes only: nothing lands in a pool (a simulated engine may not have one).
                if (payload.length !== SIMULATED_SUBHEADER_BYTES || sub.dtypeCode !== 0 || sub.pieceTokens !== 0) {
                  throw new WireError('corrupt', `payload-less DATA frame of ${payload.length} bytes with bad dtype/piece fields`);
                }
                const declared = payload.readUInt32LE(12) + payload.readUInt32LE(16) * 2 ** 32;
                if (!Number.isSafeInteger(declared)) throw new WireError('corrupt', 'payload-less DATA frame declares an impossible size');
                return advance(count, declared, sub.flags);
              }
              const dtype = dtypeFromCode(sub.dtypeCode);
              if (!dtype) throw new WireError('corrupt', `DATA frame with unknown dtype ${sub.dtypeCode}`);
              const kvBytes = tokenMajorBytes(layout!, count, dtype);
              if (payload.length !== DATA_SUBHEADER_BYTES + kvBytes) {
                throw new WireError('corrupt', `DATA frame of ${payload.length} bytes for ${count} ${dtype} tokens (expected ${DATA_SUBHEADER_BYTES + kvBytes})`);
              }
              const pool = poolOf(dest!.pool);
              let at = DATA_SUBHEADER_BYTES;
              forEachPiece(first, count, sub.pieceTokens, (p, n) => {
                const pieceBytes = tokenMajorBytes(layout!, n, dtype);
                scatterTokens(pool, dest!.blockTable, p, n, payload.subarray(at, at + pieceBytes), dtype);
                at += pieceBytes;
              });
              return advance(count, kvBytes, sub.flags);
            }
            case FrameType.END: {
              // Only a pull with no DATA frames (an empty range) ends with END.
              const e = parseControl(payload, 'END');
              const tokens = int(e, 'tokens', 'END');
              const sent = int(e, 'bytes', 'END', 0, Number.MAX_SAFE_INTEGER);
              if (next !== end || tokens !== end - o.startToken || sent !== bytes) {
                throw new WireError('corrupt', `END says ${tokens} tokens/${sent} bytes, received ${next - o.startToken} tokens/${bytes} bytes of ${end - o.startToken}`);
              }
              return finish(null);
            }
            case FrameType.ERROR: {
              const e = parseError(payload);
              return finish(new KvTransferError(e.reason, `${o.host}:${o.port}: ${e.message}`, e.field));
            }
            default:
              throw new WireError('corrupt', `unexpected ${frameTypeName(h.type)} frame in a pull`);
          }
        },
      });
      conn.send(
        encodeControl(FrameType.PULL, id, { requestId: o.requestId, transferToken: o.transferToken, startToken: o.startToken, endToken: end }),
      );
    });
  }

  /** Tell the prefill engine the decode side needs none of this request's KV: it frees the lease now. */
  async release(o: ReleaseKvOptions): Promise<void> {
    if (o.signal?.aborted) throw new KvTransferError('aborted', `release of ${o.requestId} was aborted`);
    // Any established connection to the peer will do: a release reads no KV, so compat is moot.
    const existing = this.peers.get(peerKey(o.host, o.port))?.find((c) => c.hello && !c.dead && c.users < MAX_STREAMS_PER_CONNECTION);
    const timeoutMs = o.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
    const conn = existing ?? (await this.acquire(o.host, o.port, o.compat, o.simulated === true, timeoutMs, o.transferTimeoutMs ?? timeoutMs, o.signal));
    if (existing) existing.users++;
    try {
      await new Promise<void>((resolve, reject) => {
        let done = false;
        let id = 0;
        const finish = (err: KvTransferError | null, cancel = false) => {
          if (done) return;
          done = true;
          unguard();
          conn.closeStream(id, cancel);
          if (err) reject(err);
          else resolve();
        };
        const unguard = guard(o.transferTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS, o.signal, (err) => finish(err, true), `release of ${o.requestId}`);
        id = conn.openStream({
          fail: (err) => finish(err),
          onFrame: (h, payload) => {
            if (h.type === FrameType.END) return finish(null);
            if (h.type === FrameType.ERROR) {
              const e = parseError(payload);
              return finish(new KvTransferError(e.reason, `${o.host}:${o.port}: ${e.message}`, e.field));
            }
            throw new WireError('corrupt', `unexpected ${frameTypeName(h.type)} frame answering a RELEASE`);
          },
        });
        conn.send(encodeControl(FrameType.RELEASE, id, { requestId: o.requestId, transferToken: o.transferToken }));
      });
    } finally {
      this.done(conn);
    }
  }

  /** A use of `conn` ended: its stream slot goes to the next pull waiting for one to that peer. */
  private done(conn: ClientConnection): void {
    conn.users--;
    const key = peerKey(conn.host, conn.port);
    const waiters = this.slotWaiters.get(key);
    const next = waiters?.shift();
    if (waiters?.length === 0) this.slotWaiters.delete(key);
    next?.();
  }

  /** Waits until a use of a connection to `key` ends (then the caller looks again), at most `waitMs`. */
  private waitForSlot(key: string, waitMs: number, signal: AbortSignal | undefined, what: string): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const waiters = this.slotWaiters.get(key) ?? [];
      this.slotWaiters.set(key, waiters);
      const wake = (): void => (unguard(), resolve());
      const unguard = guard(waitMs, signal, (err) => {
        const i = waiters.indexOf(wake);
        if (i >= 0) waiters.splice(i, 1);
        if (waiters.length === 0 && this.slotWaiters.get(key) === waiters) this.slotWaiters.delete(key);
        reject(err);
      }, what);
      waiters.push(wake);
    });
  }

  /**
   * A handshaken connection to host:port (pooled), reserved for one use: the caller calls `done`.
   * At most MAX_STREAMS_PER_CONNECTION uses share a connection (the server refuses more); with every
   * allowed connection that full, the caller waits its turn, up to `waitMs`.
   */
  private async acquire(
    host: string,
    port: number,
    compat: KvCompat | undefined,
    simulated: boolean,
    connectTimeoutMs: number,
    waitMs: number,
    signal?: AbortSignal,
  ): Promise<ClientConnection> {
    const key = peerKey(host, port);
    const compatKey = compat ? JSON.stringify(compat) : '';
    let conn: ClientConnection | null;
    for (;;) {
      const list = this.peers.get(key) ?? [];
      this.peers.set(key, list);
      const candidates = list.filter((c) => !c.dead && c.simulated === simulated && (c.compat ? JSON.stringify(c.compat) : '') === compatKey);
      conn = candidates.reduce<ClientConnection | null>((best, c) => (!best || c.users < best.users ? c : best), null);
      if (!conn || (conn.users > 0 && candidates.length < this.maxConnectionsPerPeer)) {
        conn = new ClientConnection(host, port, compat, simulated, this.maxFrameBytes, connectTimeoutMs, (dead) => {
          const l = this.peers.get(key);
          if (!l) return;
          const i = l.indexOf(dead);
          if (i >= 0) l.splice(i, 1);
          if (l.length === 0) this.peers.delete(key);
        });
        list.push(conn);
        break;
      }
      if (conn.users < MAX_STREAMS_PER_CONNECTION) break;
      await this.waitForSlot(key, waitMs, signal, `waiting for a free stream to ${host}:${port}`);
    }
    conn.users++;
    if (conn.hello) return conn;
    try {
      await new Promise<void>((resolve, reject) => {
        const unguard = guard(connectTimeoutMs, signal, reject, `connecting to ${host}:${port}`);
        conn.ready.then(
          () => (unguard(), resolve()),
          (err: unknown) => (unguard(), reject(err)),
        );
      });
    } catch (err) {
      this.done(conn);
      throw err;
    }
    return conn;
  }

  /** Close every pooled connection (pulls in flight fail with 'aborted'). */
  close(): void {
    for (const list of [...this.peers.values()]) {
      for (const c of [...list]) c.die(new KvTransferError('aborted', 'KV transfer client closed'));
    }
    this.peers.clear();
  }

  /** Open connections per peer, for tests and diagnostics. */
  connectionCount(host: string, port: number): number {
    return this.peers.get(peerKey(host, port))?.filter((c) => !c.dead).length ?? 0;
  }
}

function peerKey(host: string, port: number): string {
  return `${host}:${port}`;
}

function validatePull(o: PullKvOptions): void {
  if (typeof o.host !== 'string' || o.host.length === 0) throw new TypeError('pullKv: host is required');
  if (!Number.isInteger(o.port) || o.port < 1 || o.port > 65535) throw new RangeError(`pullKv: bad port ${o.port}`);
  if (typeof o.requestId !== 'string' || o.requestId.length === 0) throw new TypeError('pullKv: requestId is required');
  if (typeof o.transferToken !== 'string' || o.transferToken.length === 0) throw new TypeError('pullKv: transferToken is required');
  if (!Number.isInteger(o.startToken) || !Number.isInteger(o.numTokens) || o.startToken < 0 || o.startToken > o.numTokens) {
    throw new RangeError(`pullKv: bad token range [${o.startToken}, ${o.numTokens})`);
  }
  if (o.simulated === true) return; // nothing is written: no pool to check
  if (!o.dest) throw new TypeError('pullKv: dest is required (unless simulated)');
  const l = poolOf(o.dest.pool).layout;
  if (l.nLayers !== o.compat.nLayers || l.nKvHeads !== o.compat.nKvHeads || l.headDim !== o.compat.headDim) {
    throw new TypeError(`pullKv: destination pool layout (${l.nLayers}×${l.nKvHeads}×${l.headDim}) does not match compat`);
  }
  // scatterTokens trusts block ids; one out of range would write over unrelated memory.
  const table = o.dest.blockTable;
  if (o.numTokens > o.startToken) {
    const firstBlock = Math.floor(o.startToken / l.blockSize);
    const lastBlock = Math.ceil(o.numTokens / l.blockSize) - 1;
    if (table.length <= lastBlock) throw new RangeError(`pullKv: block table has ${table.length} blocks, tokens up to ${o.numTokens} need ${lastBlock + 1}`);
    for (let i = firstBlock; i <= lastBlock; i++) {
      const b = table[i]!;
      if (!Number.isInteger(b) || b < 0 || b >= l.numBlocks) throw new RangeError(`pullKv: block id ${b} outside the destination pool`);
    }
  }
}

const defaultClient = new KvTransferClient();

/** Pull a leased prompt's KV with the process-wide pooled client. See KvTransferClient.pull. */
export function pullKv(o: PullKvOptions): Promise<PullKvResult> {
  return defaultClient.pull(o);
}

/** Free a lease on the prefill engine with the process-wide pooled client. */
export function releaseKv(o: ReleaseKvOptions): Promise<void> {
  return defaultClient.release(o);
}

/** Close the process-wide client's pooled connections (engine shutdown). */
export function closeKvConnections(): void {
  defaultClient.close();
}
