// token-producer: the prompt's token count (and ids, when exact) for deciders and prefix producers.
//   backend estimate: ≈ bytesPerToken bytes per token (llm-d's `estimate`), no I/O.
//   backend vllm:     exact ids from an engine's POST /tokenize (vLLM shape), cached by prompt.
//   backend auto:     vllm when some candidate endpoint answers /tokenize, else estimate (default).
// The cache keeps the gateway off the engines for repeated prompts and prefixes of conversations.
import type { DataProducer } from '../../types.ts';
import type { PluginFactory } from '../context.ts';
import { asParams, num, only, str } from '../params.ts';
import { hashTextBlock } from '../../prefix/hash.ts';

export const tokenProducer: PluginFactory = {
  type: 'token-producer',
  kind: 'producer',
  create(name, raw, ctx): DataProducer {
    const p = asParams(raw);
    only(p, ['backend', 'cacheSize', 'bytesPerToken']);
    const backend = str(p, 'backend', 'auto', ['auto', 'estimate', 'vllm'] as const);
    const cacheSize = num(p, 'cacheSize', 4096, { min: 0, int: true });
    const bytesPerToken = num(p, 'bytesPerToken', 4, { min: 0.1 });
    const cache = new Map<string, number[]>();
    let warned = false;
    const estimate = (text: string) => Math.max(1, Math.ceil(Buffer.byteLength(text) / bytesPerToken));
    return {
      type: 'token-producer',
      name,
      kind: 'producer',
      produce(req, endpoints) {
        if (req.tokens?.exact) return; // the client sent token ids
        if (backend === 'estimate' || (cache.size === 0 && !ctx.tokenizer.mayTokenize(endpoints))) {
          req.tokens = { count: estimate(req.promptText), exact: false };
          return;
        }
        const key = `${req.kind}\u0000${req.model}\u0000${req.promptText.length}\u0000${hashTextBlock(0, req.promptText, 0, req.promptText.length)}`;
        const hit = cache.get(key);
        if (hit) {
          cache.delete(key);
          cache.set(key, hit);
          req.tokens = { count: hit.length, ids: hit, exact: true };
          return;
        }
        return ctx.tokenizer.tokenize(req, endpoints).then((ids) => {
          if (!ids) {
            if (backend === 'vllm' && !warned) {
              warned = true;
              ctx.log(`token-producer: no endpoint answers POST /tokenize; estimating ${bytesPerToken} bytes per token`);
            }
            req.tokens = { count: estimate(req.promptText), exact: false };
            return;
          }
          req.tokens = { count: ids.length, ids, exact: true };
          if (cacheSize > 0) {
            cache.set(key, ids);
            if (cache.size > cacheSize) cache.delete(cache.keys().next().value!);
          }
        });
      },
    };
  },
};
