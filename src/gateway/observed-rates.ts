// Rates the cost-model decider predicts with, learned from the gateway's own observations of leg
// durations (EWMA), so they track the engines as they are now rather than as configured.

export interface Rate {
  value: number;
  source: 'observed' | 'engine' | 'default';
}

const ALPHA = 0.2;
/** below this many tokens a leg's duration is mostly fixed overhead and says little about the rate */
const MIN_TOKENS = 16;

export class ObservedRates {
  private readonly prefill = new Map<string, number>();
  private transfer: number | undefined;
  private overhead: number | undefined;

  /** An endpoint computed `tokens` uncached prompt tokens in `seconds` (prefill leg, or TTFT of a local run). */
  observePrefill(endpointId: string, tokens: number, seconds: number): void {
    if (tokens < MIN_TOKENS || !(seconds > 0)) return;
    const rate = tokens / seconds;
    const old = this.prefill.get(endpointId);
    this.prefill.set(endpointId, old === undefined ? rate : old + ALPHA * (rate - old));
  }

  /** A split request's decode leg took `seconds` to its first byte while pulling `bytes` of KV. */
  observeTransfer(bytes: number, seconds: number): void {
    if (!(bytes > 0) || !(seconds > 0)) return;
    const rate = bytes / seconds;
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
  }
}
