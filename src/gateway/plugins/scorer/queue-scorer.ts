// queue-scorer: min-max normalised waiting queue, (maxQ − q) / (maxQ − minQ); all equal → 1.
// Input vllm:num_requests_waiting (sglang:num_queue_reqs). Endpoints with stale metrics score 0.5.
import type { Scorer } from '../../types.ts';
import type { PluginFactory } from '../context.ts';
import { asParams, only } from '../params.ts';

export const queueScorer: PluginFactory = {
  type: 'queue-scorer',
  kind: 'scorer',
  create(name, params): Scorer {
    only(asParams(params), []);
    return {
      type: 'queue-scorer',
      name,
      kind: 'scorer',
      category: 'Distribution',
      score(_req, eps) {
        let min = Infinity;
        let max = -Infinity;
        for (const ep of eps) {
          if (!ep.metricsFresh) continue;
          if (ep.metrics.waiting < min) min = ep.metrics.waiting;
          if (ep.metrics.waiting > max) max = ep.metrics.waiting;
        }
        const out = new Float64Array(eps.length);
        for (let i = 0; i < eps.length; i++) {
          const ep = eps[i]!;
          out[i] = !ep.metricsFresh ? 0.5 : max === min ? 1 : (max - ep.metrics.waiting) / (max - min);
        }
        return out;
      },
    };
  },
};
