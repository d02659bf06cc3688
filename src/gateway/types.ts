// The scheduler's data model and plugin contracts, shaped like llm-d's endpoint picker
// (pkg/epp/framework/interface/scheduling/plugins.go): each extension point is one tiny interface.

export type Role = 'prefill' | 'decode' | 'both';
export const ROLES: readonly Role[] = ['prefill', 'decode', 'both'];

/** Engine-reported load, scraped from the endpoint's /metrics (vLLM or SGLang names). */
export interface EngineMetrics {
  waiting: number;
  running: number;
  /** KV cache usage in [0,1] */
  kvUsage: number;
  blockSize?: number;
  numBlocks?: number;
  /** tandem:prefill_tokens_per_second, when the engine measures it */
  prefillTokensPerSecond?: number;
  /** ms since epoch of the last successful scrape; 0 = never */
  scrapedAt: number;
}

/** What the scheduler knows about one model server. Plugins read it; only the endpoint pool writes it. */
export interface Endpoint {
  /** host:port, the key llm-d uses (and the KV-event topic carries) */
  readonly id: string;
  /** base URL, e.g. http://127.0.0.1:8100 */
  readonly url: string;
  role: Role;
  labels: Record<string, string>;
  /** served model names from /v1/models (empty until discovered) */
  models: string[];
  healthy: boolean;
  metrics: EngineMetrics;
  /** false once the last scrape is older than the staleness threshold */
  metricsFresh: boolean;
  /** tokens per KV block (engine metadata or cache_config_info; 16 until known) */
  blockSize: number;
  /** requests the gateway has in flight on this endpoint (any leg) */
  inflight: number;
  /** uncached prompt tokens the gateway sent that have not produced a first token yet */
  inflightTokens: number;
  kvEventsEndpoint?: string;
  /** KV bytes per token, when the engine's metadata says (for the cost model) */
  kvBytesPerToken?: number;
}

/** Prefix-cache match of one request on one endpoint (llm-d's PrefixCacheMatchInfo). */
export interface PrefixMatch {
  matchBlocks: number;
  totalBlocks: number;
  blockSize: number;
}

export interface RequestTokens {
  count: number;
  /** exact engine token ids, when a tokenizing backend produced them */
  ids?: number[];
  exact: boolean;
}

/** One inference request as the scheduler sees it. Built once from the parsed body. */
export interface SchedulingRequest {
  requestId: string;
  model: string;
  kind: 'completions' | 'chat';
  body: Record<string, unknown>;
  /** all prompt text (the whole conversation for chat), used for estimates and approximate hashing */
  promptText: string;
  tokens?: RequestTokens;
  /** producer name → endpoint id → match */
  prefix: Map<string, Map<string, PrefixMatch>>;
  /** the client's request fields, by lower-case name (repeated ones joined with ", ") */
  headers: HeaderView;
}

/** Read access to request fields: the gateway's H1Request, or a Map in tests. */
export interface HeaderView {
  get(name: string): string | undefined;
}

export interface ScoredEndpoint {
  endpoint: Endpoint;
  score: number;
}

export interface Plugin {
  readonly type: string;
  readonly name: string;
}

/** Keeps the endpoints that may serve the request. Order is preserved. */
export interface Filter extends Plugin {
  readonly kind: 'filter';
  filter(req: SchedulingRequest, endpoints: readonly Endpoint[]): Endpoint[];
}

export type ScorerCategory = 'Affinity' | 'Distribution' | 'Balance';

/** Scores each endpoint; the result is aligned with `endpoints`. Scores are clamped to [0,1] by the caller. */
export interface Scorer extends Plugin {
  readonly kind: 'scorer';
  readonly category: ScorerCategory;
  score(req: SchedulingRequest, endpoints: readonly Endpoint[]): ArrayLike<number>;
}

/** Ranks scored endpoints: first = target, the rest = fallbacks for retries. Never empty for a non-empty input. */
export interface Picker extends Plugin {
  readonly kind: 'picker';
  pick(scored: readonly ScoredEndpoint[]): Endpoint[];
}

/** Computes per-request data (tokens, prefix matches) before the profiles run, and learns after routing. */
export interface DataProducer extends Plugin {
  readonly kind: 'producer';
  produce(req: SchedulingRequest, endpoints: readonly Endpoint[]): void | Promise<void>;
  /** called once the request is dispatched (llm-d's PreRequest) */
  routed?(req: SchedulingRequest, result: SchedulingResult): void;
  close?(): Promise<void> | void;
}

export interface Decision {
  disaggregate: boolean;
  /** one line for the x-tandem-decision header */
  reason: string;
}

/** Decides, for the chosen decode endpoint, whether a remote prefill should run first. */
export interface Decider extends Plugin {
  readonly kind: 'decider';
  decide(req: SchedulingRequest, decode: Endpoint, ctx: DeciderContext): Decision;
}

export interface DeciderContext {
  /** runs the prefill profile (memoised) to see which endpoint a split would use */
  prefillPick(): Endpoint | undefined;
}

export interface ProfileRunResult {
  /** ranked: first is the target, the rest fallbacks */
  targets: Endpoint[];
}

export interface ProfileContext {
  readonly profiles: ReadonlySet<string>;
  run(profile: string): ProfileRunResult | undefined;
}

/** Chooses which profiles run and turns their results into the scheduling result. */
export interface ProfileHandler extends Plugin {
  readonly kind: 'profile-handler';
  schedule(req: SchedulingRequest, ctx: ProfileContext): SchedulingResult;
}

export type RouteDecision = 'decode-only' | 'prefill-decode';

export interface SchedulingResult {
  decision: RouteDecision;
  /** ranked decode (or single-profile) targets */
  decode: Endpoint[];
  /** ranked prefill targets when decision = prefill-decode */
  prefill?: Endpoint[];
  reason: string;
}

export type AnyPlugin = Filter | Scorer | Picker | DataProducer | Decider | ProfileHandler;
export type PluginKind = AnyPlugin['kind'];

/** Error in a plugin's parameters; `path` is the parameter key path, used to find the YAML line. */
export class ParamError extends Error {
  override name = 'ParamError';
  constructor(
    message: string,
    readonly path: (string | number)[] = [],
  ) {
    super(message);
  }
}

/** Thrown when no endpoint can take the request (filters drained the candidates). */
export class NoEndpointError extends Error {
  override name = 'NoEndpointError';
}
