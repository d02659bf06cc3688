// vLLM's metric names and labels, so routers and dashboards built for vLLM read a tandem engine as-is.
import { Counter, Gauge, Histogram, Registry } from 'prom-client';

const TTFT_BUCKETS = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80, 160, 640, 2560];
const ITL_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80];
const LATENCY_BUCKETS = [0.01, 0.05, 0.1, 0.3, 0.5, 0.8, 1, 1.5, 2, 2.5, 5, 10, 15, 20, 30, 40, 50, 60, 120, 240, 480, 960, 1920, 7680];

export class EngineMetrics {
  readonly registry = new Registry();
  readonly running: Gauge;
  readonly waiting: Gauge;
  readonly kvUsage: Gauge;
  readonly cacheConfig: Gauge;
  readonly engineInfo: Gauge;
  readonly prefixQueries: Counter;
  readonly prefixHits: Counter;
  readonly promptTokens: Counter;
  readonly generationTokens: Counter;
  readonly preemptions: Counter;
  readonly success: Counter;
  readonly ttft: Histogram;
  readonly itl: Histogram;
  readonly e2e: Histogram;
  readonly queueTime: Histogram;
  readonly prefillTime: Histogram;
  readonly decodeTime: Histogram;
  readonly prefillRate: Gauge;

  constructor(readonly modelName: string) {
    const r = [this.registry];
    const l = ['model_name'];
    this.running = new Gauge({ name: 'vllm:num_requests_running', help: 'Number of requests in model execution batches.', labelNames: l, registers: r });
    this.waiting = new Gauge({ name: 'vllm:num_requests_waiting', help: 'Number of requests waiting to be processed.', labelNames: l, registers: r });
    this.kvUsage = new Gauge({ name: 'vllm:kv_cache_usage_perc', help: 'KV-cache usage. 1 means 100 percent usage.', labelNames: l, registers: r });
    this.cacheConfig = new Gauge({
      name: 'vllm:cache_config_info',
      help: 'Information of the KV cache configuration.',
      labelNames: ['model_name', 'block_size', 'num_gpu_blocks', 'cache_dtype', 'enable_prefix_caching'],
      registers: r,
    });
    this.engineInfo = new Gauge({
      name: 'tandem:engine_info',
      help: 'Engine identity for routers (value 1).',
      labelNames: ['model_name', 'role', 'engine_id', 'kv_port'],
      registers: r,
    });
    this.prefixQueries = new Counter({ name: 'vllm:prefix_cache_queries_total', help: 'Prefix cache queries, in tokens.', labelNames: l, registers: r });
    this.prefixHits = new Counter({ name: 'vllm:prefix_cache_hits_total', help: 'Prefix cache hits, in tokens.', labelNames: l, registers: r });
    this.promptTokens = new Counter({ name: 'vllm:prompt_tokens_total', help: 'Number of prefill tokens processed.', labelNames: l, registers: r });
    this.generationTokens = new Counter({ name: 'vllm:generation_tokens_total', help: 'Number of generation tokens processed.', labelNames: l, registers: r });
    this.preemptions = new Counter({ name: 'vllm:num_preemptions_total', help: 'Cumulative number of preemptions.', labelNames: l, registers: r });
    this.success = new Counter({
      name: 'vllm:request_success_total',
      help: 'Count of successfully processed requests.',
      labelNames: ['model_name', 'finished_reason'],
      registers: r,
    });
    const h = (name: string, help: string, buckets: number[]) => new Histogram({ name, help, buckets, labelNames: l, registers: r });
    this.ttft = h('vllm:time_to_first_token_seconds', 'Histogram of time to first token in seconds.', TTFT_BUCKETS);
    this.itl = h('vllm:inter_token_latency_seconds', 'Histogram of inter-token latency in seconds.', ITL_BUCKETS);
    this.e2e = h('vllm:e2e_request_latency_seconds', 'Histogram of e2e request latency in seconds.', LATENCY_BUCKETS);
    this.queueTime = h('vllm:request_queue_time_seconds', 'Histogram of time spent in WAITING phase for request.', LATENCY_BUCKETS);
    this.prefillTime = h('vllm:request_prefill_time_seconds', 'Histogram of time spent in PREFILL phase for request.', LATENCY_BUCKETS);
    this.decodeTime = h('vllm:request_decode_time_seconds', 'Histogram of time spent in DECODE phase for request.', LATENCY_BUCKETS);
    this.prefillRate = new Gauge({
      name: 'tandem:prefill_tokens_per_second',
      help: 'Measured prefill throughput of this engine (EWMA over recent steps).',
      labelNames: l,
      registers: r,
    });
  }

  labels(): { model_name: string } {
    return { model_name: this.modelName };
  }
}
