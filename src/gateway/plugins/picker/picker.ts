// What every picker shares: llm-d's `maxNumOfEndpoints` parameter (the first pick is the target, the
// rest are fallbacks), so a picker is just an ordering of the scored endpoints.
import type { Endpoint, Picker, ScoredEndpoint } from '../../types.ts';
import type { PluginFactory } from '../context.ts';
import { asParams, num, only } from '../params.ts';

export function pickerPlugin(type: string, order: (scored: readonly ScoredEndpoint[], cap: number) => Endpoint[]): PluginFactory {
  return {
    type,
    kind: 'picker',
    create(name, raw): Picker {
      const p = asParams(raw);
      only(p, ['maxNumOfEndpoints']);
      const cap = num(p, 'maxNumOfEndpoints', Infinity, { min: 1, int: true });
      return { type, name, kind: 'picker', pick: (scored) => order(scored, cap).slice(0, cap) };
    },
  };
}
