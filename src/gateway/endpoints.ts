// The endpoint pool: static endpoints and self-registered ones (heartbeats), health checks that take
// failing endpoints out and bring them back, /metrics scraped every ~50 ms (stale after 2 s), and
// engine metadata from /v1/models. The traffic goes over the gateway's own keep-alive HTTP/1.1 client
// (h1-client.ts); a separate small undici pool carries the control plane, so probes never queue behind
// long generations.
import { Pool } from 'undici';
import { H1Pool } from './h1-client.ts';
import { ROLES, type Endpoint, type EngineMetrics, type Role, type SchedulingRequest } from './types.ts';
import type { EndpointEvents, EngineTokenizer } from './plugins/context.ts';
import { parsePromText } from './prom-text.ts';

export interface EndpointSpec {
  url: string;
  role?: Role;
  labels?: Record<string, string>;
  kvEventsEndpoint?: string;
  model?: string;
}

export interface PoolOptions {
  scrapeIntervalMs: number;
  stalenessMs: number;
  healthIntervalMs: number;
  /** a registered endpoint is dropped when no heartbeat arrived for this long */
  heartbeatTtlMs: number;
  /** consecutive failed health probes before an endpoint is taken out */
  unhealthyThreshold: number;
  /** a probe not answered within this long failed */
  healthTimeoutMs: number;
  connectTimeoutMs: number;
  log: (line: string) => void;
}

export const DEFAULT_POOL_OPTIONS: PoolOptions = {
  scrapeIntervalMs: 50,
  stalenessMs: 2000,
  healthIntervalMs: 1000,
  heartbeatTtlMs: 3000,
  unhealthyThreshold: 2,
  healthTimeoutMs: 3000,
  connectTimeoutMs: 2000,
  log: () => {},
};

/** An engine tokenizes a prompt in milliseconds; one that takes this long is stalled or overloaded. */
const TOKENIZE_TIMEOUT_MS = 1000;

/** /health answered, with a status other than 200: the endpoint is alive (draining, starting, sick). */
class HealthStatusError extends Error {}

export class EndpointState implements Endpoint {
  readonly id: string;
  readonly url: string;
  role: Role = 'both';
  labels: Record<string, string> = {};
  models: string[] = [];
  healthy = false;
  metrics: EngineMetrics = { waiting: 0, running: 0, kvUsage: 0, scrapedAt: 0 };
  metricsFresh = false;
  /** healthy by its probes, but its scrapes stopped succeeding: likely hung (scheduled only if nothing else is left) */
  stalled = false;
  blockSize = 16;
  inflight = 0;
  inflightTokens = 0;

  kvEventsEndpoint?: string;
  kvBytesPerToken?: number;

  /** role given explicitly (flag or registration) wins over engine metadata */
  roleFixed = false;
  source: 'static' | 'registered' = 'static';
  lastHeartbeat = Date.now();
  healthFailures = 0;
  tokenizeSupported: boolean | undefined;
  scraping = false;
  probing = false;
  metricsMissing = false;
  readonly traffic: H1Pool;
  readonly control: Pool;

  constructor(url: URL, opts: PoolOptions) {
    this.url = url.origin;
    this.id = url.host;
    // the traffic client has no header/body timeouts: the gateway's per-request deadlines apply (long generations)
    this.traffic = new H1Pool(url, { connectTimeoutMs: opts.connectTimeoutMs, keepAliveMs: 30_000 });
    this.control = new Pool(this.url, { connections: 2, keepAliveTimeout: 30_000, headersTimeout: 5000, bodyTimeout: 5000, connectTimeout: opts.connectTimeoutMs });
  }

  describe(): Record<string, unknown> {
    return {
      id: this.id, url: this.url, role: this.role, labels: this.labels, models: this.models, healthy: this.healthy,
      source: this.source, metrics_fresh: this.metricsFresh, metrics: this.metrics, block_size: this.blockSize,
      inflight: this.inflight, inflight_tokens: this.inflightTokens, kv_events_endpoint: this.kvEventsEndpoint ?? null,
    };
  }
}

export class RegistrationError extends Error {
  override name = 'RegistrationError';
}

export function parseEndpointUrl(text: string): URL {
  let u: URL;
  try {
    u = new URL(text);
  } catch {
    throw new RegistrationError(`'${text}' is not a URL (expected e.g. http://127.0.0.1:8100)`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new RegistrationError(`'${text}': only http and https endpoints are supported`);
  if ((u.pathname !== '/' && u.pathname !== '') || u.search) throw new RegistrationError(`'${text}': give the server's base URL, without a path`);
  return u;
}

/** Validates a registration body: {url, role?, labels?, kv_events_endpoint?, model?}. */
export function parseRegistration(body: unknown): EndpointSpec {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new RegistrationError('body must be a JSON object');
  const b = body as Record<string, unknown>;
  for (const k of Object.keys(b)) {
    if (!['url', 'role', 'labels', 'kv_events_endpoint', 'model'].includes(k)) throw new RegistrationError(`unknown field '${k}'`);
  }
  if (typeof b.url !== 'string') throw new RegistrationError('url is required');
  parseEndpointUrl(b.url);
  if (b.role !== undefined && !ROLES.includes(b.role as Role)) throw new RegistrationError(`role must be one of ${ROLES.join(', ')}`);
  if (b.labels !== undefined) {
    if (typeof b.labels !== 'object' || b.labels === null || Array.isArray(b.labels)) throw new RegistrationError('labels must be an object');
    for (const [k, v] of Object.entries(b.labels)) if (typeof v !== 'string') throw new RegistrationError(`labels.${k} must be a string`);
  }
  if (b.kv_events_endpoint !== undefined && (typeof b.kv_events_endpoint !== 'string' || !/^(tcp|ipc|inproc):\/\//.test(b.kv_events_endpoint))) {
    throw new RegistrationError('kv_events_endpoint must be a ZMQ address like tcp://127.0.0.1:5557');
  }
  if (b.model !== undefined && typeof b.model !== 'string') throw new RegistrationError('model must be a string');
  return {
    url: b.url,
    role: b.role as Role | undefined,
    labels: b.labels as Record<string, string> | undefined,
    kvEventsEndpoint: b.kv_events_endpoint as string | undefined,
    model: b.model as string | undefined,
  };
}

type Listener = { added: (ep: Endpoint) => void; removed: (ep: Endpoint) => void };

export class EndpointPool implements EndpointEvents, EngineTokenizer {
  private readonly byId = new Map<string, EndpointState>();
  /** round-robin start among the endpoints that can tokenize */
  private tokenizeTurn = 0;
  /** some endpoint is stalled (see EndpointState.stalled); checked per request, so kept by the scrape tick */
  private anyStalled = false;
  private readonly listeners = new Set<Listener>();
  private timers: NodeJS.Timeout[] = [];
  readonly opts: PoolOptions;
  /**
   * Called when an endpoint stopped answering (probes time out or cannot connect, or its heartbeats
   * stopped): a stalled or vanished process, not a busy or draining one, which still answers. The
   * gateway then fails its legs in flight, which would otherwise wait for the request timeout. On the
   * earlier, weaker sign — its scrapes stopped succeeding — only the legs that are safe to abandon
   * (`safeOnly`: prefill legs, and legs whose answer has not begun reaching the client).
   */
  onStalled: ((ep: EndpointState, reason: Error, safeOnly: boolean) => void) | undefined;

  constructor(opts: Partial<PoolOptions> = {}) {
    this.opts = { ...DEFAULT_POOL_OPTIONS, ...opts };
  }

  start(): void {
    if (this.opts.scrapeIntervalMs > 0) this.timers.push(setInterval(() => this.scrapeTick(), this.opts.scrapeIntervalMs).unref());
    this.timers.push(setInterval(() => this.healthTick(), this.opts.healthIntervalMs).unref());
  }

  async close(): Promise<void> {
    for (const t of this.timers) clearInterval(t);
    this.timers = [];
    const eps = [...this.byId.values()];
    this.byId.clear();
    for (const ep of eps) for (const l of this.listeners) l.removed(ep);
    for (const ep of eps) ep.traffic.destroy();
    await Promise.all(eps.map((ep) => ep.control.destroy()));
  }

  onEndpoint(added: (ep: Endpoint) => void, removed: (ep: Endpoint) => void): () => void {
    const l = { added, removed };
    this.listeners.add(l);
    for (const ep of this.byId.values()) added(ep);
    return () => this.listeners.delete(l);
  }

  all(): EndpointState[] {
    return [...this.byId.values()];
  }

  get(id: string): EndpointState | undefined {
    return this.byId.get(id);
  }

  /** Healthy endpoints that serve `model` (endpoints whose models are not known yet are included). */
  candidates(model: string): EndpointState[] {
    const out: EndpointState[] = [];
    for (const ep of this.byId.values()) if (ep.healthy && (ep.models.length === 0 || ep.models.includes(model))) out.push(ep);
    if (!this.anyStalled) return out;
    // Passed over while it does not answer its scrapes, unless nothing else is left. A stalled
    // prefill engine thus leaves requests decode-local, seconds before the health probes give up on it.
    const answering = out.filter((ep) => !ep.stalled);
    return answering.length > 0 ? answering : out;
  }

  knownModels(): string[] {
    const s = new Set<string>();
    for (const ep of this.byId.values()) if (ep.healthy) for (const m of ep.models) s.add(m);
    return [...s];
  }

  /** Adds or updates an endpoint; returns it. A registration refreshes the heartbeat. */
  upsert(spec: EndpointSpec, source: 'static' | 'registered'): EndpointState {
    const url = parseEndpointUrl(spec.url);
    let ep = this.byId.get(url.host);
    const isNew = !ep;
    if (!ep) {
      ep = new EndpointState(url, this.opts);
      ep.source = source;
      this.byId.set(ep.id, ep);
    }
    ep.lastHeartbeat = Date.now();
    if (spec.role) {
      ep.role = spec.role;
      ep.roleFixed = true;
    }
    if (spec.labels) ep.labels = { ...spec.labels };
    ep.labels['llm-d.ai/role'] = ep.role;
    if (spec.model && !ep.models.includes(spec.model)) ep.models.push(spec.model);
    const kvChanged = spec.kvEventsEndpoint !== undefined && spec.kvEventsEndpoint !== ep.kvEventsEndpoint;
    if (spec.kvEventsEndpoint !== undefined) ep.kvEventsEndpoint = spec.kvEventsEndpoint;
    if (isNew) {
      this.opts.log(`endpoint ${ep.id} added (${source}, role ${spec.role ?? 'from engine'})`);
      for (const l of this.listeners) l.added(ep);
      void this.probe(ep);
    } else if (kvChanged) {
      for (const l of this.listeners) {
        l.removed(ep);
        l.added(ep);
      }
    }
    return ep;
  }

  remove(id: string, why: string): boolean {
    const ep = this.byId.get(id);
    if (!ep) return false;
    this.byId.delete(id);
    this.opts.log(`endpoint ${id} removed: ${why}`);
    for (const l of this.listeners) l.removed(ep);
    ep.traffic.close();
    void ep.control.close().catch(() => {});
    return true;
  }

  /** Passive health: a connection-level failure takes the endpoint out at once; probes bring it back. */
  reportFailure(ep: EndpointState, err: unknown): void {
    if (!ep.healthy) return;
    ep.healthy = false;
    ep.healthFailures = this.opts.unhealthyThreshold;
    this.opts.log(`endpoint ${ep.id} marked unhealthy: ${(err as Error)?.message ?? String(err)}`);
  }

  private scrapeTick(): void {
    const now = Date.now();
    let anyStalled = false;
    for (const ep of this.byId.values()) {
      ep.metricsFresh = ep.metrics.scrapedAt > 0 && now - ep.metrics.scrapedAt <= this.opts.stalenessMs;
      // it served metrics, and no scrape (one every scrapeIntervalMs) has succeeded for stalenessMs
      const stalled = ep.healthy && !ep.metricsMissing && ep.metrics.scrapedAt > 0 && !ep.metricsFresh;
      if (stalled !== ep.stalled) {
        ep.stalled = stalled;
        this.opts.log(stalled ? `endpoint ${ep.id}: no metrics for ${this.opts.stalenessMs} ms; not scheduled while others answer` : `endpoint ${ep.id}: answering again`);
      }
      // while it stays stalled, legs that are safe to abandon go (prefill legs, answers not yet begun,
      // streams gone silent); streams still flowing wait for the health probes' verdict
      if (stalled) this.onStalled?.(ep, new Error(`endpoint ${ep.id} stopped answering its scrapes`), true);
      anyStalled ||= stalled;
      if (!ep.scraping && ep.healthy && !ep.metricsMissing) void this.scrape(ep);
    }
    this.anyStalled = anyStalled;
  }

  private async scrape(ep: EndpointState): Promise<void> {
    ep.scraping = true;
    try {
      const r = await ep.control.request({ path: '/metrics', method: 'GET' });
      if (r.statusCode === 404) {
        // not an engine with metrics (e.g. a plain OpenAI server): stop asking every 50 ms
        ep.metricsMissing = true;
        await r.body.dump();
        return;
      }
      if (r.statusCode !== 200) {
        await r.body.dump();
        return;
      }
      const m = parsePromText(await r.body.text());
      ep.metrics = {
        waiting: m.waiting ?? 0,
        running: m.running ?? 0,
        kvUsage: m.kvUsage ?? 0,
        blockSize: m.blockSize,
        numBlocks: m.numBlocks,
        prefillTokensPerSecond: m.prefillTokensPerSecond,
        scrapedAt: Date.now(),
      };
      ep.metricsFresh = true;
      if (m.blockSize) ep.blockSize = m.blockSize;
      if (m.role && !ep.roleFixed && m.role !== ep.role) {
        ep.role = m.role;
        ep.labels['llm-d.ai/role'] = m.role;
      }
    } catch {
      // a failed scrape just lets the metrics go stale; health probes decide about the endpoint
    } finally {
      ep.scraping = false;
    }
  }

  private healthTick(): void {
    const now = Date.now();
    for (const ep of [...this.byId.values()]) {
      if (ep.source === 'registered' && now - ep.lastHeartbeat > this.opts.heartbeatTtlMs) {
        const why = `no heartbeat for ${now - ep.lastHeartbeat} ms`;
        this.remove(ep.id, why);
        this.onStalled?.(ep, new Error(`endpoint ${ep.id} dropped: ${why}`), false);
        continue;
      }
      if (!ep.probing) void this.probe(ep);
    }
  }

  /** GET /health; on the way up, refresh engine metadata from /v1/models. */
  async probe(ep: EndpointState): Promise<void> {
    ep.probing = true;
    try {
      const t = this.opts.healthTimeoutMs;
      const r = await ep.control.request({ path: '/health', method: 'GET', headersTimeout: t, bodyTimeout: t });
      await r.body.dump();
      if (r.statusCode !== 200) throw new HealthStatusError(`/health answered ${r.statusCode}`);
      if (!ep.healthy || ep.models.length === 0) await this.discover(ep);
      if (!ep.healthy) {
        this.opts.log(`endpoint ${ep.id} healthy (role ${ep.role}, models ${ep.models.join(',') || '?'})`);
        ep.metrics.scrapedAt = 0; // what was scraped before it went away says nothing now (and it is not "stalled")
      }
      ep.healthy = true;
      ep.healthFailures = 0;
      ep.metricsMissing = false;
    } catch (err) {
      ep.healthFailures++;
      if (ep.healthy && ep.healthFailures >= this.opts.unhealthyThreshold) {
        ep.healthy = false;
        this.opts.log(`endpoint ${ep.id} unhealthy: ${(err as Error).message}`);
        if (!(err instanceof HealthStatusError)) this.onStalled?.(ep, new Error(`endpoint ${ep.id} stopped answering (${(err as Error).message})`), false);
      }
    } finally {
      ep.probing = false;
    }
  }

  private async discover(ep: EndpointState): Promise<void> {
    try {
      const r = await ep.control.request({ path: '/v1/models', method: 'GET' });
      if (r.statusCode !== 200) {
        await r.body.dump();
        return;
      }
      const j = (await r.body.json()) as { data?: { id?: unknown; tandem?: Record<string, unknown> }[] };
      if (!Array.isArray(j?.data)) return;
      const models: string[] = [];
      for (const m of j.data) {
        if (typeof m?.id === 'string') models.push(m.id);
        const t = m?.tandem;
        if (t && typeof t === 'object') {
          if (!ep.roleFixed && ROLES.includes(t.role as Role)) {
            ep.role = t.role as Role;
            ep.labels['llm-d.ai/role'] = ep.role;
          }
          if (typeof t.block_size === 'number' && t.block_size > 0) ep.blockSize = t.block_size;
          if (typeof t.kv_bytes_per_token === 'number' && t.kv_bytes_per_token > 0) ep.kvBytesPerToken = t.kv_bytes_per_token;
        }
      }
      if (models.length) ep.models = models;
    } catch {
      // metadata is optional: a plain OpenAI server still serves
    }
  }

  mayTokenize(candidates: readonly Endpoint[]): boolean {
    for (const c of candidates) if (this.byId.get(c.id)?.tokenizeSupported !== false) return true;
    return false;
  }

  /**
   * Exact ids from a candidate that answers POST /tokenize (vLLM shape); undefined if none can.
   * Endpoints whose metrics are fresh go first, taken in turn so one engine does not tokenize for all;
   * one that does not answer within TOKENIZE_TIMEOUT_MS is passed over. (Always asking the first
   * candidate made every new request wait 5 s on a hung engine: the whole cluster stalled with it.)
   */
  async tokenize(req: SchedulingRequest, candidates: readonly EndpointState[] | readonly Endpoint[]): Promise<number[] | undefined> {
    const usable: EndpointState[] = [];
    for (const c of candidates) {
      const ep = this.byId.get(c.id);
      if (ep && ep.tokenizeSupported !== false) usable.push(ep);
    }
    if (usable.length === 0) return undefined;
    const start = this.tokenizeTurn++ % usable.length;
    const order = [...usable.slice(start), ...usable.slice(0, start)].sort((a, b) => Number(b.metricsFresh) - Number(a.metricsFresh));
    const body = JSON.stringify(
      req.kind === 'chat' ? { model: req.model, messages: req.body.messages, add_generation_prompt: true } : { model: req.model, prompt: req.body.prompt },
    );
    let failures = 0;
    for (const ep of order) {
      try {
        const r = await ep.control.request({
          path: '/tokenize',
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body,
          headersTimeout: TOKENIZE_TIMEOUT_MS,
          bodyTimeout: TOKENIZE_TIMEOUT_MS,
        });
        if (r.statusCode === 404 || r.statusCode === 405 || r.statusCode === 501) {
          ep.tokenizeSupported = false;
          await r.body.dump();
          continue;
        }
        if (r.statusCode !== 200) {
          await r.body.dump();
          return undefined;
        }
        const j = (await r.body.json()) as { tokens?: unknown };
        if (!Array.isArray(j.tokens) || !j.tokens.every((t) => Number.isInteger(t))) {
          ep.tokenizeSupported = false;
          continue;
        }
        ep.tokenizeSupported = true;
        return j.tokens as number[];
      } catch {
        // no answer in time, or the connection failed: the next one, twice at most
        if (++failures >= 2) return undefined;
      }
    }
    return undefined;
  }
}
