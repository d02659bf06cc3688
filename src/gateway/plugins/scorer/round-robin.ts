// round-robin: a baseline scorer. Each call scores the next endpoint in rotation 1 and the others 0,
// so with max-score-picker alone it reproduces vLLM's toy proxy.
import type { Scorer } from '../../types.ts';
import type { PluginFactory } from '../context.ts';
import { asParams, only } from '../params.ts';

export const roundRobin: PluginFactory = {
  type: 'round-robin',
  kind: 'scorer',
  create(name, params): Scorer {
    only(asParams(params), []);
    let next = 0;
    return {
      type: 'round-robin',
      name,
      kind: 'scorer',
      category: 'Distribution',
      score(_req, eps) {
        const out = new Float64Array(eps.length);
        if (eps.length) out[next++ % eps.length] = 1;
        return out;
      },
    };
  },
};
