// runLoad: one measured point (one QPS or one concurrency) against any OpenAI-compatible server,
// scheduled as `vllm bench serve` schedules it: requests arrive at the drawn times and, with a
// concurrency cap, wait client-side for a slot (open loop); with no rate and a cap, each finished
// request frees a slot for the next (closed loop).
import { arrivalOffsets, interArrivals } from './arrivals.ts';
import { getJson, streamRequest } from './client.ts';
import { DEFAULT_VOCAB_SIZE, makeDataset, type DatasetSpec, type SampleRequest } from './datasets.ts';
import { computeMetrics, type RequestRecord, type Slo } from './metrics.ts';
import { stderrProgress, type Progress } from './progress.ts';

export interface LoadOptions {
  /** base URL of any OpenAI-compatible server (gateway, engine, vLLM); a trailing /v1 is accepted */
  url: string;
  /** default: the first id of GET /v1/models */
  model?: string;
  /** default completions */
  endpoint?: 'completions' | 'chat';
  dataset: DatasetSpec;
  /** default 100 (for a JSONL dataset: its number of prompts); ignored when durationS is set */
  numPrompts?: number;
  /** send new requests for this long, then wait for those in flight */
  durationS?: number;
  /** requests per second; Infinity (default) = all at once */
  qps?: number;
  arrival?: 'poisson' | 'constant';
  /** gamma shape as vLLM's --burstiness (1 = Poisson) */
  burstiness?: number;
  /** max requests in flight (vLLM's --max-concurrency); may combine with qps */
  concurrency?: number;
  seed?: number;
  /** warm-up requests, sent (at the concurrency cap) before the measured run and excluded from it */
  warmup?: number;
  slo?: Slo;
  /** default true: vLLM's bench sends ignore_eos so output lengths are exact */
  ignoreEos?: boolean;
  saveDetailed?: boolean;
  /** true: a progress bar (terminal) or periodic lines on stderr; or a callback (total is 0 in a duration-bounded run) */
  progress?: boolean | ((done: number, total: number) => void);
  /** stops sending; requests in flight end as failed with error 'aborted'; the result is still returned */
  signal?: AbortSignal;
  /** token ids of random / shared-prefix prompts are drawn in [100, vocabSize); default 256 */
  vocabSize?: number;
  /** extra fields merged into every request body (e.g. {temperature: 0}) */
  extraBody?: Record<string, unknown>;
}

/**
 * vLLM `bench serve` result fields (same names and units): completed, failed, total_input_tokens,
 * total_output_tokens, duration, request_throughput, request_goodput, output_throughput,
 * total_token_throughput, mean/median/std/p90/p99 _ttft_ms, _tpot_ms, _itl_ms, _e2el_ms,
 * max_output_tokens_per_s, max_concurrent_requests, errors; the run's settings (model_id,
 * endpoint_type, dataset, num_prompts, request_rate, burstiness, max_concurrency, …); and with
 * saveDetailed the per-request arrays ttfts (s), itls (s[] per request), latencies, input_lens,
 * output_lens, errors, start_times (s from the run's start), queue_times and routes.
 */
export interface BenchResult {
  [field: string]: unknown;
  completed: number;
  failed: number;
  duration: number;
  total_input_tokens: number;
  total_output_tokens: number;
  request_throughput: number;
  request_goodput: number | null;
  output_throughput: number;
  total_token_throughput: number;
  mean_ttft_ms: number;
  median_ttft_ms: number;
  p90_ttft_ms: number;
  p99_ttft_ms: number;
  mean_tpot_ms: number;
  median_tpot_ms: number;
  p99_tpot_ms: number;
  mean_itl_ms: number;
  median_itl_ms: number;
  p90_itl_ms: number;
  p99_itl_ms: number;
  mean_e2el_ms: number;
  median_e2el_ms: number;
  p99_e2el_ms: number;
  max_concurrency: number | null;
  errors: string[];
}

export class LoadError extends Error {
  override name = 'LoadError';
  readonly userFacing = true;
}

/** The server's base URL, without a trailing slash or /v1. */
export function baseUrl(url: string): URL {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new LoadError(`--url: not a URL: '${url}' (e.g. http://localhost:8000)`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new LoadError(`--url: only http(s) URLs are supported, got '${url}'`);
  u.pathname = u.pathname.replace(/\/+$/, '').replace(/\/v1$/, '');
  u.search = '';
  u.hash = '';
  return u;
}

function check(ok: boolean, message: string): void {
  if (!ok) throw new LoadError(message);
}

function validate(o: LoadOptions): void {
  const posInt = (v: number | undefined, name: string, min = 1) =>
    check(v === undefined || (Number.isInteger(v) && v >= min), `${name} must be an integer ≥ ${min}, got ${v}`);
  posInt(o.numPrompts, 'numPrompts');
  posInt(o.concurrency, 'concurrency');
  posInt(o.warmup, 'warmup', 0);
  check(o.qps === undefined || o.qps > 0, `qps must be > 0 (Infinity = all at once), got ${o.qps}`);
  check(o.burstiness === undefined || o.burstiness > 0, `burstiness must be > 0, got ${o.burstiness}`);
  check(o.durationS === undefined || (Number.isFinite(o.durationS) && o.durationS > 0), `durationS must be > 0, got ${o.durationS}`);
  check(o.arrival === undefined || o.arrival === 'poisson' || o.arrival === 'constant', `arrival must be poisson or constant, got ${o.arrival}`);
  check(o.endpoint === undefined || o.endpoint === 'completions' || o.endpoint === 'chat', `endpoint must be completions or chat, got ${o.endpoint}`);
  if (o.durationS !== undefined) {
    check((o.qps ?? Infinity) !== Infinity || o.concurrency !== undefined, 'a duration-bounded run needs a finite qps or a concurrency cap (else it would send without bound)');
  }
  for (const [k, v] of Object.entries(o.slo ?? {})) check(v === undefined || (Number.isFinite(v) && v >= 0), `slo.${k} must be a number ≥ 0 (ms), got ${v}`);
}

/** The first model id of GET /v1/models. */
export async function firstModel(base: URL, signal?: AbortSignal): Promise<string> {
  let j: unknown;
  try {
    j = await getJson(new URL(join(base, '/v1/models')), signal);
  } catch (err) {
    throw new LoadError(`cannot list the server's models (pass --model to skip): ${(err as Error).message}`);
  }
  const id = (j as { data?: { id?: unknown }[] })?.data?.[0]?.id;
  if (typeof id !== 'string') throw new LoadError(`GET ${base.origin}/v1/models listed no model (pass --model)`);
  return id;
}

function join(base: URL, path: string): string {
  return base.href.replace(/\/$/, '') + path;
}

/** The request body vLLM's bench sends (stream with usage, ignore_eos, exact max tokens). */
function requestBody(s: SampleRequest, model: string, endpoint: 'completions' | 'chat', o: LoadOptions): Record<string, unknown> {
  const common: Record<string, unknown> = { model, stream: true, stream_options: { include_usage: true } };
  if (o.ignoreEos ?? true) common.ignore_eos = true;
  const b: Record<string, unknown> =
    endpoint === 'chat'
      ? { ...common, messages: [{ role: 'user', content: s.prompt }], max_completion_tokens: s.outputLen }
      : { ...common, prompt: s.prompt, max_tokens: s.outputLen };
  return { ...b, ...o.extraBody };
}

class Slots {
  private free: number;
  private readonly waiters: (() => void)[] = [];
  constructor(n: number) {
    this.free = n;
  }
  acquire(): Promise<void> {
    if (this.free > 0) {
      this.free--;
      return Promise.resolve();
    }
    return new Promise((r) => this.waiters.push(r));
  }
  release(): void {
    const w = this.waiters.shift();
    if (w) w();
    else this.free++;
  }
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  if (ms <= 0 || signal?.aborted) return Promise.resolve();
  return new Promise((resolve) => {
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}

function abortedRecord(startTime: number, promptLen: number): RequestRecord {
  return { success: false, error: 'aborted', startTime, queueTime: 0, ttft: 0, itl: [], latency: 0, promptLen, outputTokens: 0, route: null };
}

/** The SLOs under vLLM's goodput names (ttft, tpot, e2el; tandem adds itl); null when none. */
function sloFields(slo: Slo | undefined): Record<string, number> | null {
  if (!slo) return null;
  const out: Record<string, number> = {};
  if (slo.ttftMs !== undefined) out.ttft = slo.ttftMs;
  if (slo.tpotMs !== undefined) out.tpot = slo.tpotMs;
  if (slo.itlMs !== undefined) out.itl = slo.itlMs;
  if (slo.e2elMs !== undefined) out.e2el = slo.e2elMs;
  return Object.keys(out).length ? out : null;
}

export async function runLoad(opts: LoadOptions): Promise<BenchResult> {
  validate(opts);
  const base = baseUrl(opts.url);
  const endpoint = opts.endpoint ?? 'completions';
  const seed = opts.seed ?? 0;
  const qps = opts.qps ?? Infinity;
  const signal = opts.signal;
  const ctx = { endpoint, seed, vocabSize: opts.vocabSize ?? DEFAULT_VOCAB_SIZE };
  const dataset = makeDataset(opts.dataset, ctx);
  const model = opts.model ?? (await firstModel(base, signal));
  const url = new URL(join(base, endpoint === 'chat' ? '/v1/chat/completions' : '/v1/completions'));
  const numPrompts = opts.durationS !== undefined ? undefined : (opts.numPrompts ?? dataset.size ?? 100);

  // Warm-up prompts come from another seed: they warm connections and code paths, not the prefix
  // caches the measured prompts will hit.
  const warmup = opts.warmup ?? 0;
  if (warmup > 0) {
    const wd = makeDataset(opts.dataset, { ...ctx, seed: seed + 0x5eed });
    const slots = new Slots(opts.concurrency ?? warmup);
    const t = performance.now();
    await Promise.all(
      Array.from({ length: warmup }, async (_, i) => {
        await slots.acquire();
        try {
          const s = wd.sample(i);
          await streamRequest({ url, body: requestBody(s, model, endpoint, opts), promptLen: s.promptLen, signal }, t);
        } finally {
          slots.release();
        }
      }),
    );
  }

  const records: RequestRecord[] = [];
  let done = 0;
  let failed = 0;
  const total = numPrompts ?? 0;
  let bar: Progress | undefined;
  if (opts.progress === true) {
    const what = `${qps === Infinity ? 'qps inf' : `qps ${qps}`}${opts.concurrency ? `, concurrency ${opts.concurrency}` : ''}`;
    bar = stderrProgress({ label: what, total, durationS: opts.durationS });
  }
  const report = () => {
    bar?.update(done, failed);
    if (typeof opts.progress === 'function') opts.progress(done, total);
  };

  const slots = opts.concurrency ? new Slots(opts.concurrency) : undefined;
  const runStart = performance.now();
  const elapsed = () => (performance.now() - runStart) / 1000;
  const inflight: Promise<void>[] = [];

  const send = async (i: number, s: SampleRequest, heldSlot: boolean) => {
    const arrived = performance.now();
    if (slots && !heldSlot) await slots.acquire();
    let rec: RequestRecord;
    try {
      if (signal?.aborted) rec = abortedRecord((performance.now() - runStart) / 1000, s.promptLen);
      else rec = await streamRequest({ url, body: requestBody(s, model, endpoint, opts), promptLen: s.promptLen, signal }, runStart);
    } finally {
      slots?.release();
    }
    rec.queueTime = Math.max(0, rec.startTime - (arrived - runStart) / 1000);
    records[i] = rec;
    done++;
    if (!rec.success) failed++;
    report();
  };

  const dataFor = (i: number) => dataset.sample(i);
  if (qps === Infinity && slots && opts.durationS !== undefined) {
    // closed loop bounded by time: a slot frees, the next request goes
    for (let i = 0; !signal?.aborted; i++) {
      await slots.acquire();
      if (elapsed() >= opts.durationS || signal?.aborted) {
        slots.release();
        break;
      }
      inflight.push(send(i, dataFor(i), true));
    }
  } else if (numPrompts !== undefined) {
    const offsets = arrivalOffsets(numPrompts, { qps, arrival: opts.arrival, burstiness: opts.burstiness, seed });
    for (let i = 0; i < numPrompts && !signal?.aborted; i++) {
      await sleep(runStart + offsets[i]! * 1000 - performance.now(), signal);
      if (signal?.aborted) break;
      inflight.push(send(i, dataFor(i), false));
    }
  } else {
    // open loop bounded by time
    const gap = interArrivals({ qps, arrival: opts.arrival, burstiness: opts.burstiness, seed });
    let at = 0;
    for (let i = 0; !signal?.aborted; i++) {
      at += gap();
      if (at >= opts.durationS!) break;
      await sleep(runStart + at * 1000 - performance.now(), signal);
      if (signal?.aborted) break;
      inflight.push(send(i, dataFor(i), false));
    }
  }
  await Promise.all(inflight);
  const durationS = elapsed();
  bar?.end();

  const metrics = computeMetrics(records, { durationS, slo: opts.slo, detailed: opts.saveDetailed });
  return {
    date: new Date().toISOString(),
    endpoint_type: endpoint === 'chat' ? 'openai-chat' : 'openai',
    base_url: base.href.replace(/\/$/, ''),
    model_id: model,
    dataset: dataset.name,
    num_prompts: records.length,
    request_rate: qps === Infinity ? 'inf' : qps,
    arrival: opts.arrival ?? 'poisson',
    burstiness: opts.arrival === 'constant' ? null : (opts.burstiness ?? 1),
    max_concurrency: opts.concurrency ?? null,
    duration_limit_s: opts.durationS ?? null,
    seed,
    warmup,
    goodput_slo_ms: sloFields(opts.slo),
    ...metrics,
  } as unknown as BenchResult;
}
