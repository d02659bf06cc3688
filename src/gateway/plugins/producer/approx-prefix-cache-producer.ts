// approx-prefix-cache-producer: remembers which endpoint each prompt block was routed to, with no
// engine help (llm-d's approximateprefix). Blocks are blockSizeTokens exact tokens when the token
// producer has ids, else blockSizeTokens × 4 characters (estimated tokens). A request's match on an
// endpoint is the number of consecutive blocks from block 0 that the endpoint was sent before.
import type { DataProducer, PrefixMatch, SchedulingRequest } from '../../types.ts';
import type { PluginFactory } from '../context.ts';
import { asParams, num, only } from '../params.ts';
import { BlockIndex } from '../../prefix/block-index.ts';
import { chainSeed, textBlockKeys, tokenBlockKeys } from '../../prefix/hash.ts';

export interface ApproxPrefixProducer extends DataProducer {
  readonly index: BlockIndex;
}

export const approxPrefixCacheProducer: PluginFactory = {
  type: 'approx-prefix-cache-producer',
  kind: 'producer',
  create(name, raw, ctx): ApproxPrefixProducer {
    const p = asParams(raw);
    only(p, ['blockSizeTokens', 'maxPrefixBlocksToMatch', 'lruCapacityPerServer']);
    const blockSize = num(p, 'blockSizeTokens', 16, { min: 1, int: true });
    const maxBlocks = num(p, 'maxPrefixBlocksToMatch', 2048, { min: 1, int: true });
    const capacity = num(p, 'lruCapacityPerServer', 31_250, { min: 1, int: true });
    const index = new BlockIndex(capacity);
    const keysOf = new WeakMap<SchedulingRequest, number[]>();
    ctx.endpoints.onEndpoint(() => {}, (ep) => index.clear(ep.id));
    return {
      type: 'approx-prefix-cache-producer',
      name,
      kind: 'producer',
      index,
      produce(req, endpoints) {
        const seed = chainSeed(req.model, typeof req.body.cache_salt === 'string' ? req.body.cache_salt : '');
        const keys = req.tokens?.ids
          ? tokenBlockKeys(seed, req.tokens.ids, blockSize, maxBlocks)
          : textBlockKeys(seed, req.promptText, blockSize * 4, maxBlocks);
        keysOf.set(req, keys);
        const matches = new Map<string, PrefixMatch>();
        for (const ep of endpoints) {
          matches.set(ep.id, { matchBlocks: index.longestPrefix(ep.id, keys), totalBlocks: keys.length, blockSize });
        }
        req.prefix.set(name, matches);
      },
      routed(req, result) {
        const keys = keysOf.get(req);
        if (!keys || keys.length === 0) return;
        index.add(result.decode[0]!.id, keys);
        if (result.prefill?.length) index.add(result.prefill[0]!.id, keys);
      },
    };
  },
};
