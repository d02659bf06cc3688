// The KV connector's Prometheus metrics. Created once per registry and shared: the engine (which
// counts load failures it handles itself), the transfer server and pullKv all observe the same set.

import { Counter, Gauge, Histogram, type Registry } from 'prom-client';

export interface KvMetrics {
  /** KV payload bytes (token-major, excluding frame headers) */
  bytes: Counter<'direction'>;
  tokens: Counter<'direction'>;
  /** one observation per completed transfer; direction = send (prefill side) | recv (decode side) */
  seconds: Histogram<'direction'>;
  loadFailures: Counter<'reason'>;
  leasedBlocks: Gauge;
}

const SECONDS_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

/** Idempotent per registry: a second call returns the metrics the first one registered. */
export function createKvMetrics(registry: Registry): KvMetrics {
  const get = <T>(name: string, make: () => T): T => (registry.getSingleMetric(name) as T | undefined) ?? make();
  const registers = [registry];
  return {
    bytes: get(
      'tandem:kv_transfer_bytes_total',
      () => new Counter({ name: 'tandem:kv_transfer_bytes_total', help: 'KV bytes moved by the KV connector.', labelNames: ['direction'], registers }),
    ),
    tokens: get(
      'tandem:kv_transfer_tokens_total',
      () => new Counter({ name: 'tandem:kv_transfer_tokens_total', help: 'Tokens of KV moved by the KV connector.', labelNames: ['direction'], registers }),
    ),
    seconds: get(
      'tandem:kv_transfer_seconds',
      () =>
        new Histogram({
          name: 'tandem:kv_transfer_seconds',
          help: 'Duration of one KV transfer (pull request to last byte).',
          labelNames: ['direction'],
          buckets: SECONDS_BUCKETS,
          registers,
        }),
    ),
    loadFailures: get(
      'tandem:kv_load_failures_total',
      () => new Counter({ name: 'tandem:kv_load_failures_total', help: 'Remote KV loads that failed, by reason.', labelNames: ['reason'], registers }),
    ),
    leasedBlocks: get(
      'tandem:kv_leased_blocks',
      () => new Gauge({ name: 'tandem:kv_leased_blocks', help: 'KV blocks held under a lease for a remote decode engine.', registers }),
    ),
  };
}
