// Prefill/decode disaggregation inside the engine: vLLM's NixlConnector two-leg protocol.
//
// Leg 1 (kv_transfer_params.do_remote_decode): the request runs normally (the router caps it at one
// token); when it finishes, the prompt's blocks are leased to the KV transfer service instead of
// being freed, and the response carries the kv_transfer_params a decode engine needs.
// Leg 2 (kv_transfer_params.do_remote_prefill): at admission the scheduler asks this connector how
// many tokens past the local prefix-cache hit it can load; the blocks are allocated, the missing
// KV is pulled from the prefill engine (only the part not cached here), and the request then
// computes just the last prompt token, whose logits start generation.

import type { Block } from './block-pool.ts';
import type { TandemEngine, RequestContext } from './engine.ts';
import type { ExternalKvSource, SeqState } from './scheduler.ts';
import {
  KvTransferError,
  KvTransferServer,
  buildPrefillResponseParams,
  createKvMetrics,
  parseDecodeParams,
  pullKv,
  releaseKv,
  wantsRemoteDecode,
  type KvCompat,
  type RemotePrefill,
} from '../kvconnector/index.ts';

export interface KvConnectorOptions {
  host: string;
  port: number;
  advertiseHost: string;
  leaseSeconds: number;
  failurePolicy: 'recompute' | 'fail';
  secret?: string;
  log?: (msg: string) => void;
  /** simulated engines: payload-less transfers timed by a link model */
  simulatedLink?: { bytesPerToken: number; bandwidthBytesPerSec: number; latencyMs: number };
}

export class KvConnector implements ExternalKvSource {
  readonly server: KvTransferServer;
  readonly compat: KvCompat;
  private readonly leased = new Map<string, Block[]>();
  private readonly remotes = new WeakMap<SeqState, { ctx: RequestContext; remote: RemotePrefill; tried: boolean }>();
  private readonly metrics;

  private constructor(
    private readonly engine: TandemEngine,
    private readonly opts: KvConnectorOptions,
  ) {
    const i = engine.internals;
    this.compat = {
      architecture: i.config.architecture,
      nLayers: i.config.nLayers,
      nKvHeads: i.config.nKvHeads,
      headDim: i.config.headDim,
      fingerprint: i.fingerprint,
    };
    this.metrics = createKvMetrics(i.metrics.registry);
    this.server = new KvTransferServer({
      host: opts.host,
      port: opts.port,
      engineId: engine.info.engineId,
      compat: this.compat,
      pool: () => ({ buffer: i.memory.buffer, layout: i.pool, memory: i.memory }),
      secret: opts.secret,
      registry: i.metrics.registry,
      onRelease: (rid) => this.releaseLease(rid),
      simulatedLink: opts.simulatedLink,
      log: (level, m) => opts.log?.(`[kv ${level}] ${m}`),
    });
  }

  static async attach(engine: TandemEngine, opts: KvConnectorOptions): Promise<KvConnector> {
    const c = new KvConnector(engine, opts);
    await c.server.start();
    return c;
  }

  get port(): number {
    return this.server.port;
  }

  /** Called for every admitted request: wire up leg 1 or leg 2 when kv_transfer_params ask for it. */
  admit(ctx: RequestContext): void {
    const params = ctx.req.kvTransferParams;
    if (params === undefined) return;
    if (wantsRemoteDecode(params)) {
      ctx.onFinish = (c, reason) => (reason === 'length' || reason === 'stop' ? this.lease(c) : undefined);
      return;
    }
    const parsed = parseDecodeParams(params);
    if (parsed.kind === 'invalid') {
      // As vLLM: an unusable object is logged and the request runs without a transfer.
      this.opts.log?.(`request ${ctx.seq.id}: ${parsed.error}; computing the prompt locally`);
      return;
    }
    if (parsed.kind === 'remote-prefill') {
      this.remotes.set(ctx.seq, { ctx, remote: parsed.remote, tried: false });
      // finished before the scheduler ever asked for the KV (cancelled while waiting, or an error):
      // tell the prefill engine now instead of leaving its blocks leased until the lease expires
      ctx.onFinish = (c) => {
        const r = this.remotes.get(c.seq);
        if (r && !r.tried) {
          r.tried = true;
          this.notNeeded(r.remote);
        }
        return undefined;
      };
    }
  }

  /**
   * A request carrying these kv_transfer_params was refused before admission (bad field, context too
   * long, queue full, shutting down): the prefill engine's blocks for it are released at once.
   */
  decline(params: Record<string, unknown>): void {
    if (wantsRemoteDecode(params)) return;
    const parsed = parseDecodeParams(params);
    if (parsed.kind === 'remote-prefill') this.notNeeded(parsed.remote);
  }

  /** Leg 1 finished: keep the prompt's blocks alive under a lease and describe them for the decode engine. */
  private lease(ctx: RequestContext): Record<string, unknown> {
    const seq = ctx.seq;
    const engine = this.engine;
    const numTokens = seq.numPromptTokens;
    const blocks = seq.blocks.slice(0, Math.ceil(numTokens / engine.info.blockSize));
    engine.internals.blockPool.touch(blocks);
    this.leased.set(seq.id, blocks);
    const { transferToken } = this.server.offer({
      requestId: seq.id,
      blockIds: blocks.map((b) => b.id),
      numTokens,
      leaseMs: this.opts.leaseSeconds * 1000,
    });
    return buildPrefillResponseParams({
      engineId: engine.info.engineId,
      requestId: seq.id,
      blockIds: blocks.map((b) => b.id),
      host: this.opts.advertiseHost,
      port: this.server.port,
      transferToken,
      blockSize: engine.info.blockSize,
      kvDtype: engine.info.kvDtype,
      numTokens,
      fingerprint: engine.internals.fingerprint,
    }) as unknown as Record<string, unknown>;
  }

  private releaseLease(rid: string): void {
    const blocks = this.leased.get(rid);
    if (!blocks) return;
    this.leased.delete(rid);
    this.engine.internals.blockPool.release(blocks);
    this.engine.updateGauges();
    this.engine.kick(); // requests waiting for blocks may fit now
  }

  // ExternalKvSource (leg 2)
  match(seq: SeqState, numComputed: number): number {
    const r = this.remotes.get(seq);
    if (!r || r.tried) return 0;
    r.tried = true;
    const remoteTokens = r.remote.numTokens ?? seq.numPromptTokens;
    if (remoteTokens !== seq.numPromptTokens) {
      this.opts.log?.(`request ${seq.id}: prefill engine leased ${remoteTokens} tokens but the prompt has ${seq.numPromptTokens}; recomputing`);
      this.notNeeded(r.remote);
      return 0;
    }
    // The last prompt token always runs here: its logits start generation.
    const n = seq.numPromptTokens - 1 - numComputed;
    if (n <= 0) {
      this.notNeeded(r.remote);
      return 0;
    }
    return n;
  }

  load(seq: SeqState, start: number, count: number, done: (loadedTokens: number) => void): void {
    const r = this.remotes.get(seq)!;
    const engine = this.engine;
    const i = engine.internals;
    pullKv({
      host: r.remote.host,
      port: r.remote.port,
      requestId: r.remote.requestId,
      transferToken: r.remote.transferToken,
      compat: this.compat,
      remoteEngineId: r.remote.engineId,
      startToken: start,
      numTokens: start + count,
      dest: { pool: () => ({ buffer: i.memory.buffer, layout: i.pool, memory: i.memory }), blockTable: seq.blocks.map((b) => b.id) },
      simulated: i.profile !== undefined,
      registry: i.metrics.registry,
      signal: r.ctx.cancelled.signal, // stop the pull if the client goes away meanwhile
    }).then(
      () => {
        done(count);
        engine.kick();
      },
      (err: unknown) => {
        const reason = err instanceof KvTransferError ? err.reason : 'error';
        if (!(err instanceof KvTransferError)) this.metrics.loadFailures.inc({ reason });
        done(0);
        if (r.ctx.finished) return;
        if (this.opts.failurePolicy === 'fail') {
          engine.finishRequest(r.ctx, 'error', {
            status: 502,
            message: `KV transfer from the prefill engine ${r.remote.host}:${r.remote.port} failed (${reason}): ${(err as Error).message}`,
          });
        } else {
          this.opts.log?.(`request ${seq.id}: KV pull failed (${reason}: ${(err as Error).message}); recomputing the prompt locally`);
        }
        // Free the prefill side's blocks now rather than at lease expiry (best effort).
        if (reason !== 'unreachable') this.notNeeded(r.remote);
        engine.kick();
      },
    );
  }

  private notNeeded(remote: RemotePrefill): void {
    const simulated = this.engine.internals.profile !== undefined;
    releaseKv({ host: remote.host, port: remote.port, requestId: remote.requestId, transferToken: remote.transferToken, compat: this.compat, simulated }).catch(
      () => undefined, // the lease expires on its own
    );
  }

  async close(): Promise<void> {
    await this.server.close();
    for (const rid of [...this.leased.keys()]) this.releaseLease(rid);
  }
}
