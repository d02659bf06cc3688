// Request arrival times, as `vllm bench serve` draws them: inter-arrival gaps from a gamma
// distribution with shape = burstiness and mean 1/rate (burstiness 1 = Poisson process, < 1 burstier,
// → ∞ evenly spaced), cumulated, and for a fixed number of requests rescaled so the last arrival
// lands exactly at n / rate (vLLM does this so throughput does not drift 1–2 % with the seed).

/** A small seeded generator (mulberry32): the same seed gives the same workload on every machine. */
export class Rng {
  private s: number;
  constructor(seed: number) {
    this.s = (Math.trunc(seed) ^ 0x9e3779b9) >>> 0;
  }
  /** uniform in [0, 1) */
  next(): number {
    let t = (this.s = (this.s + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  /** uniform integer in [lo, hi] */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }
  normal(): number {
    // Box–Muller; 1 − u keeps the log finite
    return Math.sqrt(-2 * Math.log(1 - this.next())) * Math.cos(2 * Math.PI * this.next());
  }
  /** Gamma(shape, scale) by Marsaglia–Tsang; shape < 1 through Gamma(shape + 1)·U^(1/shape). */
  gamma(shape: number, scale: number): number {
    if (shape < 1) return this.gamma(shape + 1, scale) * Math.pow(1 - this.next(), 1 / shape);
    const d = shape - 1 / 3;
    const c = 1 / Math.sqrt(9 * d);
    for (;;) {
      let x: number;
      let v: number;
      do {
        x = this.normal();
        v = 1 + c * x;
      } while (v <= 0);
      v = v * v * v;
      const u = 1 - this.next();
      if (Math.log(u) < 0.5 * x * x + d - d * v + d * Math.log(v)) return d * v * scale;
    }
  }
}

export interface ArrivalSpec {
  /** requests per second; Infinity sends everything at once */
  qps: number;
  arrival?: 'poisson' | 'constant';
  /** gamma shape (vLLM's --burstiness); ignored for 'constant' */
  burstiness?: number;
  seed?: number;
}

/** One inter-arrival gap after another, seconds (endless; for duration-bounded runs). */
export function interArrivals(spec: ArrivalSpec): () => number {
  const { qps } = spec;
  if (qps === Infinity) return () => 0;
  const b = spec.arrival === 'constant' ? Infinity : (spec.burstiness ?? 1);
  if (b === Infinity) return () => 1 / qps;
  const rng = new Rng(spec.seed ?? 0);
  const theta = 1 / (qps * b);
  return () => rng.gamma(b, theta);
}

/**
 * Send offsets (seconds from the start) of n requests: cumulative gaps — the first request also waits
 * one gap, as in vLLM — rescaled so the last one is at n / qps. All zero when qps is Infinity.
 */
export function arrivalOffsets(n: number, spec: ArrivalSpec): number[] {
  const gap = interArrivals(spec);
  const out: number[] = [];
  let t = 0;
  for (let i = 0; i < n; i++) out.push((t += gap()));
  if (spec.qps !== Infinity && n > 0 && t > 0) {
    const k = n / spec.qps / t;
    for (let i = 0; i < n; i++) out[i]! *= k;
  }
  return out;
}
