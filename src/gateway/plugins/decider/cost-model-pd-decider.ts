// cost-model-pd-decider (alias `cost-model`), tandem's own: predicts time to first token both ways
// and picks the faster.
//   TTFT_local = queue(D) + fixed(D) + uncached(D) / rate(D)
//   TTFT_split = queue(P) + fixed(P) + uncached(P) / rate(P) + uncached(D) · kvBytesPerToken / transferRate
//                + legOverhead + fixed(D)        (the decode engine still runs a step for the last token)
//   queue(E)   = gateway-tracked in-flight uncached tokens on E / rate(E)
// fixed(E) is what any request costs on E whatever its length (a GPU step, HTTP): learned from short
// prompts, so a split pays it twice and never wins for a handful of tokens. rate(E) is the EWMA of
// the gateway's own observations (prefill legs, local TTFTs, net of fixed(E)), else the engine's
// tandem:prefill_tokens_per_second gauge, else the configured default; likewise the transfer rate.
// Split only when it wins by more than minGainMs.
import type { Decider, Endpoint, SchedulingRequest } from '../../types.ts';
import type { PluginFactory } from '../context.ts';
import { asParams, num, only, optStr } from '../params.ts';
import { cachedTokens, promptTokens, type UsesPrefixProducer } from './cached-tokens.ts';

function create(type: string): PluginFactory {
  return {
    type,
    kind: 'decider',
    create(name, raw, ctx): Decider & UsesPrefixProducer {
      const p = asParams(raw);
      only(p, ['defaultPrefillTokensPerSecond', 'kvBytesPerToken', 'defaultTransferBytesPerSecond', 'defaultLegOverheadMs', 'minGainMs', 'prefixMatchInfoProducerName']);
      const defRate = num(p, 'defaultPrefillTokensPerSecond', 2000, { min: 1 });
      const defKvBytes = num(p, 'kvBytesPerToken', 16384, { min: 0 });
      const defTransfer = num(p, 'defaultTransferBytesPerSecond', 1e9, { min: 1 });
      const defOverhead = num(p, 'defaultLegOverheadMs', 2, { min: 0 }) / 1000;
      const minGain = num(p, 'minGainMs', 0, { min: 0 }) / 1000;
      const rates = ctx.rates;
      const decider: Decider & UsesPrefixProducer = {
        type,
        name,
        kind: 'decider',
        producerName: optStr(p, 'prefixMatchInfoProducerName'),
        decide(req: SchedulingRequest, decode: Endpoint, dctx) {
          const tokens = promptTokens(req);
          const predict = (ep: Endpoint) => {
            const rate = rates.prefillRate(ep.id, ep.metrics.prefillTokensPerSecond, defRate);
            const fixed = rates.prefillFixed(ep.id, 0).value;
            const uncached = tokens - cachedTokens(req, ep, decider.producerName);
            return { rate, uncached, fixed, queue: ep.inflightTokens / rate.value, compute: fixed + uncached / rate.value };
          };
          const local = predict(decode);
          const ttftLocal = local.queue + local.compute;
          const prefill = dctx.prefillPick();
          const ms = (s: number) => (s * 1000).toFixed(2);
          if (!prefill) return { disaggregate: false, reason: `cost-model: local ${ms(ttftLocal)}ms; no prefill endpoint` };
          const remote = predict(prefill);
          const transfer = rates.transferRate(defTransfer);
          const overhead = rates.legOverhead(defOverhead);
          const kv = (local.uncached * (decode.kvBytesPerToken ?? defKvBytes)) / transfer.value;
          const ttftSplit = remote.queue + remote.compute + kv + overhead.value + local.fixed;
          const disaggregate = ttftSplit + minGain < ttftLocal;
          const r = (x: { value: number; source: string }) => `${Math.round(x.value)}tok/s ${x.source}`;
          return {
            disaggregate,
            reason:
              `cost-model: ${disaggregate ? 'split' : 'local'}; split ${ms(ttftSplit)}ms = queue ${ms(remote.queue)} + prefill ${ms(remote.compute)} (${remote.uncached} tok @${r(remote.rate)})` +
              ` + kv ${ms(kv)} (${transfer.source}) + legs ${ms(overhead.value)} + decode step ${ms(local.fixed)}; local ${ms(ttftLocal)}ms = queue ${ms(local.queue)} + prefill ${ms(local.compute)} (${local.uncached} tok @${r(local.rate)})`,
          };
        },
      };
      return decider;
    },
  };
}

export const costModelPdDecider = create('cost-model-pd-decider');
export const costModelAlias = create('cost-model');
