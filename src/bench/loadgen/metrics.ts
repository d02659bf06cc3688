// The serving metrics exactly as `vllm bench serve` computes them (vllm/benchmarks/serve.py,
// calculate_metrics): per-request TTFT, TPOT and E2EL, ITL pooled over every gap of every request,
// numpy's mean / median / population std / linear-interpolated percentiles, and vLLM's field names
// and units (seconds in the per-request arrays, milliseconds in the summaries).

/** What one request measured. Times are seconds, as in vLLM's RequestFuncOutput. */
export interface RequestRecord {
  success: boolean;
  /** empty on success */
  error: string;
  /** send time, seconds since the start of the measured run */
  startTime: number;
  /** seconds a request waited for a concurrency slot before it was sent */
  queueTime: number;
  ttft: number;
  /** every gap between consecutive streamed chunks after the first, seconds */
  itl: number[];
  /** send → last streamed chunk, seconds */
  latency: number;
  /** `usage.prompt_tokens` when the server sent it, else the tokens the generator sent (if known) */
  promptLen: number;
  /** `usage.completion_tokens`; when the server sent no usage, the number of streamed chunks */
  outputTokens: number;
  /** the gateway's `x-tandem-*` routing headers, when present */
  route?: RouteInfo | null;
}

export interface RouteInfo {
  route?: string;
  prefill?: string;
  decode?: string;
  decision?: string;
}

/** Service-level objectives for goodput, milliseconds. A request is good only if it meets all given. */
export interface Slo {
  ttftMs?: number;
  /** tandem extra (vLLM's goodput has no ITL term): every inter-chunk gap of the request ≤ itlMs */
  itlMs?: number;
  tpotMs?: number;
  e2elMs?: number;
}

/** numpy.mean; 0 for no samples, as vLLM's `np.mean(xs or 0)`. */
export function mean(xs: readonly number[]): number {
  if (!xs.length) return 0;
  let s = 0;
  for (const x of xs) s += x;
  return s / xs.length;
}

/** numpy.std (population, ddof = 0); 0 for no samples. */
export function std(xs: readonly number[]): number {
  if (!xs.length) return 0;
  const m = mean(xs);
  let s = 0;
  for (const x of xs) s += (x - m) * (x - m);
  return Math.sqrt(s / xs.length);
}

/** numpy.percentile with its default 'linear' method; 0 for no samples. `p` in [0, 100]. */
export function percentile(xs: readonly number[], p: number): number {
  if (!xs.length) return 0;
  const s = Float64Array.from(xs).sort();
  const rank = (p / 100) * (s.length - 1);
  const lo = Math.floor(rank);
  const hi = Math.min(s.length - 1, lo + 1);
  return s[lo]! + (s[hi]! - s[lo]!) * (rank - lo);
}

export const PERCENTILES = [90, 99] as const;

/** mean/median/std/pNN of `xs` (seconds) under vLLM's names, in milliseconds. */
function summarize(out: Record<string, unknown>, name: string, xs: readonly number[]): void {
  out[`mean_${name}_ms`] = mean(xs) * 1000;
  out[`median_${name}_ms`] = percentile(xs, 50) * 1000;
  out[`std_${name}_ms`] = std(xs) * 1000;
  for (const p of PERCENTILES) out[`p${p}_${name}_ms`] = percentile(xs, p) * 1000;
}

/** TPOT of one request: (E2EL − TTFT) / (output tokens − 1); undefined with ≤ 1 output token. */
export function tpotOf(r: RequestRecord): number | undefined {
  return r.outputTokens > 1 ? (r.latency - r.ttft) / (r.outputTokens - 1) : undefined;
}

/** Whether a successful request meets every given SLO (vLLM: tpot counts as 0 with ≤ 1 output token). */
export function meetsSlo(r: RequestRecord, slo: Slo): boolean {
  if (slo.ttftMs !== undefined && r.ttft * 1000 > slo.ttftMs) return false;
  if (slo.tpotMs !== undefined && (tpotOf(r) ?? 0) * 1000 > slo.tpotMs) return false;
  if (slo.e2elMs !== undefined && r.latency * 1000 > slo.e2elMs) return false;
  if (slo.itlMs !== undefined) for (const g of r.itl) if (g * 1000 > slo.itlMs) return false;
  return true;
}

export interface MetricsOptions {
  /** the measured run's wall time, seconds: first send → last request done */
  durationS: number;
  slo?: Slo;
  /** include the per-request arrays (vLLM's --save-detailed) */
  detailed?: boolean;
}

/**
 * vLLM's result object for a list of request records. Failed requests count in `failed` and in
 * `errors`, and contribute nothing else (vLLM: output_lens 0, no latency samples).
 */
export function computeMetrics(records: readonly RequestRecord[], opts: MetricsOptions): Record<string, unknown> {
  const dur = opts.durationS;
  const ok = records.filter((r) => r.success);
  const ttfts = ok.map((r) => r.ttft);
  const e2els = ok.map((r) => r.latency);
  const tpots: number[] = [];
  const itls: number[] = [];
  let totalInput = 0;
  let totalOutput = 0;
  for (const r of ok) {
    const t = tpotOf(r);
    if (t !== undefined) tpots.push(t);
    for (const g of r.itl) itls.push(g);
    totalInput += r.promptLen;
    totalOutput += r.outputTokens;
  }
  const slo = opts.slo && Object.values(opts.slo).some((v) => v !== undefined) ? opts.slo : undefined;
  const good = slo ? ok.filter((r) => meetsSlo(r, slo)).length : 0;
  const peak = peaks(ok);

  const out: Record<string, unknown> = {
    duration: dur,
    completed: ok.length,
    failed: records.length - ok.length,
    total_input_tokens: totalInput,
    total_output_tokens: totalOutput,
    request_throughput: ok.length / dur,
    request_goodput: slo ? good / dur : null,
    output_throughput: totalOutput / dur,
    total_token_throughput: (totalInput + totalOutput) / dur,
    max_output_tokens_per_s: peak.maxOutputTokensPerS,
    max_concurrent_requests: peak.maxConcurrentRequests,
  };
  summarize(out, 'ttft', ttfts);
  summarize(out, 'tpot', tpots);
  summarize(out, 'itl', itls);
  summarize(out, 'e2el', e2els);
  if (opts.detailed) {
    out.input_lens = records.map((r) => r.promptLen);
    out.output_lens = records.map((r) => (r.success ? r.outputTokens : 0));
    out.ttfts = records.map((r) => r.ttft);
    out.itls = records.map((r) => r.itl);
    out.latencies = records.map((r) => r.latency);
    out.start_times = records.map((r) => r.startTime);
    out.queue_times = records.map((r) => r.queueTime);
    out.errors = records.map((r) => r.error);
    out.routes = records.map((r) => r.route ?? null);
  } else {
    // Failures are never silent: their messages stay even without --save-detailed.
    out.errors = records.filter((r) => !r.success).map((r) => r.error);
  }
  return out;
}

/**
 * vLLM's peak figures: output chunks per one-second bucket (chunk times rebuilt from TTFT + ITL,
 * buckets counted from the first send) and the exact peak of overlapping [start, end) intervals.
 */
function peaks(ok: readonly RequestRecord[]): { maxOutputTokensPerS: number; maxConcurrentRequests: number } {
  if (!ok.length) return { maxOutputTokensPerS: 0, maxConcurrentRequests: 0 };
  let t0 = Infinity;
  for (const r of ok) t0 = Math.min(t0, r.startTime);
  const buckets = new Map<number, number>();
  const events: [number, number][] = [];
  for (const r of ok) {
    let t = r.startTime + r.ttft;
    const add = (x: number) => {
      const b = Math.floor(x - t0);
      buckets.set(b, (buckets.get(b) ?? 0) + 1);
    };
    add(t);
    for (const g of r.itl) add((t += g));
    events.push([r.startTime, 1], [r.startTime + r.latency, -1]);
  }
  events.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  let cur = 0;
  let peak = 0;
  for (const [, d] of events) peak = Math.max(peak, (cur += d));
  return { maxOutputTokensPerS: Math.max(0, ...buckets.values()), maxConcurrentRequests: peak };
}
