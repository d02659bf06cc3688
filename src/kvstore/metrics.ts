// Prometheus metrics of the store. Registered into the caller's registry; a second store in the same
// process (tests, a P/D pair in one process) reuses the already-registered metric objects.
import { Counter, Gauge, Histogram, Registry, type Metric } from 'prom-client';

export interface KvStoreMetrics {
  hits: Counter<'tier'>;
  misses: Counter<string>;
  bytes: Gauge<'tier'>;
  loadSeconds: Histogram<'tier'>;
  errors: Counter<'tier' | 'reason'>;
  writeDrops: Counter<'tier'>;
}

function get<M extends Metric>(registry: Registry, name: string, make: () => M): M {
  return (registry.getSingleMetric(name) as M | undefined) ?? make();
}

export function createMetrics(registry: Registry): KvStoreMetrics {
  const registers = [registry];
  return {
    hits: get(registry, 'tandem:kv_store_hits_total', () => new Counter({
      name: 'tandem:kv_store_hits_total',
      help: 'KV store chunks loaded, by the tier that served them',
      labelNames: ['tier'],
      registers,
    })),
    misses: get(registry, 'tandem:kv_store_misses_total', () => new Counter({
      name: 'tandem:kv_store_misses_total',
      help: 'Full chunks a load asked for that no tier could serve (the engine recomputes them)',
      registers,
    })),
    bytes: get(registry, 'tandem:kv_store_bytes', () => new Gauge({
      name: 'tandem:kv_store_bytes',
      help: 'Bytes held by a KV store tier (memory, disk: this process\'s view; redis: not reported)',
      labelNames: ['tier'],
      registers,
    })),
    loadSeconds: get(registry, 'tandem:kv_store_load_seconds', () => new Histogram({
      name: 'tandem:kv_store_load_seconds',
      help: 'Time to read and verify one chunk from a tier',
      labelNames: ['tier'],
      buckets: [0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers,
    })),
    errors: get(registry, 'tandem:kv_store_errors_total', () => new Counter({
      name: 'tandem:kv_store_errors_total',
      help: 'KV store faults by tier and reason (corrupt, truncated, enospc, io, timeout, unavailable)',
      labelNames: ['tier', 'reason'],
      registers,
    })),
    writeDrops: get(registry, 'tandem:kv_store_write_drops_total', () => new Counter({
      name: 'tandem:kv_store_write_drops_total',
      help: 'Chunk writes dropped because a tier\'s write queue was full or the tier was not writable',
      labelNames: ['tier'],
      registers,
    })),
  };
}
