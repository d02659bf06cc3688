// active-request-scorer: gateway-tracked in-flight requests (no engine metrics needed, so it reacts
// within the request, not the scrape interval). n ≤ idleThreshold → 1; busier endpoints are scaled
// linearly into [0, maxBusyScore], the busiest getting 0.
import type { Scorer } from '../../types.ts';
import type { PluginFactory } from '../context.ts';
import { asParams, num, only } from '../params.ts';

export const activeRequestScorer: PluginFactory = {
  type: 'active-request-scorer',
  kind: 'scorer',
  create(name, raw): Scorer {
    const p = asParams(raw);
    only(p, ['idleThreshold', 'maxBusyScore']);
    const idle = num(p, 'idleThreshold', 0, { min: 0, int: true });
    const maxBusy = num(p, 'maxBusyScore', 1, { min: 0, max: 1 });
    return {
      type: 'active-request-scorer',
      name,
      kind: 'scorer',
      category: 'Distribution',
      score(_req, eps) {
        let max = 0;
        for (const ep of eps) if (ep.inflight > max) max = ep.inflight;
        return eps.map((ep) => {
          if (ep.inflight <= idle) return 1;
          return max === idle ? 0 : (maxBusy * (max - ep.inflight)) / (max - idle);
        });
      },
    };
  },
};
