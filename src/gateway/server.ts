// The gateway: one OpenAI endpoint over pools of prefill and decode engines. Its own HTTP/1.1 server
// in (h1-server.ts), its own keep-alive client per endpoint out (h1-client.ts); the body is parsed
// once, and a decode-only request is forwarded as the client's original bytes. P/D requests run the
// two vLLM NIXL legs as llm-d's decode sidecar does.
import { randomUUID, timingSafeEqual } from 'node:crypto';
import { H1Server, type H1Request, type H1Response } from './h1-server.ts';
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
import { DeadlineList, type Deadlined } from './deadlines.ts';
import { UpstreamLeg, type SinkFactory, type StreamSink } from './upstream.ts';
import type { BlockIndex } from './prefix/block-index.ts';
import { NoEndpointError, type Endpoint, type RouteDecision, type SchedulingRequest, type SchedulingResult } from './types.ts';

export interface GatewayOptions {
  port?: number;
  host?: string;
  endpoints?: EndpointSpec[];
  /** EndpointPickerConfig YAML; the default reproduces the seed's P/D behaviour */
  configText?: string;
  configSource?: string;
  /** when set, /v1/* needs `Authorization: Bearer <one of these>` */
  apiKeys?: string[];
  /**
   * When set, the control plane (registering and deregistering endpoints, listing them) needs
   * `Authorization: Bearer <this>`. Unset: it needs an API key when there are any, else it is open
   * (a laptop). An open registration lets anyone who reaches the gateway receive its prompts.
   */
  registrationKey?: string;
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

/**
 * H1Response.onclose for every exchange: one shared function, the exchange found through the answer.
 * (A closure per request, created in the Exchange constructor, made 100 KB requests 1.6–2× costlier:
 * measured, not understood; and a named arrow field costs a defineProperty under tsx's keepNames.)
 */
function clientGone(this: H1Response): void {
  (this.context as Exchange).abort(new ClientGone('client disconnected'));
}

/** H1Response.ondrain of a relayed stream: the client took the backlog, read the engine again. */
function resumeLeg(this: H1Response): void {
  (this.context as Exchange).leg?.resume();
}

/** The OpenAI inference routes, matched without slicing the URL (a query string is allowed). */
function inferenceKind(url: string | undefined): 'completions' | 'chat' | undefined {
  if (!url) return undefined;
  if (url.startsWith('/v1/completions') && (url.length === 15 || url.charCodeAt(15) === 0x3f)) return 'completions';
  if (url.startsWith('/v1/chat/completions') && (url.length === 20 || url.charCodeAt(20) === 0x3f)) return 'chat';
  return undefined;
}

/** Uncached prompt tokens held against an endpoint until its first byte (token-load scorer, cost model). */
class PendingTokens {
  constructor(
    private readonly ep: EndpointState,
    private held: number,
  ) {
    ep.inflightTokens += held;
  }

  release(): void {
    this.ep.inflightTokens -= this.held;
    this.held = 0;
  }
}

/** One client request on its way through the gateway: its deadline, and how to cancel its current leg. */
class Exchange implements Deadlined {
  sreq!: SchedulingRequest;
  raw!: Buffer;
  stream = false;
  /** forwarded to the engines, serialized once as `name: value\r\n` lines for both legs */
  upstreamHeaders!: string;
  aborted = false;
  reason: unknown;
  /** the leg in flight, cancelled on abort */
  leg: UpstreamLeg | undefined;
  /** where `leg` went */
  legEndpoint: EndpointState | undefined;
  /** `leg` is a prefill leg (abandoning it costs only a decode-local run) */
  legIsPrefill = false;
  deadline = 0;
  prevDeadline: Deadlined | undefined;
  nextDeadline: Deadlined | undefined;
  listed = false;

  constructor(
    readonly req: H1Request,
    readonly res: H1Response,
    readonly start: number,
    readonly path: string,
    /** response headers every answer carries */
    readonly headers: Record<string, string>,
    private readonly timeoutMs: number,
  ) {}

  /** The leg in flight settled. */
  endLeg(): void {
    this.leg = undefined;
    this.legEndpoint = undefined;
  }

  abort(reason: Error): void {
    if (this.aborted) return;
    this.aborted = true;
    this.reason = reason;
    const leg = this.leg;
    this.endLeg();
    leg?.abort(reason);
  }

  expired(): void {
    this.abort(new HttpError(504, `request timed out after ${this.timeoutMs} ms`, 'server_error', 'timeout'));
  }
}

export class Gateway {
  readonly pool: EndpointPool;
  readonly scheduler: Scheduler;
  readonly metrics: GatewayMetrics;
  readonly rates = new ObservedRates();
  readonly server: H1Server;
  private inflight = 0;
  private readonly opts: Required<Omit<GatewayOptions, 'pool' | 'endpoints' | 'configText' | 'apiKeys' | 'registrationKey'>> & {
    apiKeys: Buffer[];
    registrationKeys: Buffer[];
  };
  readonly log: (line: string) => void;
  private readonly deadlines: DeadlineList;

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
      registrationKeys: options.registrationKey ? [Buffer.from(options.registrationKey)] : (options.apiKeys ?? []).map((k) => Buffer.from(k)),
    };
    // deadlines fire up to a tick late: 1 s for the default 600 s, finer for short timeouts
    this.deadlines = new DeadlineList(Math.min(1000, Math.max(5, Math.floor(this.opts.requestTimeoutMs / 20))));
    this.pool = new EndpointPool({ log: this.log, ...options.pool });
    this.pool.onStalled = (ep, reason, safeOnly) => this.failLegsTo(ep, reason, safeOnly);
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
    const internalError = (res: H1Response) => (err: unknown) => {
      this.log(`internal error: ${(err as Error)?.stack ?? String(err)}`);
      sendError(res, new HttpError(500, 'internal gateway error', 'server_error', 'internal_error'));
    };
    this.server = new H1Server(
      (req, res) => {
        // inference straight from the listener: one async frame (and promise) less per request
        const kind = req.method === 'POST' ? inferenceKind(req.url) : undefined;
        if (kind) this.inference(req, res, kind === 'completions' ? '/v1/completions' : '/v1/chat/completions', kind).catch(internalError(res));
        else this.route(req, res).catch(internalError(res));
      },
      {
        maxBodyBytes: this.opts.maxBodyBytes,
        keepAliveTimeoutMs: 65_000,
        errorBody: (status, message) => errorBody(message, 'invalid_request_error', status === 413 ? 'request_too_large' : 'bad_request'),
      },
      (err) => this.log(`internal error: ${(err as Error)?.stack ?? String(err)}`),
    );
  }

  async listen(): Promise<this> {
    this.pool.start();
    this.deadlines.start();
    await this.server.listen(this.opts.port, this.opts.host);
    return this;
  }

  get port(): number {
    return this.server.address().port;
  }

  get url(): string {
    return `http://${this.opts.host}:${this.port}`;
  }

  /** True once `drain` started: /ready answers 503 so load balancers stop sending. */
  draining = false;

  /**
   * Graceful stop (SIGTERM): no new connections, /ready 503, requests in progress finish — up to
   * `timeoutMs`, after which what is left is cut — then everything closes.
   */
  async drain(timeoutMs: number): Promise<void> {
    this.draining = true;
    const inflight = this.inflight;
    if (inflight > 0) this.log(`draining: ${inflight} requests in flight, up to ${Math.round(timeoutMs / 1000)} s`);
    await this.server.drain(timeoutMs);
    if (this.inflight > 0) this.log(`drain timeout: ${this.inflight} requests cut`);
    await this.close();
  }

  async close(): Promise<void> {
    await this.server.close();
    this.deadlines.stop();
    await this.scheduler.close();
    await this.pool.close();
  }

  private authorized(req: H1Request, keys = this.opts.apiKeys): boolean {
    if (keys.length === 0) return true;
    const h = req.get('authorization');
    if (!h || !h.startsWith('Bearer ')) return false;
    const got = Buffer.from(h.slice(7).trim());
    return keys.some((k) => k.length === got.length && timingSafeEqual(k, got));
  }

  private async route(req: H1Request, res: H1Response): Promise<void> {
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const path = q >= 0 ? url.slice(0, q) : url;
    const method = req.method ?? 'GET';
    if (method === 'POST' && (path === '/v1/completions' || path === '/v1/chat/completions')) {
      return this.inference(req, res, path, path === '/v1/completions' ? 'completions' : 'chat');
    }
    const control = path.startsWith('/v1/endpoints') || path === '/admin/endpoints';
    if ((control || path.startsWith('/v1/')) && !this.authorized(req, control ? this.opts.registrationKeys : this.opts.apiKeys)) {
      this.metrics.error('unauthorized');
      const what = control ? 'registration key (or, without --registration-key, API key)' : 'API key';
      return sendError(res, new HttpError(401, `invalid or missing ${what}`, 'authentication_error', 'invalid_api_key'));
    }
    if (method === 'GET' && path === '/v1/models') return this.json(res, 200, this.models());
    if (method === 'GET' && path === '/health') return this.json(res, 200, { status: 'ok' });
    if (method === 'GET' && path === '/ready') {
      const ready = !this.draining && this.pool.all().some((e) => e.healthy && e.role !== 'prefill');
      return this.json(res, ready ? 200 : 503, { ready });
    }
    if (method === 'GET' && path === '/metrics') {
      const text = await this.metrics.registry.metrics();
      res.writeHead(200, { 'content-type': this.metrics.registry.contentType, 'content-length': Buffer.byteLength(text) });
      res.end(text);
      return;
    }
    if (path === '/v1/endpoints' && method === 'GET') return this.json(res, 200, { data: this.pool.all().map((e) => e.describe()) });
    if ((path === '/v1/endpoints/register' || path === '/admin/endpoints') && method === 'POST') return this.register(req, res);
    if (path === '/v1/endpoints/deregister' && method === 'POST') return this.deregister(req, res);
    if (path === '/admin/endpoints' && method === 'DELETE') {
      // alias used by `tandem serve --register` on shutdown: DELETE /admin/endpoints?url=…
      const target = new URLSearchParams(q >= 0 ? url.slice(q + 1) : '').get('url');
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
    sendError(res, new HttpError(404, `no route for ${method} ${path}`, 'invalid_request_error', 'not_found'));
  }

  private json(res: H1Response, status: number, obj: unknown): void {
    const body = JSON.stringify(obj);
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
    res.end(body);
  }

  private models(): unknown {
    const created = Math.floor(Date.now() / 1000);
    return { object: 'list', data: this.pool.knownModels().map((id) => ({ id, object: 'model', created, owned_by: 'tandem' })) };
  }

  private async register(req: H1Request, res: H1Response): Promise<void> {
    try {
      const raw = controlBody(req);
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

  private async deregister(req: H1Request, res: H1Response): Promise<void> {
    try {
      const body = JSON.parse(controlBody(req).toString('utf8')) as { url?: unknown };
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

  private async inference(req: H1Request, res: H1Response, path: string, kind: 'completions' | 'chat'): Promise<void> {
    const start = performance.now();
    const requestId = req.get('x-request-id') || randomUUID();
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
    const ex = new Exchange(req, res, start, path, headers, this.opts.requestTimeoutMs);
    res.context = ex;
    res.onclose = clientGone;
    this.deadlines.add(ex, start + this.opts.requestTimeoutMs);
    let route: SchedulingResult['decision'] = 'decode-only';
    try {
      if (req.bodyTooLarge) {
        this.metrics.error('body_too_large');
        throw new HttpError(413, `request body exceeds the limit of ${this.opts.maxBodyBytes} bytes`, 'invalid_request_error', 'request_too_large');
      }
      const raw = req.body;
      let parsed: unknown;
      try {
        parsed = JSON.parse(raw.toString('utf8'));
      } catch {
        throw badRequest('request body is not valid JSON');
      }
      const sreq = toSchedulingRequest(kind, parsed, requestId, req);
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
        // synchronous unless a producer has to wait (an engine's /tokenize): no promise hop per request
        const r = this.scheduler.scheduleNow(sreq, candidates);
        result = r instanceof Promise ? await r : r;
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
      ex.sreq = sreq;
      ex.raw = raw;
      ex.stream = sreq.body.stream === true;
      ex.upstreamHeaders = forwardHeaders(req, requestId, this.opts.apiKeys.length > 0);
      if (result.decision === 'prefill-decode' && result.prefill?.length) route = await this.dispatch(ex, result);
      else await this.decodeOnly(ex, result);
    } catch (err) {
      const reason = ex.aborted ? ex.reason : err;
      if (reason instanceof ClientGone) {
        this.metrics.error('client_disconnect');
      } else if (reason instanceof HttpError) {
        if (reason.code === 'timeout') this.metrics.error('timeout');
        sendError(res, reason, headers);
      } else throw err;
    } finally {
      this.deadlines.remove(ex);
      res.onclose = undefined;
      this.inflight--;
      this.metrics.observeDuration(route, (performance.now() - start) / 1000);
    }
  }

  /**
   * An endpoint stopped answering: its legs in flight fail now and take the usual paths — a prefill
   * leg falls back to decode-local, a leg with nothing relayed yet is retried elsewhere, a stream ends
   * with an error event — instead of waiting for the request timeout. Rare, so the in-flight
   * exchanges are scanned here rather than indexed per endpoint on every request.
   */
  private failLegsTo(ep: EndpointState, reason: Error, safeOnly: boolean): void {
    // safe to abandon: a prefill leg (the decode engine computes the prompt itself), a leg whose
    // answer has not begun reaching the client (it is retried on another endpoint), or a stream that
    // has been as silent as the endpoint's scrapes (it would only end later, the same way)
    // — but a decode leg only when another engine can take over: with none, a false alarm would fail
    // requests that the probes' verdict (the strong signal) might yet let finish
    const silentSince = performance.now() - this.pool.opts.stalenessMs / 2;
    const elsewhere = !safeOnly || this.pool.all().some((e) => e !== ep && e.healthy && !e.stalled && e.role !== 'prefill');
    const stuck = (this.deadlines.snapshot() as Exchange[]).filter(
      (ex) =>
        ex.leg !== undefined &&
        ex.legEndpoint === ep &&
        (!safeOnly || ex.legIsPrefill || (elsewhere && (!ex.res.headersSent || (ex.leg.sink instanceof SseRelay && ex.leg.sink.last < silentSince)))),
    );
    if (stuck.length > 0) this.log(`endpoint ${ep.id}: cancelling its ${stuck.length} ${safeOnly ? 'not yet answering ' : ''}legs in flight`);
    for (const ex of stuck) ex.leg?.abort(reason);
  }

  /** Runs the legs; returns the route actually taken. */
  private async dispatch(ex: Exchange, result: SchedulingResult): Promise<SchedulingResult['decision']> {
    if (result.decision === 'prefill-decode' && result.prefill?.length) {
      // The decode engine is chosen now (decode-first): count the request against it from now, so a
      // burst of arrivals spreads over the decode pool instead of finding every decode engine idle
      // until the prefills finish.
      const reserved = result.decode[0] as EndpointState | undefined;
      if (reserved) reserved.inflight++;
      let pre;
      try {
        pre = await this.prefillLeg(ex, result.prefill);
      } finally {
        if (reserved) reserved.inflight--;
      }
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
    await this.decodeOnly(ex, result);
    return 'decode-only';
  }

  /** Not async itself: the common route costs one promise (decodeLeg's), not two. */
  private decodeOnly(ex: Exchange, result: SchedulingResult): Promise<void> {
    ex.headers['x-tandem-route'] = 'decode-only';
    this.metrics.request('decode-only');
    return this.decodeLeg(ex, result.decode, ex.raw, undefined);
  }

  /** Sends one leg; a client gone or a timeout cancels it through `ex.abort`. */
  private send(ep: EndpointState, ex: Exchange, body: Buffer, leg: UpstreamLeg, prefill = false): Promise<void> {
    if (ex.aborted) return Promise.reject(ex.reason);
    ex.leg = leg;
    ex.legEndpoint = ep;
    ex.legIsPrefill = prefill;
    return leg.start(ep.traffic, ex.path, ex.upstreamHeaders, body);
  }

  private upstreamFailed(ex: Exchange, ep: EndpointState, err: unknown, reason: ErrorReason): void {
    if (ex.aborted) throw ex.reason;
    this.metrics.error(reason);
    const code = (err as { code?: string })?.code ?? '';
    if (reason === 'upstream_connect' && /ECONNREFUSED|ECONNRESET|EPIPE|UPSTREAM_CLOSED|UPSTREAM_CONNECT_TIMEOUT|EHOSTUNREACH|ENOTFOUND|ETIMEDOUT/.test(code)) this.pool.reportFailure(ep, err);
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
        const leg = new UpstreamLeg();
        await this.send(ep, ex, body, leg, true);
        ex.endLeg();
        const text = leg.body.toString('utf8');
        if (leg.status < 200 || leg.status >= 300) {
          this.log(`prefill ${ep.id} answered ${leg.status} for ${ex.sreq.requestId}: ${text.slice(0, 200)}`);
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
        ex.endLeg();
        if (ex.aborted) throw ex.reason;
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
      ep.inflight++;
      const pending = new PendingTokens(ep, pd ? 0 : tokens);
      ex.headers['x-tandem-decode-endpoint'] = ep.id;
      const canRetry = i + 1 < tries;
      // an SSE answer is relayed as it arrives; anything else is buffered (small), so an upstream
      // dying mid-body is still retryable
      const leg = new UpstreamLeg(ex.stream ? new SseRelayFactory(this, ex, ep, pd, legStart, tokens, pending, canRetry) : undefined);
      try {
        try {
          await this.send(ep, ex, body, leg);
        } catch (err) {
          if (leg.sink) throw err; // the relay decided (retryable or not)
          if (!leg.headersReceived) {
            this.upstreamFailed(ex, ep, err, 'upstream_connect');
            lastError = new HttpError(502, `endpoint ${ep.id} failed: ${(err as Error).message}`, 'server_error', 'upstream_error');
            continue;
          }
          if ((leg.status >= 500 || leg.status === 429) && canRetry) {
            if (ex.aborted) throw ex.reason;
            this.metrics.error('upstream_status');
            this.log(`${ep.id} answered ${leg.status} for ${ex.sreq.requestId}; trying another endpoint: `);
            lastError = new HttpError(leg.status, `upstream ${leg.status}`, 'server_error', 'upstream_error');
            continue;
          }
          this.upstreamFailed(ex, ep, err, 'upstream_connect');
          lastError = new HttpError(502, `endpoint ${ep.id} broke mid-response: ${(err as Error).message}`, 'server_error', 'upstream_error');
          continue;
        } finally {
          ex.endLeg();
        }
        if (leg.sink) return; // relayed
        const status = leg.status;
        if ((status >= 500 || status === 429) && canRetry) {
          const text = leg.body.toString('utf8');
          this.metrics.error('upstream_status');
          this.log(`${ep.id} answered ${status} for ${ex.sreq.requestId}; trying another endpoint: ${text.slice(0, 200)}`);
          lastError = new HttpError(status, text || `upstream ${status}`, 'server_error', 'upstream_error');
          continue;
        }
        pending.release();
        if (status >= 400) this.metrics.error('upstream_status');
        let buf = leg.body;
        if (pd && status === 200) buf = this.rewriteJson(buf, pd.cachedTokens);
        const h = ex.headers;
        h['content-type'] = leg.contentType || 'application/json';
        h['content-length'] = String(buf.length);
        ex.res.writeHead(status, h);
        ex.res.end(buf);
        return;
      } catch (err) {
        if (err instanceof RetryableStreamError) {
          lastError = new HttpError(502, err.message, 'server_error', 'upstream_error');
          continue;
        }
        throw err;
      } finally {
        pending.release();
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
  observeSplit(ep: EndpointState, tokens: number, seconds: number): void {
    this.rates.observeTransfer(tokens * (ep.kvBytesPerToken ?? 16384), seconds, ep.id);
  }
}

/** Decides at the response headers: an SSE answer to a streaming request is relayed, anything else buffered. */
class SseRelayFactory implements SinkFactory {
  constructor(
    private readonly gw: Gateway,
    private readonly ex: Exchange,
    private readonly ep: EndpointState,
    private readonly pd: { cachedTokens: number; transferTokens: number } | undefined,
    private readonly legStart: number,
    private readonly tokens: number,
    private readonly pending: PendingTokens,
    private readonly canRetry: boolean,
  ) {}

  sinkFor(leg: UpstreamLeg): StreamSink | undefined {
    if (leg.status !== 200 || !leg.contentType.startsWith('text/event-stream')) return undefined;
    return new SseRelay(this.gw, this.ex, this.ep, leg, this.pd, this.legStart, this.tokens, this.pending, this.canRetry);
  }
}

/**
 * Relays an SSE body event by event as it arrives, straight from undici's parser callbacks. Headers
 * are committed with the first chunk, so a stream that breaks before it can still be retried elsewhere.
 */
class SseRelay implements StreamSink {
  private started = false;
  /** performance.now() of the last chunk relayed */
  last = 0;
  private tail = '';
  private readonly rewriter: SseUsageRewriter | undefined;
  private readonly route: RouteDecision;

  constructor(
    private readonly gw: Gateway,
    private readonly ex: Exchange,
    private readonly ep: EndpointState,
    private readonly leg: UpstreamLeg,
    private readonly pd: { cachedTokens: number; transferTokens: number } | undefined,
    private readonly legStart: number,
    private readonly tokens: number,
    private readonly pending: PendingTokens,
    private readonly canRetry: boolean,
  ) {
    this.route = pd ? 'prefill-decode' : 'decode-only';
    this.rewriter = pd ? new SseUsageRewriter(pd.cachedTokens) : undefined;
  }

  private begin(): void {
    this.started = true;
    this.pending.release();
    const now = performance.now();
    this.last = now;
    const gw = this.gw;
    gw.metrics.observeTtft(this.route, (now - this.ex.start) / 1000);
    if (this.pd) gw.observeSplit(this.ep, this.pd.transferTokens, (now - this.legStart) / 1000);
    else gw.rates.observePrefill(this.ep.id, this.tokens, (now - this.legStart) / 1000);
    const h = this.ex.headers;
    h['content-type'] = 'text/event-stream';
    h['cache-control'] = 'no-cache';
    // no flushHeaders: the headers leave in the same packet as the first chunk
    this.ex.res.writeHead(200, h);
  }

  data(chunk: Buffer): boolean {
    if (!this.started) this.begin();
    else {
      const t = performance.now();
      this.gw.metrics.itl.observe((t - this.last) / 1000);
      this.last = t;
    }
    let data: Buffer | string;
    if (this.rewriter) {
      data = this.rewriter.push(chunk);
      if (data === '') return true;
    } else data = chunk;
    this.tail = lastBytes(this.tail, typeof data === 'string' ? Buffer.from(data) : data);
    const res = this.ex.res;
    if (!res.write(data)) {
      res.ondrain = resumeLeg;
      return false;
    }
    return true;
  }

  end(): void {
    if (!this.started) this.begin();
    const res = this.ex.res;
    if (this.rewriter) {
      const rest = this.rewriter.flush();
      if (rest) res.write(rest);
    }
    res.end();
  }

  error(err: Error): unknown {
    const ex = this.ex;
    if (ex.aborted) return ex.reason;
    const gw = this.gw;
    gw.pool.reportFailure(this.ep, err);
    if (!this.started) {
      gw.metrics.error('upstream_connect');
      const msg = `endpoint ${this.ep.id} broke before its first byte: ${err.message}`;
      return this.canRetry ? new RetryableStreamError(msg) : new HttpError(502, msg, 'server_error', 'upstream_error');
    }
    gw.metrics.error('decode_stream_broken');
    gw.log(`stream from ${this.ep.id} broke for ${ex.sreq.requestId}: ${err.message}`);
    // finish the SSE stream properly: an error event the OpenAI clients understand, then [DONE]
    const sep = this.tail.endsWith('\n\n') || this.tail === '' ? '' : '\n\n';
    const ev = errorBody(`upstream ${this.ep.id} failed mid-stream: ${err.message}`, 'server_error', 'upstream_stream_broken');
    ex.res.end(`${sep}data: ${ev}\n\ndata: [DONE]\n\n`);
    return undefined;
  }
}

class RetryableStreamError extends Error {}

function lastBytes(prev: string, chunk: Buffer): string {
  const s = chunk.length >= 2 ? chunk.toString('latin1', chunk.length - 2) : prev + chunk.toString('latin1');
  return s.slice(-2);
}

function sanitize(s: string): string {
  // header values must be latin1 without control characters; the common all-printable case is a scan, not a regex
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x20 || c > 0x7e) return s.replace(/[^\x20-\x7e]/g, '?');
  }
  return s;
}

/**
 * The client's end-to-end headers as one `name: value\r\n` block for the engine. Names and values come
 * from H1Server's parser, which rejects control characters in them, so they can be written as they are.
 */
function forwardHeaders(req: H1Request, requestId: string, stripAuth: boolean): string {
  const out: string[] = [];
  const raw = req.rawHeaders;
  // fields the client names in Connection are hop-by-hop too (RFC 9110 §7.6.1)
  const conn = req.get('connection');
  const named = conn !== undefined && !/^\s*(keep-alive|close)\s*$/i.test(conn) ? new Set(conn.toLowerCase().split(',').map((t) => t.trim())) : undefined;
  for (let i = 0; i < raw.length; i += 2) {
    const k = raw[i]!.toLowerCase();
    if (HOP_BY_HOP.has(k) || k === 'x-request-id' || k === 'content-type' || (stripAuth && k === 'authorization') || named?.has(k)) continue;
    // repeated headers are joined, as a header object would
    let j = 0;
    while (j < out.length && out[j] !== k) j += 2;
    if (j < out.length) out[j + 1] = `${out[j + 1]}, ${raw[i + 1]}`;
    else out.push(k, raw[i + 1]!);
  }
  let block = '';
  for (let i = 0; i < out.length; i += 2) block += `${out[i]}: ${out[i + 1]}\r\n`;
  return `${block}x-request-id: ${requestId}\r\ncontent-type: application/json\r\n`;
}

/** The body of a control-plane request (registration): small, so limited far below inference bodies. */
function controlBody(req: H1Request): Buffer {
  if (req.bodyTooLarge || req.body.length > 64 * 1024) throw new HttpError(413, 'request body exceeds the limit of 65536 bytes', 'invalid_request_error', 'request_too_large');
  return req.body;
}

export async function startGateway(options: GatewayOptions = {}): Promise<Gateway> {
  return new Gateway(options).listen();
}
