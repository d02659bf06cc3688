// The load generator: `vllm bench serve`'s workloads, schedule and metrics against any
// OpenAI-compatible server. See docs/bench-loadgen.md.
export { runLoad, firstModel, LoadError, type LoadOptions, type BenchResult } from './run.ts';
export { makeDataset, DatasetError, type DatasetSpec, type Dataset, type SampleRequest } from './datasets.ts';
export { arrivalOffsets, interArrivals, Rng, type ArrivalSpec } from './arrivals.ts';
export { computeMetrics, percentile, mean, std, tpotOf, meetsSlo, type RequestRecord, type RouteInfo, type Slo } from './metrics.ts';
export { streamRequest } from './client.ts';
export { formatSummary, formatSweep } from './summary.ts';
export { parseSlo, main } from './cli.ts';
