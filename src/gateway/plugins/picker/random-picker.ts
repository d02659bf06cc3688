// random-picker: uniform random order, scores ignored.
import type { Picker } from '../../types.ts';
import type { PluginFactory } from '../context.ts';
import { asParams, num, only } from '../params.ts';

export const randomPicker: PluginFactory = {
  type: 'random-picker',
  kind: 'picker',
  create(name, raw): Picker {
    const p = asParams(raw);
    only(p, ['maxNumOfEndpoints']);
    const cap = num(p, 'maxNumOfEndpoints', Infinity, { min: 1, int: true });
    return {
      type: 'random-picker',
      name,
      kind: 'picker',
      pick(scored) {
        const eps = scored.map((s) => s.endpoint);
        for (let i = eps.length - 1; i > 0; i--) {
          const j = Math.floor(Math.random() * (i + 1));
          [eps[i], eps[j]] = [eps[j]!, eps[i]!];
        }
        return eps.slice(0, Math.min(cap, eps.length));
      },
    };
  },
};
