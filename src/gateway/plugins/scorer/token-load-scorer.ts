// token-load-scorer: 1 − min(1, inFlightTokens / queueThresholdTokens), where in-flight tokens are the
// uncached prompt tokens the gateway sent to the endpoint that have not produced a first token yet.
import type { Scorer } from '../../types.ts';
import type { PluginFactory } from '../context.ts';
import { asParams, num, only } from '../params.ts';

export const tokenLoadScorer: PluginFactory = {
  type: 'token-load-scorer',
  kind: 'scorer',
  create(name, raw): Scorer {
    const p = asParams(raw);
    only(p, ['queueThresholdTokens']);
    const threshold = num(p, 'queueThresholdTokens', 4_194_304, { min: 1 });
    return {
      type: 'token-load-scorer',
      name,
      kind: 'scorer',
      category: 'Distribution',
      score: (_req, eps) => eps.map((ep) => 1 - Math.min(1, ep.inflightTokens / threshold)),
    };
  },
};
