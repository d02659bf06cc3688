// The end-of-run report: vLLM's "Serving Benchmark Result" block per point (same labels, so the
// numbers read side by side with `vllm bench serve` output), and a one-line-per-point sweep table.
import type { BenchResult } from './run.ts';

const W = 50;
const row = (label: string, v: unknown) => `${label.padEnd(40)} ${typeof v === 'number' && !Number.isInteger(v) ? v.toFixed(2) : String(v)}`;
const rule = (title: string) => {
  const left = Math.max(0, Math.floor((W - title.length) / 2));
  return '-'.repeat(left) + title + '-'.repeat(Math.max(0, W - title.length - left));
};

export function formatSummary(r: BenchResult): string {
  const n = (k: string) => r[k] as number;
  const lines: string[] = [];
  const head = ' Serving Benchmark Result ';
  const left = Math.floor((W - head.length) / 2);
  lines.push('='.repeat(left) + head + '='.repeat(W - head.length - left));
  lines.push(row('Successful requests:', r.completed));
  lines.push(row('Failed requests:', r.failed));
  if (r.max_concurrency !== null && r.max_concurrency !== undefined) lines.push(row('Maximum request concurrency:', r.max_concurrency));
  if (typeof r.request_rate === 'number') lines.push(row('Request rate configured (RPS):', r.request_rate.toFixed(2)));
  lines.push(row('Benchmark duration (s):', n('duration').toFixed(2)));
  lines.push(row('Total input tokens:', r.total_input_tokens));
  lines.push(row('Total generated tokens:', r.total_output_tokens));
  lines.push(row('Request throughput (req/s):', r.request_throughput.toFixed(2)));
  if (r.request_goodput !== null && r.request_goodput !== undefined) lines.push(row('Request goodput (req/s):', r.request_goodput.toFixed(2)));
  lines.push(row('Output token throughput (tok/s):', r.output_throughput.toFixed(2)));
  lines.push(row('Peak output token throughput (tok/s):', n('max_output_tokens_per_s').toFixed(2)));
  lines.push(row('Peak concurrent requests:', n('max_concurrent_requests').toFixed(2)));
  lines.push(row('Total Token throughput (tok/s):', r.total_token_throughput.toFixed(2)));
  const block = (key: string, name: string, title: string) => {
    lines.push(rule(title));
    lines.push(row(`Mean ${name} (ms):`, n(`mean_${key}_ms`).toFixed(2)));
    lines.push(row(`Median ${name} (ms):`, n(`median_${key}_ms`).toFixed(2)));
    lines.push(row(`P90 ${name} (ms):`, n(`p90_${key}_ms`).toFixed(2)));
    lines.push(row(`P99 ${name} (ms):`, n(`p99_${key}_ms`).toFixed(2)));
  };
  block('ttft', 'TTFT', 'Time to First Token');
  block('tpot', 'TPOT', 'Time per Output Token (excl. 1st token)');
  block('itl', 'ITL', 'Inter-token Latency');
  block('e2el', 'E2EL', 'End-to-end Latency');
  lines.push('='.repeat(W));
  const errors = (r.errors ?? []).filter((e) => e);
  if (errors.length) {
    // distinct messages with counts: a run with 500 identical failures stays one line
    const counts = new Map<string, number>();
    for (const e of errors) counts.set(e.split('\n')[0]!, (counts.get(e.split('\n')[0]!) ?? 0) + 1);
    lines.push(`Failed requests (${errors.length}):`);
    for (const [e, c] of [...counts].sort((a, b) => b[1] - a[1]).slice(0, 10)) lines.push(`  ${c} × ${e}`);
    if (counts.size > 10) lines.push(`  … and ${counts.size - 10} other errors`);
  }
  return lines.join('\n');
}

/** One line per point of a sweep. */
export function formatSweep(results: BenchResult[]): string {
  const cols: [string, (r: BenchResult) => string][] = [
    ['qps', (r) => String(r.request_rate)],
    ['conc', (r) => String(r.max_concurrency ?? '-')],
    ['ok', (r) => String(r.completed)],
    ['failed', (r) => String(r.failed)],
    ['req/s', (r) => r.request_throughput.toFixed(2)],
    ['out tok/s', (r) => r.output_throughput.toFixed(1)],
    ['TTFT mean', (r) => r.mean_ttft_ms.toFixed(1)],
    ['TTFT p99', (r) => r.p99_ttft_ms.toFixed(1)],
    ['TPOT mean', (r) => r.mean_tpot_ms.toFixed(2)],
    ['ITL mean', (r) => r.mean_itl_ms.toFixed(2)],
    ['ITL p99', (r) => r.p99_itl_ms.toFixed(2)],
    ['E2EL mean', (r) => r.mean_e2el_ms.toFixed(1)],
  ];
  const cells = results.map((r) => cols.map(([, f]) => f(r)));
  const widths = cols.map(([h], i) => Math.max(h.length, ...cells.map((c) => c[i]!.length)));
  const fmt = (c: string[]) => c.map((x, i) => x.padStart(widths[i]!)).join('  ');
  return [fmt(cols.map(([h]) => h)) + '   (latencies in ms)', ...cells.map(fmt)].join('\n');
}
