// prefix-based-pd-decider (llm-d): for the chosen decode endpoint,
//   nonCached = promptTokens − cachedBlocks(decode) × blockSize
//   disaggregate ⇔ nonCachedTokens > 0 ∧ prompt ≥ promptTokens ∧ nonCached ≥ nonCachedTokens
// nonCachedTokens 0 (the default) disables the decider, as in llm-d.
import type { Decider } from '../../types.ts';
import type { PluginFactory } from '../context.ts';
import { asParams, num, only, optStr } from '../params.ts';
import { cachedTokens, promptTokens, type UsesPrefixProducer } from './cached-tokens.ts';

export const prefixBasedPdDecider: PluginFactory = {
  type: 'prefix-based-pd-decider',
  kind: 'decider',
  create(name, raw): Decider & UsesPrefixProducer {
    const p = asParams(raw);
    only(p, ['nonCachedTokens', 'promptTokens', 'prefixMatchInfoProducerName']);
    const threshold = num(p, 'nonCachedTokens', 0, { min: 0, int: true });
    const minPrompt = num(p, 'promptTokens', 0, { min: 0, int: true });
    const decider: Decider & UsesPrefixProducer = {
      type: 'prefix-based-pd-decider',
      name,
      kind: 'decider',
      producerName: optStr(p, 'prefixMatchInfoProducerName'),
      decide(req, decode) {
        const tokens = promptTokens(req);
        const exact = req.tokens?.exact ? '' : '~';
        if (threshold === 0) return { disaggregate: false, reason: 'prefix-based: nonCachedTokens 0 (disabled)' };
        if (minPrompt > 0 && tokens < minPrompt) {
          return { disaggregate: false, reason: `prefix-based: prompt ${exact}${tokens} < promptTokens ${minPrompt}` };
        }
        const cached = cachedTokens(req, decode, decider.producerName);
        const nonCached = tokens - cached;
        const disaggregate = nonCached >= threshold;
        return {
          disaggregate,
          reason: `prefix-based: prompt ${exact}${tokens} - cached ${cached} = ${nonCached} ${disaggregate ? '>=' : '<'} nonCachedTokens ${threshold}`,
        };
      },
    };
    return decider;
  },
};
