// The gateway: one OpenAI endpoint over pools of prefill and decode engines. Raw node:http in,
// undici Pool per endpoint out; the body is parsed once, and a decode-only request is forwarded as the
// client's original bytes. P/D requests run the two vLLM NIXL legs as llm-d's decode sidecar does.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { randomUUID, timingSafeEqual } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import type { Dispatcher } from 'undici';
import { DEFAULT_CONFIG_YAML, loadSchedulerConfig } from './config.ts';
import { EndpointPool, parseRegistration, RegistrationError, type EndpointSpec, type EndpointState, type PoolOptions } from './endpoints.ts';
import { GatewayMetrics, type ErrorReason } from './metrics.ts';
import { ObservedRates } from './observed-rates.ts';
import {
  HttpError,
  badRequest,
  decodeLegBody,
  errorBody,
  prefillLegBody,
  rewriteCachedTokens,
  sendError,
  SseUsageRewriter,
  toSchedulingRequest,
} from './openai.ts';
import { Scheduler } from './scheduler.ts';
import type { BlockIndex } from './prefix/block-index.ts';
import { NoEndpointError, type Endpoint, type SchedulingRequest, type SchedulingResult } from './types.ts';

export interface GatewayOptions {
  port?: number;
  host?: string;
  endpoints?: EndpointSpec[];
  /** EndpointPickerConfig YAML; the default reproduces the seed's P/D behaviour */
  configText?: string;
  configSource?: string;
  /** when set, /v1/* needs `Authorization: Bearer <one of these>` */
  apiKeys?: string[];
  /** requests in flight beyond this get 429 */
  maxInflight?: number;
  maxBodyBytes?: number;
  /** per request, arrival to last byte */
  requestTimeoutMs?: number;
  /** extra endpoints tried when one fails before its first byte */
  maxRetries?: number;
  pool?: Partial<PoolOptions>;
  /** expose process metrics on /metrics too */
  processMetrics?: boolean;
  log?: (line: string) => void;
}

const HOP_BY_HOP = new Set([
  'host', 'connection', 'content-length', 'transfer-encoding', 'keep-alive', 'upgrade', 'te', 'trailer',
  'proxy-authorization', 'proxy-connection', 'expect', 'accept-encoding',
]);

class ClientGone extends Error {}

interface Exchange {
  req: IncomingMessage;
  res: ServerResponse;
  start: number;
  path: string;
  sreq: SchedulingRequest;
  raw: Buffer;
  stream: boolean;
  signal: AbortSignal;
  /** response headers every answer carries */
  headers: Record<string, string>;
  upstreamHeaders: Record<string, string>;
}

export class Gateway {
  readonly pool: EndpointPool;
  readonly scheduler: Scheduler;
  readonly metrics: GatewayMetrics;
  readonly rates = new ObservedRates();
  readonly server: Server;
  private inflight = 0;
  private readonly opts: Required<Omit<GatewayOptions, 'pool' | 'endpoints' | 'configText' | 'apiKeys'>> & { apiKeys: Buffer[] };
  private readonly log: (line: string) => void;

  constructor(options: GatewayOptions = {}) {
    this.log = options.log ?? ((l) => console.error(`[gateway] ${l}`));
    this.opts = {
      port: options.port ?? 8000,
      host: options.host ?? '127.0.0.1',
      configSource: options.configSource ?? (options.configText ? 'config' : 'default-config'),
      maxInflight: options.maxInflight ?? 1024,
      maxBodyBytes: options.maxBodyBytes ?? 32 * 1024 * 1024,
      requestTimeoutMs: options.requestTimeoutMs ?? 600_000,
      maxRetries: options.maxRetries ?? 2,
      processMetrics: options.processMetrics ?? false,
      log: this.log,
      apiKeys: (options.apiKeys ?? []).map((k) => Buffer.from(k)),
    };
    this.pool = new EndpointPool({ log: this.log, ...options.pool });
    const config = loadSchedulerConfig(options.configText ?? DEFAULT_CONFIG_YAML, {
      rates: this.rates,
      endpoints: this.pool,
      tokenizer: this.pool,
      log: this.log,
    }, this.opts.configSource);
    for (const n of config.notes) this.log(`config: ${n}`);
    this.scheduler = new Scheduler(config);
    const indexes = config.producers.filter((p): p is typeof p & { index: BlockIndex } => 'index' in p).map((p) => ({ name: p.name, index: p.index }));
    this.metrics = new GatewayMetrics(this.pool, this.opts.processMetrics, indexes);
    for (const spec of options.endpoints ?? []) this.pool.upsert(spec, 'static');
    this.server = createServer({ keepAliveTimeout: 65_000, requestTimeout: 0 }, (req, res) => {
      this.route(req, res).catch((err) => {
        this.log(`internal error: ${(err as Error)?.stack ?? String(err)}`);
        sendError(res, new HttpError(500, 'internal gateway error', 'server_error', 'internal_error'));
      });
    });
  }

  async listen(): Promise<this> {
    this.pool.start();
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.opts.port, this.opts.host, () => resolve());
    });
    return this;
  }

  get port(): number {
    return (this.server.address() as AddressInfo).port;
  }

  get url(): string {
    return `http://${this.opts.host}:${this.port}`;
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((r) => this.server.close(() => r()));
    await this.scheduler.close();
    await this.pool.close();
  }

  private authorized(req: IncomingMessage): boolean {
    if (this.opts.apiKeys.length === 0) return true;
    const h = req.headers.authorization;
    if (!h || !h.startsWith('Bearer ')) return false;
    const got = Buffer.from(h.slice(7).trim());
    return this.opts.apiKeys.some((k) => k.length === got.length && timingSafeEqual(k, got));
  }

  private async route(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const path = q >= 0 ? url.slice(0, q) : url;
    const method = req.method ?? 'GET';
    if (method === 'POST' && (path === '/v1/completions' || path === '/v1/chat/completions')) {
      return this.inference(req, res, path, path === '/v1/completions' ? 'completions' : 'chat');
    }
    if (path.startsWith('/v1/') && !path.startsWith('/v1/endpoints') && !this.authorized(req)) {
      this.metrics.error('unauthorized');
      return sendError(res, new HttpError(401, 'invalid or missing API key', 'authentication_error', 'invalid_api_key'));
    }
    if (method === 'GET' && path === '/v1/models') return this.json(res, 200, this.models());
    if (method === 'GET' && path === '/health') return this.json(res, 200, { status: 'ok' });
    if (method === 'GET' && path === '/ready') {
      const ready = this.pool.all().some((e) => e.healthy && e.role !== 'prefill');
      return this.json(res, ready ? 200 : 503, { ready });
    }
    if (method === 'GET' && path === '/metrics') {
      const text = await this.metrics.registry.metrics();
      res.writeHead(200, { 'content-type': this.metrics.registry.contentType });
      res.end(text);
      return;
    }
    if (path === '/v1/endpoints' && method === 'GET') return this.json(res, 200, { data: this.pool.all().map((e) => e.describe()) });
    if ((path === '/v1/endpoints/register' || path === '/admin/endpoints') && method === 'POST') return this.register(req, res);
    if (path === '/v1/endpoints/deregister' && method === 'POST') return this.deregister(req, res);
    if (path === '/admin/endpoints' && method === 'DELETE') {
      // alias used by `tandem serve --register` on shutdown: DELETE /admin/endpoints?url=…
      const target = new URLSearchParams(q >= 0 ? url.slice(q + 1) : '').get('url');
      req.resume();
      let id: string | undefined;
      try {
        id = target ? new URL(target).host : undefined;
      } catch {
        id = undefined;
      }
      if (!id) return sendError(res, badRequest('give ?url=<endpoint base URL>', 'url'));
      const removed = this.pool.remove(id, 'deregistered');
      return this.json(res, removed ? 200 : 404, { removed });
    }
    req.resume();
    sendError(res, new HttpError(404, `no route for ${method} ${path}`, 'invalid_request_error', 'not_found'));
  }

  private json(res: ServerResponse, status: number, obj: unknown): void {
    const body = JSON.stringify(obj);
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
    res.end(body);
  }

  private models(): unknown {
    const created = Math.floor(Date.now() / 1000);
    return { object: 'list', data: this.pool.knownModels().map((id) => ({ id, object: 'model', created, owned_by: 'tandem' })) };
  }

  private async register(req: IncomingMessage, res: ServerResponse): Promise<void> {
    try {
      const raw = await readBody(req, 64 * 1024);
      let body: unknown;
      try {
        body = JSON.parse(raw.toString('utf8'));
      } catch {
        throw new RegistrationError('body is not valid JSON');
      }
      const spec = parseRegistration(body);
      const ep = this.pool.upsert(spec, 'registered');
      this.json(res, 200, { id: ep.id, heartbeat_interval_ms: Math.round(this.pool.opts.heartbeatTtlMs / 3), ttl_ms: this.pool.opts.heartbeatTtlMs });
    } catch (err) {
      if (err instanceof HttpError) return sendError(res, err);
      if (err instanceof RegistrationError) return sendError(res, badRequest(err.message));
      throw err;
    }
  }

  private async deregister(req: IncomingMessage, res: ServerResponse): Promise<void> {
    try {
      const body = JSON.parse((await readBody(req, 64 * 1024)).toString('utf8')) as { url?: unknown };
      if (typeof body?.url !== 'string') throw badRequest('url is required', 'url');
      let id: string;
      try {
        id = new URL(body.url).host;
      } catch {
        throw badRequest(`'${body.url}' is not a URL`, 'url');
      }
      const removed = this.pool.remove(id, 'deregistered');
      this.json(res, removed ? 200 : 404, { removed });
    } catch (err) {
      if (err instanceof HttpError) return sendError(res, err);
      if (err instanceof SyntaxError) return sendError(res, badRequest('body is not valid JSON'));
      throw err;
    }
  }

  // ---------------------------------------------------------------- inference

  private async inference(req: IncomingMessage, res: ServerResponse, path: string, kind: 'completions' | 'chat'): Promise<void> {
    const start = performance.now();
    const requestId = (req.headers['x-request-id'] as string | undefined) || randomUUID();
    const headers: Record<string, string> = { 'x-request-id': requestId };
    if (!this.authorized(req)) {
      this.metrics.error('unauthorized');
      return sendError(res, new HttpError(401, 'invalid or missing API key', 'authentication_error', 'invalid_api_key'), headers);
    }
    if (this.inflight >= this.opts.maxInflight) {
      this.metrics.error('overloaded');
      return sendError(res, new HttpError(429, `gateway overloaded: ${this.inflight} requests in flight`, 'rate_limit_error', 'gateway_overloaded'), { ...headers, 'retry-after': '1' });
    }
    this.inflight++;
    const ac = new AbortController();
    const onClose = () => {
      if (!res.writableFinished) ac.abort(new ClientGone('client disconnected'));
    };
    res.on('close', onClose);
    const timer = setTimeout(() => ac.abort(new HttpError(504, `request timed out after ${this.opts.requestTimeoutMs} ms`, 'server_error', 'timeout')), this.opts.requestTimeoutMs);
    let route: SchedulingResult['decision'] = 'decode-only';
    try {
      let raw: Buffer;
      try {
        raw = await readBody(req, this.opts.maxBodyBytes);
      } catch (err) {
        if (err instanceof HttpError && err.status === 413) this.metrics.error('body_too_large');
        throw err;
      }
      let parsed: unknown;
      try {
        parsed = JSON.parse(raw.toString('utf8'));
      } catch {
        throw badRequest('request body is not valid JSON');
      }
      const sreq = toSchedulingRequest(kind, parsed, requestId, req.headers);
      const candidates = this.pool.candidates(sreq.model);
      if (candidates.length === 0) {
        const known = this.pool.knownModels();
        if (known.length && !known.includes(sreq.model) && this.pool.all().every((e) => !e.healthy || e.models.length > 0)) {
          this.metrics.error('model_not_found');
          throw new HttpError(404, `The model \`${sreq.model}\` does not exist.`, 'NotFoundError', 'model_not_found', 'model');
        }
        this.metrics.error('no_endpoint');
        throw new HttpError(503, 'no healthy endpoint can serve the request', 'server_error', 'no_healthy_endpoint');
      }
      const t0 = performance.now();
      let result: SchedulingResult;
      try {
        result = await this.scheduler.schedule(sreq, candidates);
      } catch (err) {
        if (err instanceof NoEndpointError) {
          this.metrics.error('no_endpoint');
          throw new HttpError(503, err.message, 'server_error', 'no_healthy_endpoint');
        }
        throw err;
      }
      this.metrics.schedulerDuration.observe((performance.now() - t0) / 1000);
      this.metrics.decision(result.decision);
      this.scheduler.routed(sreq, result);
      headers['x-tandem-decision'] = sanitize(result.reason);
      const upstreamHeaders = forwardHeaders(req, requestId, this.opts.apiKeys.length > 0);
      const ex: Exchange = { req, res, start, path, sreq, raw, stream: sreq.body.stream === true, signal: ac.signal, headers, upstreamHeaders };
      route = await this.dispatch(ex, result);
    } catch (err) {
      const reason = ac.signal.aborted ? ac.signal.reason : err;
      if (reason instanceof ClientGone) {
        this.metrics.error('client_disconnect');
      } else if (reason instanceof HttpError) {
        if (reason.code === 'timeout') this.metrics.error('timeout');
        sendError(res, reason, headers);
      } else throw err;
    } finally {
      clearTimeout(timer);
      res.off('close', onClose);
      this.inflight--;
      this.metrics.observeDuration(route, (performance.now() - start) / 1000);
    }
  }

  /** Runs the legs; returns the route actually taken. */
  private async dispatch(ex: Exchange, result: SchedulingResult): Promise<SchedulingResult['decision']> {
    if (result.decision === 'prefill-decode' && result.prefill?.length) {
      const pre = await this.prefillLeg(ex, result.prefill);
      if (pre) {
        ex.headers['x-tandem-route'] = 'prefill-decode';
        ex.headers['x-tandem-prefill-endpoint'] = pre.endpoint.id;
        this.metrics.request('prefill-decode');
        const body = Buffer.from(decodeLegBody(ex.sreq.body, pre.kvTransferParams));
        const tokens = ex.sreq.tokens?.count ?? 0;
        await this.decodeLeg(ex, result.decode, body, { cachedTokens: pre.cachedTokens, transferTokens: tokens });
        return 'prefill-decode';
      }
      ex.headers['x-tandem-fallback'] = 'prefill-failed';
      ex.headers['x-tandem-decision'] += '; prefill leg failed, decoding locally';
    }
    ex.headers['x-tandem-route'] = 'decode-only';
    this.metrics.request('decode-only');
    await this.decodeLeg(ex, result.decode, ex.raw, undefined);
    return 'decode-only';
  }

  private async send(ep: EndpointState, ex: Exchange, body: Buffer): Promise<Dispatcher.ResponseData> {
    return ep.traffic.request({
      path: ex.path,
      method: 'POST',
      headers: { ...ex.upstreamHeaders, 'content-length': String(body.length) },
      body,
      signal: ex.signal,
    });
  }

  private upstreamFailed(ex: Exchange, ep: EndpointState, err: unknown, reason: ErrorReason): void {
    if (ex.signal.aborted) throw ex.signal.reason;
    this.metrics.error(reason);
    const code = (err as { code?: string })?.code ?? '';
    if (reason === 'upstream_connect' && /ECONNREFUSED|ECONNRESET|UND_ERR_SOCKET|UND_ERR_CONNECT|EHOSTUNREACH|ENOTFOUND/.test(code)) this.pool.reportFailure(ep, err);
  }

  /** Leg 1. Returns undefined when every tried prefill endpoint failed (the caller decodes locally). */
  private async prefillLeg(ex: Exchange, targets: readonly Endpoint[]): Promise<{ endpoint: EndpointState; kvTransferParams: unknown; cachedTokens: number } | undefined> {
    const body = Buffer.from(prefillLegBody(ex.sreq.body));
    const tries = Math.min(targets.length, this.opts.maxRetries + 1);
    for (let i = 0; i < tries; i++) {
      const ep = targets[i] as EndpointState;
      if (i > 0 && !ep.healthy) continue;
      const t0 = performance.now();
      const tokens = ex.sreq.tokens?.count ?? 0;
      ep.inflight++;
      ep.inflightTokens += tokens;
      try {
        const r = await this.send(ep, ex, body);
        const text = await r.body.text();
        if (r.statusCode < 200 || r.statusCode >= 300) {
          this.log(`prefill ${ep.id} answered ${r.statusCode} for ${ex.sreq.requestId}: ${text.slice(0, 200)}`);
          this.metrics.error('prefill_failed');
          continue;
        }
        const j = JSON.parse(text) as { kv_transfer_params?: unknown; usage?: { prompt_tokens_details?: { cached_tokens?: unknown } } };
        if (!j.kv_transfer_params || typeof j.kv_transfer_params !== 'object') {
          this.log(`prefill ${ep.id} returned no kv_transfer_params for ${ex.sreq.requestId}`);
          this.metrics.error('prefill_failed');
          continue;
        }
        const cached = Number(j.usage?.prompt_tokens_details?.cached_tokens ?? 0) || 0;
        this.rates.observePrefill(ep.id, tokens - cached, (performance.now() - t0) / 1000);
        return { endpoint: ep, kvTransferParams: j.kv_transfer_params, cachedTokens: cached };
      } catch (err) {
        if (ex.signal.aborted) throw ex.signal.reason;
        this.log(`prefill ${ep.id} failed for ${ex.sreq.requestId}: ${(err as Error).message}`);
        this.upstreamFailed(ex, ep, err, 'upstream_connect');
        this.metrics.error('prefill_failed');
      } finally {
        ep.inflight--;
        ep.inflightTokens -= tokens;
      }
    }
    return undefined;
  }

  /**
   * Leg 2 (or the only leg). Retries on the next ranked endpoint while nothing has reached the client;
   * once bytes flowed, a broken stream ends with an SSE error event and [DONE].
   */
  private async decodeLeg(ex: Exchange, targets: readonly Endpoint[], body: Buffer, pd: { cachedTokens: number; transferTokens: number } | undefined): Promise<void> {
    const tries = Math.min(targets.length, this.opts.maxRetries + 1);
    let lastError: HttpError | undefined;
    const tokens = ex.sreq.tokens?.count ?? 0;
    for (let i = 0; i < tries; i++) {
      const ep = targets[i] as EndpointState;
      if (i > 0 && !ep.healthy) continue;
      const legStart = performance.now();
      // remote-prefilled requests load KV instead of computing it
      const pending = pd ? 0 : tokens;
      let pendingHeld = pending;
      ep.inflight++;
      ep.inflightTokens += pending;
      const release = () => {
        ep.inflightTokens -= pendingHeld;
        pendingHeld = 0;
      };
      ex.headers['x-tandem-decode-endpoint'] = ep.id;
      try {
        let r: Dispatcher.ResponseData;
        try {
          r = await this.send(ep, ex, body);
        } catch (err) {
          this.upstreamFailed(ex, ep, err, 'upstream_connect');
          lastError = new HttpError(502, `endpoint ${ep.id} failed: ${(err as Error).message}`, 'server_error', 'upstream_error');
          continue;
        }
        const retryable = r.statusCode >= 500 || r.statusCode === 429;
        const contentType = String(r.headers['content-type'] ?? 'application/json');
        if (retryable && i + 1 < tries) {
          const text = await r.body.text().catch(() => '');
          this.metrics.error('upstream_status');
          this.log(`${ep.id} answered ${r.statusCode} for ${ex.sreq.requestId}; trying another endpoint: ${text.slice(0, 200)}`);
          lastError = new HttpError(r.statusCode, text || `upstream ${r.statusCode}`, 'server_error', 'upstream_error');
          continue;
        }
        const sse = ex.stream && r.statusCode === 200 && contentType.startsWith('text/event-stream');
        if (!sse) {
          // a complete JSON answer: buffer it (small), so an upstream dying mid-body is still retryable
          let buf: Buffer;
          try {
            buf = Buffer.from(await r.body.arrayBuffer());
          } catch (err) {
            this.upstreamFailed(ex, ep, err, 'upstream_connect');
            lastError = new HttpError(502, `endpoint ${ep.id} broke mid-response: ${(err as Error).message}`, 'server_error', 'upstream_error');
            continue;
          }
          release();
          if (r.statusCode >= 400) this.metrics.error('upstream_status');
          if (pd && r.statusCode === 200) {
            buf = this.rewriteJson(buf, pd.cachedTokens);
          }
          ex.res.writeHead(r.statusCode, { ...ex.headers, 'content-type': contentType, 'content-length': buf.length });
          ex.res.end(buf);
          return;
        }
        await this.relayStream(ex, ep, r, pd, legStart, tokens, release, i + 1 < tries);
        return;
      } catch (err) {
        if (err instanceof RetryableStreamError) {
          lastError = new HttpError(502, err.message, 'server_error', 'upstream_error');
          continue;
        }
        throw err;
      } finally {
        release();
        ep.inflight--;
      }
    }
    throw lastError ?? new HttpError(503, 'no healthy endpoint can serve the request', 'server_error', 'no_healthy_endpoint');
  }

  private rewriteJson(buf: Buffer, cached: number): Buffer {
    try {
      const obj = JSON.parse(buf.toString('utf8')) as Record<string, unknown>;
      return rewriteCachedTokens(obj, cached) ? Buffer.from(JSON.stringify(obj)) : buf;
    } catch {
      return buf;
    }
  }

  /** A split request's first streamed byte bounds the KV pull (a whole non-streamed answer does not). */
  private observeSplit(ep: EndpointState, tokens: number, seconds: number): void {
    this.rates.observeTransfer(tokens * (ep.kvBytesPerToken ?? 16384), seconds);
  }

  /**
   * Relays an SSE body event by event as it arrives (plain 'data' events: cheaper than an async
   * iterator per chunk). Headers are committed with the first chunk, so a stream that breaks before
   * it can still be retried elsewhere.
   */
  private relayStream(
    ex: Exchange,
    ep: EndpointState,
    r: Dispatcher.ResponseData,
    pd: { cachedTokens: number; transferTokens: number } | undefined,
    legStart: number,
    tokens: number,
    release: () => void,
    canRetry: boolean,
  ): Promise<void> {
    const body = r.body;
    const res = ex.res;
    const route = pd ? 'prefill-decode' : 'decode-only';
    const rewriter = pd ? new SseUsageRewriter(pd.cachedTokens) : undefined;
    return new Promise<void>((resolve, reject) => {
      let started = false;
      let finished = false;
      let last = 0;
      let tail = '';
      const cleanup = () => {
        finished = true;
        body.off('data', onData);
        body.off('end', onEnd);
        body.off('error', onError);
        ex.signal.removeEventListener('abort', onAbort);
      };
      const start = () => {
        started = true;
        release();
        last = performance.now();
        this.metrics.observeTtft(route, (last - ex.start) / 1000);
        if (pd) this.observeSplit(ep, pd.transferTokens, (last - legStart) / 1000);
        else this.rates.observePrefill(ep.id, tokens, (last - legStart) / 1000);
        // no flushHeaders: the headers leave in the same packet as the first chunk
        res.writeHead(200, { ...ex.headers, 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
      };
      const onData = (chunk: Buffer) => {
        if (!started) start();
        else {
          const t = performance.now();
          this.metrics.itl.observe((t - last) / 1000);
          last = t;
        }
        const data = rewriter ? rewriter.push(chunk) : chunk;
        if (rewriter && data === '') return;
        tail = lastBytes(tail, typeof data === 'string' ? Buffer.from(data) : data);
        if (!res.write(data)) {
          body.pause();
          res.once('drain', () => body.resume());
        }
      };
      const onEnd = () => {
        if (finished) return;
        cleanup();
        if (!started) start();
        if (rewriter) {
          const rest = rewriter.flush();
          if (rest) res.write(rest);
        }
        res.end();
        resolve();
      };
      const onAbort = () => {
        if (finished) return;
        cleanup();
        body.destroy();
        reject(ex.signal.reason);
      };
      const onError = (err: Error) => {
        if (finished) return;
        cleanup();
        if (ex.signal.aborted) return reject(ex.signal.reason);
        this.pool.reportFailure(ep, err);
        if (!started) {
          this.metrics.error('upstream_connect');
          const msg = `endpoint ${ep.id} broke before its first byte: ${err.message}`;
          return reject(canRetry ? new RetryableStreamError(msg) : new HttpError(502, msg, 'server_error', 'upstream_error'));
        }
        this.metrics.error('decode_stream_broken');
        this.log(`stream from ${ep.id} broke for ${ex.sreq.requestId}: ${err.message}`);
        // finish the SSE stream properly: an error event the OpenAI clients understand, then [DONE]
        const sep = tail.endsWith('\n\n') || tail === '' ? '' : '\n\n';
        const ev = errorBody(`upstream ${ep.id} failed mid-stream: ${err.message}`, 'server_error', 'upstream_stream_broken');
        res.end(`${sep}data: ${ev}\n\ndata: [DONE]\n\n`);
        resolve();
      };
      if (ex.signal.aborted) return onAbort();
      body.on('data', onData);
      body.on('end', onEnd);
      body.on('error', onError);
      ex.signal.addEventListener('abort', onAbort, { once: true });
    });
  }
}

class RetryableStreamError extends Error {}

function lastBytes(prev: string, chunk: Buffer): string {
  const s = chunk.length >= 2 ? chunk.toString('latin1', chunk.length - 2) : prev + chunk.toString('latin1');
  return s.slice(-2);
}

function sanitize(s: string): string {
  // header values must be latin1 without control characters
  return s.replace(/[^\x20-\x7e]/g, '?');
}

function forwardHeaders(req: IncomingMessage, requestId: string, stripAuth: boolean): Record<string, string> {
  const out: Record<string, string> = {};
  const raw = req.rawHeaders;
  for (let i = 0; i < raw.length; i += 2) {
    const k = raw[i]!.toLowerCase();
    if (HOP_BY_HOP.has(k) || k === 'x-request-id' || (stripAuth && k === 'authorization')) continue;
    out[k] = out[k] !== undefined ? `${out[k]}, ${raw[i + 1]}` : raw[i + 1]!;
  }
  out['x-request-id'] = requestId;
  out['content-type'] = 'application/json';
  return out;
}

export function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  const declared = Number(req.headers['content-length']);
  if (declared > limit) {
    req.resume();
    return Promise.reject(new HttpError(413, `request body of ${declared} bytes exceeds the limit of ${limit}`, 'invalid_request_error', 'request_too_large'));
  }
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > limit) {
        req.removeAllListeners('data');
        req.resume();
        reject(new HttpError(413, `request body exceeds the limit of ${limit} bytes`, 'invalid_request_error', 'request_too_large'));
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size)));
    req.on('error', reject);
    req.on('aborted', () => reject(new ClientGone('client disconnected')));
  });
}

export async function startGateway(options: GatewayOptions = {}): Promise<Gateway> {
  return new Gateway(options).listen();
}
