// Rates the cost-model decider predicts with, learned from the gateway's own observations of leg
// durations (EWMA), so they track the engines as they are now rather than as configured.

export interface Rate {
  value: number;
  source: 'observed' | 'engine' | 'default';
}

const ALPHA = 0.2;
/** a leg with at most this many uncached tokens measures the endpoint's fixed cost, not its rate */
const SMALL_TOKENS = 16;
/** pulls smaller than this are dominated by fixed costs and do not measure the link */
const MIN_TRANSFER_BYTES = 1 << 20;

export class ObservedRates {
  private readonly prefill = new Map<string, number>();
  /** per endpoint: the time any request takes to its first token whatever its length (a step, the legs) */
  private readonly fixed = new Map<string, number>();
  private transfer: number | undefined;
  private overhead: number | undefined;

  /**
   * An endpoint computed `tokens` uncached prompt tokens in `seconds` (prefill leg, or TTFT of a local
   * run). Time to first token is modelled as fixed + tokens / rate: short prompts teach the fixed part
   * (on a GPU a 8-token prefill costs a whole step), long ones the rate of what remains.
   */
  observePrefill(endpointId: string, tokens: number, seconds: number): void {
    if (!(seconds > 0) || tokens < 0) return;
    if (tokens <= SMALL_TOKENS) {
      const old = this.fixed.get(endpointId);
      this.fixed.set(endpointId, old === undefined ? seconds : old + ALPHA * (seconds - old));
      return;
    }
    const variable = seconds - (this.fixed.get(endpointId) ?? 0);
    if (!(variable > 0)) return; // all fixed cost: says nothing about the rate
    const rate = tokens / variable;
    const old = this.prefill.get(endpointId);
    this.prefill.set(endpointId, old === undefined ? rate : old + ALPHA * (rate - old));
  }

  /**
   * Fixed time to first token on an endpoint (seconds), learned from short prompts; an endpoint not
   * yet seen with one is assumed to cost what the others do (engines of a pool are alike), rather
   * than nothing, which would make a split of a handful of tokens look free.
   */
  prefillFixed(endpointId: string, fallback: number): Rate {
    const o = this.fixed.get(endpointId);
    if (o !== undefined) return { value: o, source: 'observed' };
    if (this.fixed.size > 0) {
      let sum = 0;
      for (const v of this.fixed.values()) sum += v;
      return { value: sum / this.fixed.size, source: 'observed' };
    }
    return { value: fallback, source: 'default' };
  }

  /**
   * A split request's decode leg took `seconds` to its first byte while pulling `bytes` of KV on
   * `decodeEndpointId`. That time also holds the decode engine's own fixed cost (its step for the
   * last prompt token), which is taken off; small pulls, all fixed cost, say nothing about the link.
   */
  observeTransfer(bytes: number, seconds: number, decodeEndpointId?: string): void {
    const net = seconds - (decodeEndpointId !== undefined ? (this.fixed.get(decodeEndpointId) ?? 0) : 0);
    if (!(bytes >= MIN_TRANSFER_BYTES) || !(net > 0)) return;
    const rate = bytes / net;
    this.transfer = this.transfer === undefined ? rate : this.transfer + ALPHA * (rate - this.transfer);
  }

  /** Gateway-side cost of one extra leg (request build, connection, response parse), seconds. */
  observeLegOverhead(seconds: number): void {
    if (!(seconds >= 0)) return;
    this.overhead = this.overhead === undefined ? seconds : this.overhead + ALPHA * (seconds - this.overhead);
  }

  prefillRate(endpointId: string, engineGauge: number | undefined, fallback: number): Rate {
    const o = this.prefill.get(endpointId);
    if (o !== undefined) return { value: o, source: 'observed' };
    if (engineGauge !== undefined && engineGauge > 0) return { value: engineGauge, source: 'engine' };
    return { value: fallback, source: 'default' };
  }

  transferRate(fallback: number): Rate {
    return this.transfer !== undefined ? { value: this.transfer, source: 'observed' } : { value: fallback, source: 'default' };
  }

  legOverhead(fallback: number): Rate {
    return this.overhead !== undefined ? { value: this.overhead, source: 'observed' } : { value: fallback, source: 'default' };
  }

  forget(endpointId: string): void {
    this.prefill.delete(endpointId);
    this.fixed.delete(endpointId);
  }
}
