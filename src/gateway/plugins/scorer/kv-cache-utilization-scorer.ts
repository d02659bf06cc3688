// kv-cache-utilization-scorer: 1 − KV cache usage (vllm:kv_cache_usage_perc, sglang:token_usage).
// Endpoints with stale metrics score 0.5.
import type { Scorer } from '../../types.ts';
import type { PluginFactory } from '../context.ts';
import { asParams, only } from '../params.ts';

export const kvCacheUtilizationScorer: PluginFactory = {
  type: 'kv-cache-utilization-scorer',
  kind: 'scorer',
  create(name, params): Scorer {
    only(asParams(params), []);
    return {
      type: 'kv-cache-utilization-scorer',
      name,
      kind: 'scorer',
      category: 'Distribution',
      score: (_req, eps) => eps.map((ep) => (ep.metricsFresh ? 1 - ep.metrics.kvUsage : 0.5)),
    };
  },
};
