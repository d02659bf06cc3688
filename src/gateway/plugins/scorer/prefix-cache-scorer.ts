// prefix-cache-scorer: matchLengthWeight · min(1, matchedTokens / matchLengthScaleTokens)²
//                      + (1 − matchLengthWeight) · matchBlocks / totalBlocks
// reading the prefix matches of one producer (approx-prefix-cache-producer by default, or
// precise-prefix-cache-producer via prefixMatchInfoProducerName).
import type { Scorer } from '../../types.ts';
import type { PluginFactory } from '../context.ts';
import { asParams, num, only, optStr } from '../params.ts';

export interface PrefixCacheScorer extends Scorer {
  /** filled in by the config loader when the parameter is omitted */
  producerName: string | undefined;
}

export const prefixCacheScorer: PluginFactory = {
  type: 'prefix-cache-scorer',
  kind: 'scorer',
  create(name, raw): PrefixCacheScorer {
    const p = asParams(raw);
    only(p, ['matchLengthWeight', 'matchLengthScaleTokens', 'prefixMatchInfoProducerName']);
    const w = num(p, 'matchLengthWeight', 0, { min: 0, max: 1 });
    const scale = num(p, 'matchLengthScaleTokens', 8192, { min: 1 });
    const scorer: PrefixCacheScorer = {
      type: 'prefix-cache-scorer',
      name,
      kind: 'scorer',
      category: 'Affinity',
      producerName: optStr(p, 'prefixMatchInfoProducerName'),
      score(req, eps) {
        const matches = scorer.producerName ? req.prefix.get(scorer.producerName) : undefined;
        return eps.map((ep) => {
          const m = matches?.get(ep.id);
          if (!m || m.totalBlocks === 0) return 0;
          const byLength = Math.min(1, (m.matchBlocks * m.blockSize) / scale) ** 2;
          return w * byLength + (1 - w) * (m.matchBlocks / m.totalBlocks);
        });
      },
    };
    return scorer;
  },
};
