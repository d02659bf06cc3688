// Plugin types by name. Only the config composes plugins; adding one touches no other plugin.
import type { PluginFactory } from './context.ts';
import { decodeFilter, prefillFilter } from './filter/by-role.ts';
import { labelSelectorFilter } from './filter/label-selector-filter.ts';
import { queueScorer } from './scorer/queue-scorer.ts';
import { kvCacheUtilizationScorer } from './scorer/kv-cache-utilization-scorer.ts';
import { activeRequestScorer } from './scorer/active-request-scorer.ts';
import { tokenLoadScorer } from './scorer/token-load-scorer.ts';
import { prefixCacheScorer } from './scorer/prefix-cache-scorer.ts';
import { roundRobin } from './scorer/round-robin.ts';
import { maxScorePicker } from './picker/max-score-picker.ts';
import { weightedRandomPicker } from './picker/weighted-random-picker.ts';
import { randomPicker } from './picker/random-picker.ts';
import { singleProfileHandler } from './profile/single-profile-handler.ts';
import { disaggProfileHandler } from './profile/disagg-profile-handler.ts';
import { alwaysDisaggPdDecider, neverAlias, neverDisaggPdDecider } from './decider/simple.ts';
import { prefixBasedPdDecider } from './decider/prefix-based-pd-decider.ts';
import { costModelAlias, costModelPdDecider } from './decider/cost-model-pd-decider.ts';
import { tokenProducer } from './producer/token-producer.ts';
import { approxPrefixCacheProducer } from './producer/approx-prefix-cache-producer.ts';
import { precisePrefixCacheProducer } from './producer/precise-prefix-cache-producer.ts';

const all: PluginFactory[] = [
  decodeFilter, prefillFilter, labelSelectorFilter,
  queueScorer, kvCacheUtilizationScorer, activeRequestScorer, tokenLoadScorer, prefixCacheScorer, roundRobin,
  maxScorePicker, weightedRandomPicker, randomPicker,
  singleProfileHandler, disaggProfileHandler,
  alwaysDisaggPdDecider, neverDisaggPdDecider, neverAlias, prefixBasedPdDecider, costModelPdDecider, costModelAlias,
  tokenProducer, approxPrefixCacheProducer, precisePrefixCacheProducer,
];

export const pluginRegistry: ReadonlyMap<string, PluginFactory> = new Map(all.map((f) => [f.type, f]));

/** Producer types that publish prefix matches (what prefix-cache-scorer and the deciders read). */
export const PREFIX_PRODUCER_TYPES: ReadonlySet<string> = new Set(['approx-prefix-cache-producer', 'precise-prefix-cache-producer']);
