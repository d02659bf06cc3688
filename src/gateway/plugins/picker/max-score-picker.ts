// max-score-picker: highest total score first, ties broken at random; the rest follow in score
// order as fallbacks (capped by maxNumOfEndpoints).
import type { Picker } from '../../types.ts';
import type { PluginFactory } from '../context.ts';
import { asParams, num, only } from '../params.ts';

export const maxScorePicker: PluginFactory = {
  type: 'max-score-picker',
  kind: 'picker',
  create(name, raw): Picker {
    const p = asParams(raw);
    only(p, ['maxNumOfEndpoints']);
    const cap = num(p, 'maxNumOfEndpoints', Infinity, { min: 1, int: true });
    return {
      type: 'max-score-picker',
      name,
      kind: 'picker',
      pick(scored) {
        if (scored.length === 1) return [scored[0]!.endpoint];
        const keyed = scored.map((s) => ({ s, r: Math.random() }));
        keyed.sort((a, b) => b.s.score - a.s.score || a.r - b.r);
        return keyed.slice(0, Math.min(cap, keyed.length)).map((k) => k.s.endpoint);
      },
    };
  },
};
