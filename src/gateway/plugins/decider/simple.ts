// always-disagg-pd-decider: every request is split (benchmarks, the P/D guide's setting).
// never-disagg-pd-decider (alias `never`): no request is split, while keeping a P/D-shaped config.
import type { Decider } from '../../types.ts';
import type { PluginFactory } from '../context.ts';
import { asParams, only } from '../params.ts';

function constant(type: string, disaggregate: boolean, reason: string): PluginFactory {
  return {
    type,
    kind: 'decider',
    create(name, params): Decider {
      only(asParams(params), []);
      return { type, name, kind: 'decider', decide: () => ({ disaggregate, reason }) };
    },
  };
}

export const alwaysDisaggPdDecider = constant('always-disagg-pd-decider', true, 'always-disagg');
export const neverDisaggPdDecider = constant('never-disagg-pd-decider', false, 'never-disagg');
export const neverAlias: PluginFactory = { ...neverDisaggPdDecider, type: 'never' };
