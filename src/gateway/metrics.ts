// The gateway's own Prometheus metrics (served on its /metrics). A private registry per gateway, so
// several gateways in one process (tests) do not collide. Label children are cached: the hot path
// should not look labels up per request.
import { Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import { FastCounter, FastHistogram, type CounterSeries, type HistogramSeries } from './fast-metrics.ts';
import type { EndpointPool } from './endpoints.ts';
import type { RouteDecision } from './types.ts';
import type { BlockIndex } from './prefix/block-index.ts';

export type ErrorReason =
  | 'bad_request' | 'unauthorized' | 'body_too_large' | 'overloaded' | 'no_endpoint' | 'model_not_found'
  | 'upstream_connect' | 'upstream_status' | 'prefill_failed' | 'decode_stream_broken' | 'timeout' | 'client_disconnect';

const LATENCY_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300];

export class GatewayMetrics {
  readonly registry = new Registry();
  private readonly requests: FastCounter;
  private readonly errors: FastCounter;
  private readonly decisions: FastCounter;
  readonly ttft: FastHistogram;
  readonly itl: FastHistogram;
  readonly duration: FastHistogram;
  readonly schedulerDuration: FastHistogram;

  constructor(pool: EndpointPool, defaults = false, prefixIndexes: { name: string; index: BlockIndex }[] = []) {
    const registers = [this.registry];
    const r = this.registry;
    if (defaults) collectDefaultMetrics({ register: this.registry, prefix: 'tandem_gateway_process_' });
    this.requests = new FastCounter('tandem_gateway_requests_total', 'Inference requests dispatched, by route', 'route', r);
    this.errors = new FastCounter('tandem_gateway_errors_total', 'Request errors and degradations, by reason', 'reason', r);
    this.decisions = new FastCounter('tandem_gateway_disagg_decision_total', 'P/D decisions of the profile handler', 'decision', r);
    this.ttft = new FastHistogram('tandem_gateway_ttft_seconds', 'Time to first streamed byte, gateway arrival to first chunk relayed', LATENCY_BUCKETS, 'route', r);
    this.itl = new FastHistogram('tandem_gateway_itl_seconds', 'Gap between relayed stream chunks', LATENCY_BUCKETS, undefined, r);
    this.duration = new FastHistogram('tandem_gateway_request_duration_seconds', 'Gateway arrival to response end', LATENCY_BUCKETS, 'route', r);
    this.schedulerDuration = new FastHistogram('tandem_gateway_scheduler_duration_seconds', 'Scheduling cycle (producers + profiles)', [0.00001, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1], undefined, r);
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

  // series are looked up once per label value, then kept
  private readonly requestChildren = new Map<string, CounterSeries>();
  private readonly decisionChildren = new Map<string, CounterSeries>();
  private readonly errorChildren = new Map<string, CounterSeries>();
  private readonly durationChildren = new Map<string, HistogramSeries>();
  private readonly ttftChildren = new Map<string, HistogramSeries>();

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
