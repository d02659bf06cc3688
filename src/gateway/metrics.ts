// The gateway's own Prometheus metrics (served on its /metrics). A private registry per gateway, so
// several gateways in one process (tests) do not collide. Label children are cached: the hot path
// should not look labels up per request.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { EndpointPool } from './endpoints.ts';
import type { RouteDecision } from './types.ts';
import type { BlockIndex } from './prefix/block-index.ts';

export type ErrorReason =
  | 'bad_request' | 'unauthorized' | 'body_too_large' | 'overloaded' | 'no_endpoint' | 'model_not_found'
  | 'upstream_connect' | 'upstream_status' | 'prefill_failed' | 'decode_stream_broken' | 'timeout' | 'client_disconnect';

const LATENCY_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300];

export class GatewayMetrics {
  readonly registry = new Registry();
  private readonly requests: Counter<'route'>;
  private readonly errors: Counter<'reason'>;
  private readonly decisions: Counter<'decision'>;
  readonly ttft: Histogram<'route'>;
  readonly itl: Histogram;
  readonly duration: Histogram<'route'>;
  readonly schedulerDuration: Histogram;
  private readonly errorChildren = new Map<string, Counter.Internal>();

  constructor(pool: EndpointPool, defaults = false, prefixIndexes: { name: string; index: BlockIndex }[] = []) {
    const registers = [this.registry];
    if (defaults) collectDefaultMetrics({ register: this.registry, prefix: 'tandem_gateway_process_' });
    this.requests = new Counter({ name: 'tandem_gateway_requests_total', help: 'Inference requests dispatched, by route', labelNames: ['route'], registers });
    this.errors = new Counter({ name: 'tandem_gateway_errors_total', help: 'Request errors and degradations, by reason', labelNames: ['reason'], registers });
    this.decisions = new Counter({ name: 'tandem_gateway_disagg_decision_total', help: 'P/D decisions of the profile handler', labelNames: ['decision'], registers });
    this.ttft = new Histogram({ name: 'tandem_gateway_ttft_seconds', help: 'Time to first streamed byte, gateway arrival to first chunk relayed', labelNames: ['route'], buckets: LATENCY_BUCKETS, registers });
    this.itl = new Histogram({ name: 'tandem_gateway_itl_seconds', help: 'Gap between relayed stream chunks', buckets: LATENCY_BUCKETS, registers });
    this.duration = new Histogram({ name: 'tandem_gateway_request_duration_seconds', help: 'Gateway arrival to response end', labelNames: ['route'], buckets: LATENCY_BUCKETS, registers });
    this.schedulerDuration = new Histogram({ name: 'tandem_gateway_scheduler_duration_seconds', help: 'Scheduling cycle (producers + profiles)', buckets: [0.00001, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1], registers });
    new Gauge({
      name: 'tandem_gateway_inflight',
      help: 'Requests in flight per endpoint (gateway-tracked)',
      labelNames: ['endpoint', 'role'],
      registers,
      collect() {
        this.reset();
        for (const ep of pool.all()) this.set({ endpoint: ep.id, role: ep.role }, ep.inflight);
      },
    });
    new Gauge({
      name: 'tandem_gateway_endpoint_healthy',
      help: '1 when the endpoint passes health checks',
      labelNames: ['endpoint', 'role'],
      registers,
      collect() {
        this.reset();
        for (const ep of pool.all()) this.set({ endpoint: ep.id, role: ep.role }, ep.healthy ? 1 : 0);
      },
    });
    new Gauge({
      name: 'tandem_gateway_prefix_index_blocks',
      help: 'Prefix blocks each prefix producer believes an endpoint holds (llm-d prefix_indexer_size)',
      labelNames: ['producer', 'endpoint'],
      registers,
      collect() {
        this.reset();
        for (const p of prefixIndexes) for (const ep of pool.all()) this.set({ producer: p.name, endpoint: ep.id }, p.index.size(ep.id));
      },
    });
    for (const d of ['decode-only', 'prefill-decode']) this.decisions.labels(d);
    for (const r of ['decode-only', 'prefill-decode']) this.requests.labels(r);
  }

  private readonly requestChildren = new Map<string, Counter.Internal>();
  private readonly decisionChildren = new Map<string, Counter.Internal>();
  private readonly durationChildren = new Map<string, Histogram.Internal<'route'>>();

  request(route: RouteDecision): void {
    let c = this.requestChildren.get(route);
    if (!c) this.requestChildren.set(route, (c = this.requests.labels(route)));
    c.inc();
  }

  decision(d: RouteDecision): void {
    let c = this.decisionChildren.get(d);
    if (!c) this.decisionChildren.set(d, (c = this.decisions.labels(d)));
    c.inc();
  }

  private readonly ttftChildren = new Map<string, Histogram.Internal<'route'>>();

  observeTtft(route: RouteDecision, seconds: number): void {
    let h = this.ttftChildren.get(route);
    if (!h) this.ttftChildren.set(route, (h = this.ttft.labels(route)));
    h.observe(seconds);
  }

  observeDuration(route: RouteDecision, seconds: number): void {
    let h = this.durationChildren.get(route);
    if (!h) this.durationChildren.set(route, (h = this.duration.labels(route)));
    h.observe(seconds);
  }

  error(reason: ErrorReason): void {
    let c = this.errorChildren.get(reason);
    if (!c) this.errorChildren.set(reason, (c = this.errors.labels(reason)));
    c.inc();
  }
}
