// Every formula of the load generator on a hand-made trace, with the values worked out by hand
// (and, for the statistics, as numpy computes them: population std, linear percentiles).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { computeMetrics, percentile, mean, std, type RequestRecord } from '../../src/bench/loadgen/index.ts';

const close = (actual: unknown, expected: number, what: string) => {
  assert.equal(typeof actual, 'number', what);
  assert.ok(Math.abs((actual as number) - expected) < 1e-9, `${what}: ${actual} ≠ ${expected}`);
};

function rec(p: Partial<RequestRecord>): RequestRecord {
  return { success: true, error: '', startTime: 0, queueTime: 0, ttft: 0, itl: [], latency: 0, promptLen: 0, outputTokens: 0, route: null, ...p };
}

// r1: 4 tokens in 4 chunks; r2: 2 tokens; r3: 1 token (no TPOT); r4 failed
const trace: RequestRecord[] = [
  rec({ startTime: 0, ttft: 0.1, itl: [0.02, 0.03, 0.05], latency: 0.2, outputTokens: 4, promptLen: 10 }),
  rec({ startTime: 0.5, ttft: 0.2, itl: [0.04], latency: 0.24, outputTokens: 2, promptLen: 20 }),
  rec({ startTime: 1.0, ttft: 0.4, itl: [], latency: 0.4, outputTokens: 1, promptLen: 30 }),
  rec({ success: false, error: 'HTTP 500: boom', startTime: 1.2, promptLen: 40 }),
];

test('numpy statistics: mean, population std, linear-interpolated percentiles; 0 when empty', () => {
  close(percentile([1, 2, 3, 4], 25), 1.75, 'p25');
  close(percentile([4, 1, 3, 2], 50), 2.5, 'median of an even count');
  close(percentile([10], 99), 10, 'one sample');
  close(percentile([1, 2, 3, 4, 5], 100), 5, 'p100');
  close(mean([1, 2, 3, 4]), 2.5, 'mean');
  close(std([2, 4, 4, 4, 5, 5, 7, 9]), 2, 'std (ddof 0)');
  assert.equal(percentile([], 99), 0);
  assert.equal(mean([]), 0);
  assert.equal(std([]), 0);
});

test('counts, token totals and throughputs over the measured duration', () => {
  const m = computeMetrics(trace, { durationS: 2 });
  assert.equal(m.completed, 3);
  assert.equal(m.failed, 1);
  assert.equal(m.total_input_tokens, 60, 'failed requests add no input tokens');
  assert.equal(m.total_output_tokens, 7);
  close(m.duration, 2, 'duration');
  close(m.request_throughput, 1.5, 'request_throughput = completed / duration');
  close(m.output_throughput, 3.5, 'output_throughput');
  close(m.total_token_throughput, 33.5, 'total_token_throughput');
  assert.equal(m.request_goodput, null, 'no SLO → no goodput');
  assert.deepEqual(m.errors, ['HTTP 500: boom'], 'failures are reported even without detail');
});

test('TTFT: per request, in ms', () => {
  const m = computeMetrics(trace, { durationS: 2 });
  close(m.mean_ttft_ms, 233.33333333333334, 'mean');
  close(m.median_ttft_ms, 200, 'median');
  close(m.std_ttft_ms, Math.sqrt(0.046666666666666669 / 3) * 1000, 'std');
  close(m.p90_ttft_ms, 360, 'p90');
  close(m.p99_ttft_ms, 396, 'p99');
});

test('TPOT: (e2el − ttft) / (output − 1) per request, only for > 1 output token', () => {
  const m = computeMetrics(trace, { durationS: 2 });
  const t1 = 0.1 / 3;
  const t2 = 0.04;
  close(m.mean_tpot_ms, ((t1 + t2) / 2) * 1000, 'mean over 2 requests (r3 has 1 token)');
  close(m.median_tpot_ms, ((t1 + t2) / 2) * 1000, 'median');
  close(m.p99_tpot_ms, (t1 + 0.99 * (t2 - t1)) * 1000, 'p99');
  close(m.std_tpot_ms, ((t2 - t1) / 2) * 1000, 'std');
});

test('ITL: every gap of every request pooled', () => {
  const m = computeMetrics(trace, { durationS: 2 });
  close(m.mean_itl_ms, 35, 'mean of [20, 30, 50, 40]');
  close(m.median_itl_ms, 35, 'median');
  close(m.p90_itl_ms, 47, 'p90');
  close(m.p99_itl_ms, 49.7, 'p99');
  close(m.std_itl_ms, Math.sqrt(0.000125) * 1000, 'std');
});

test('E2EL and the peaks', () => {
  const m = computeMetrics(trace, { durationS: 2 });
  close(m.mean_e2el_ms, 280, 'mean');
  close(m.median_e2el_ms, 240, 'median');
  close(m.p90_e2el_ms, 368, 'p90');
  // the three requests never overlap; six chunks land in the first second
  assert.equal(m.max_concurrent_requests, 1);
  assert.equal(m.max_output_tokens_per_s, 6);
  const overlapping = computeMetrics([rec({ startTime: 0, latency: 1, ttft: 0.5, outputTokens: 1 }), rec({ startTime: 0.5, latency: 1, ttft: 0.5, outputTokens: 1 })], { durationS: 2 });
  assert.equal(overlapping.max_concurrent_requests, 2);
  const touching = computeMetrics([rec({ startTime: 0, latency: 1, ttft: 0.5, outputTokens: 1 }), rec({ startTime: 1, latency: 1, ttft: 0.5, outputTokens: 1 })], { durationS: 2 });
  assert.equal(touching.max_concurrent_requests, 1, 'half-open intervals: an end and a start at the same instant do not overlap');
});

test('goodput: requests meeting all given SLOs / duration', () => {
  const g = (slo: object) => computeMetrics(trace, { durationS: 2, slo }).request_goodput;
  close(g({ ttftMs: 250, tpotMs: 35 }), 0.5, 'r1 only (r2 TPOT 40 > 35, r3 TTFT 400 > 250)');
  close(g({ tpotMs: 35 }), 1, 'r1 and r3 (one token → TPOT counts as 0)');
  close(g({ itlMs: 45 }), 1, 'r2 and r3 (r1 has a 50 ms gap)');
  close(g({ e2elMs: 250 }), 1, 'r1 and r2');
  close(g({ ttftMs: 400 }), 1.5, 'a value equal to the SLO meets it');
  close(g({ ttftMs: 1 }), 0, 'nobody');
});

test('detailed arrays keep every request in order, failures included', () => {
  const m = computeMetrics(trace, { durationS: 2, detailed: true });
  assert.deepEqual(m.output_lens, [4, 2, 1, 0]);
  assert.deepEqual(m.input_lens, [10, 20, 30, 40]);
  assert.deepEqual(m.ttfts, [0.1, 0.2, 0.4, 0]);
  assert.deepEqual(m.itls, [[0.02, 0.03, 0.05], [0.04], [], []]);
  assert.deepEqual(m.errors, ['', '', '', 'HTTP 500: boom']);
  assert.deepEqual(m.start_times, [0, 0.5, 1.0, 1.2]);
  assert.equal((m.routes as unknown[]).length, 4);
});

test('all requests failed: zeros, not NaN', () => {
  const m = computeMetrics([rec({ success: false, error: 'x' })], { durationS: 1 });
  assert.equal(m.completed, 0);
  assert.equal(m.failed, 1);
  assert.equal(m.mean_ttft_ms, 0);
  assert.equal(m.p99_itl_ms, 0);
  assert.equal(m.max_concurrent_requests, 0);
});
