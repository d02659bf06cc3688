// decode-filter / prefill-filter: keep endpoints by role (llm-d's bylabel/roles.go).
// An endpoint's role comes from its registration, --endpoint flag or engine metadata; `both` serves either stage.
import type { Endpoint, Filter } from '../../types.ts';
import type { PluginFactory } from '../context.ts';
import { asParams, only } from '../params.ts';

function roleFilter(type: string, keep: (ep: Endpoint) => boolean): PluginFactory {
  return {
    type,
    kind: 'filter',
    create(name, params): Filter {
      only(asParams(params), []);
      return { type, name, kind: 'filter', filter: (_req, eps) => eps.filter(keep) };
    },
  };
}

export const decodeFilter = roleFilter('decode-filter', (ep) => ep.role === 'decode' || ep.role === 'both');
export const prefillFilter = roleFilter('prefill-filter', (ep) => ep.role === 'prefill' || ep.role === 'both');
