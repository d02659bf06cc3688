// Per-request counters and histograms for the gateway's hot path. prom-client validates and hashes
// the label set on every observe()/inc(), even through a `.labels()` child; these keep one plain
// record per label value and only build prom-client's exposition shape when /metrics is scraped.
// They register into a prom-client Registry like any metric, so the text format is prom-client's own.
import type { Registry } from 'prom-client';

type LabelSet = Record<string, string>;

interface ValuePair {
  labels: Record<string, string | number>;
  sharedLabels?: LabelSet;
  value: number;
  metricName?: string;
}

interface MetricData {
  name: string;
  help: string;
  type: 'counter' | 'histogram';
  values: ValuePair[];
  aggregator: 'sum';
}

/** A histogram's series for one label value (or the only series of an unlabelled histogram). */
export class HistogramSeries {
  /** per finite bucket, non-cumulative */
  readonly counts: Float64Array;
  sum = 0;
  count = 0;

  constructor(private readonly bounds: readonly number[]) {
    this.counts = new Float64Array(bounds.length);
  }

  observe(v: number): void {
    if (!Number.isFinite(v)) return;
    this.sum += v;
    this.count++;
    const b = this.bounds;
    for (let i = 0; i < b.length; i++) {
      if (v <= b[i]!) {
        this.counts[i]!++;
        return;
      }
    }
  }
}

/** A histogram with at most one label. Series appear on first use, as prom-client's do. */
export class FastHistogram {
  readonly type = 'histogram';
  readonly aggregator = 'sum';
  private readonly series = new Map<string, HistogramSeries>();
  private readonly unlabelled: HistogramSeries | undefined;

  constructor(
    readonly name: string,
    readonly help: string,
    private readonly bounds: readonly number[],
    private readonly labelName: string | undefined,
    registry: Registry,
  ) {
    if (!labelName) this.unlabelled = new HistogramSeries(bounds);
    registry.registerMetric(this as never);
  }

  /** The series for a label value; keep it: observing through it costs a loop over the buckets. */
  labels(value: string): HistogramSeries {
    let s = this.series.get(value);
    if (!s) this.series.set(value, (s = new HistogramSeries(this.bounds)));
    return s;
  }

  observe(v: number): void {
    this.unlabelled!.observe(v);
  }

  reset(): void {
    this.series.clear();
  }

  getForPromString(): MetricData {
    const values: ValuePair[] = [];
    const entries: [LabelSet, HistogramSeries][] = this.unlabelled
      ? [[{}, this.unlabelled]]
      : [...this.series].map(([v, s]) => [{ [this.labelName!]: v }, s]);
    for (const [shared, s] of entries) {
      let acc = 0;
      for (let i = 0; i < this.bounds.length; i++) {
        acc += s.counts[i]!;
        values.push({ labels: { le: this.bounds[i]! }, sharedLabels: shared, value: acc, metricName: `${this.name}_bucket` });
      }
      values.push({ labels: { le: '+Inf' }, sharedLabels: shared, value: s.count, metricName: `${this.name}_bucket` });
      values.push({ labels: {}, sharedLabels: shared, value: s.sum, metricName: `${this.name}_sum` });
      values.push({ labels: {}, sharedLabels: shared, value: s.count, metricName: `${this.name}_count` });
    }
    return { name: this.name, help: this.help, type: this.type, values, aggregator: this.aggregator };
  }

  get(): MetricData {
    const d = this.getForPromString();
    d.values = d.values.map(({ sharedLabels, labels, ...rest }) => ({ ...rest, labels: { ...labels, ...sharedLabels } }));
    return d;
  }
}

/** A counter's series for one label value. */
export class CounterSeries {
  value = 0;

  inc(by = 1): void {
    this.value += by;
  }
}

/** A counter with one label. */
export class FastCounter {
  readonly type = 'counter';
  readonly aggregator = 'sum';
  private readonly series = new Map<string, CounterSeries>();

  constructor(
    public name: string,
    readonly help: string,
    private readonly labelName: string,
    registry: Registry,
  ) {
    registry.registerMetric(this as never);
  }

  labels(value: string): CounterSeries {
    let s = this.series.get(value);
    if (!s) this.series.set(value, (s = new CounterSeries()));
    return s;
  }

  reset(): void {
    for (const s of this.series.values()) s.value = 0;
  }

  get(): MetricData {
    const values: ValuePair[] = [];
    for (const [v, s] of this.series) values.push({ labels: { [this.labelName]: v }, value: s.value });
    return { name: this.name, help: this.help, type: this.type, values, aggregator: this.aggregator };
  }
}
