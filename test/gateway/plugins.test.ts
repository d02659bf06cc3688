// Each scheduler plugin on hand-made endpoint states.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  pluginRegistry,
  ObservedRates,
  ParamError,
  type AnyPlugin,
  type Endpoint,
  type Filter,
  type Picker,
  type Scorer,
  type Decider,
  type DataProducer,
  type ProfileHandler,
  type SchedulingRequest,
  type PluginContext,
} from '../../src/gateway/index.ts';
import { loadSchedulerConfig, Scheduler } from '../../src/gateway/index.ts';

function ctx(overrides: Partial<PluginContext> = {}): PluginContext {
  return {
    rates: new ObservedRates(),
    endpoints: { onEndpoint: () => () => {} },
    tokenizer: { tokenize: async () => undefined, mayTokenize: () => false },
    log: () => {},
    ...overrides,
  };
}

function make<T extends AnyPlugin>(type: string, params: Record<string, unknown> = {}, c = ctx(), name = type): T {
  return pluginRegistry.get(type)!.create(name, params, c) as T;
}

let n = 0;
function ep(p: Omit<Partial<Endpoint>, 'metrics'> & { metrics?: Partial<Endpoint['metrics']> } = {}): Endpoint {
  n++;
  return {
    id: p.id ?? `10.0.0.${n}:8000`,
    url: `http://${p.id ?? `10.0.0.${n}:8000`}`,
    role: p.role ?? 'both',
    labels: p.labels ?? {},
    models: ['m'],
    healthy: true,
    metricsFresh: p.metricsFresh ?? true,
    blockSize: p.blockSize ?? 16,
    inflight: p.inflight ?? 0,
    inflightTokens: p.inflightTokens ?? 0,
    kvBytesPerToken: p.kvBytesPerToken,
    metrics: { waiting: 0, running: 0, kvUsage: 0, scrapedAt: 1, ...p.metrics },
  };
}

function req(promptText = 'hello', over: Partial<SchedulingRequest> = {}): SchedulingRequest {
  return { requestId: 'r', model: 'm', kind: 'completions', body: { model: 'm', prompt: promptText }, promptText, prefix: new Map(), headers: new Map(), ...over };
}

test('decode-filter and prefill-filter keep endpoints by role', () => {
  const [p, d, b] = [ep({ role: 'prefill' }), ep({ role: 'decode' }), ep({ role: 'both' })];
  assert.deepEqual(make<Filter>('decode-filter').filter(req(), [p, d, b]), [d, b]);
  assert.deepEqual(make<Filter>('prefill-filter').filter(req(), [p, d, b]), [p, b]);
});

test('label-selector-filter: matchLabels and matchExpressions', () => {
  const a = ep({ labels: { zone: 'a', gpu: 'x' } });
  const b = ep({ labels: { zone: 'b' } });
  const c = ep({ labels: {} });
  assert.deepEqual(make<Filter>('label-selector-filter', { matchLabels: { zone: 'a' } }).filter(req(), [a, b, c]), [a]);
  const f = make<Filter>('label-selector-filter', { matchExpressions: [{ key: 'zone', operator: 'In', values: ['a', 'b'] }, { key: 'gpu', operator: 'DoesNotExist' }] });
  assert.deepEqual(f.filter(req(), [a, b, c]), [b]);
  assert.deepEqual(make<Filter>('label-selector-filter', { matchExpressions: [{ key: 'zone', operator: 'NotIn', values: ['a'] }] }).filter(req(), [a, b, c]), [b, c]);
  assert.throws(() => make('label-selector-filter', { matchExpressions: [{ key: 'zone', operator: 'Near' }] }), ParamError);
});

test('queue-scorer: min-max normalised, all equal → 1, stale → 0.5', () => {
  const s = make<Scorer>('queue-scorer');
  const eps = [ep({ metrics: { waiting: 0 } }), ep({ metrics: { waiting: 5 } }), ep({ metrics: { waiting: 10 } }), ep({ metricsFresh: false, metrics: { waiting: 0 } })];
  assert.deepEqual(Array.from(s.score(req(), eps)), [1, 0.5, 0, 0.5]);
  assert.deepEqual(Array.from(s.score(req(), [ep({ metrics: { waiting: 3 } }), ep({ metrics: { waiting: 3 } })])), [1, 1]);
});

test('kv-cache-utilization-scorer: 1 − usage', () => {
  const s = make<Scorer>('kv-cache-utilization-scorer');
  assert.deepEqual(Array.from(s.score(req(), [ep({ metrics: { kvUsage: 0.25 } }), ep({ metrics: { kvUsage: 1 } })])), [0.75, 0]);
});

test('active-request-scorer: idle → 1, busiest → 0, linear between', () => {
  const s = make<Scorer>('active-request-scorer');
  assert.deepEqual(Array.from(s.score(req(), [ep({ inflight: 0 }), ep({ inflight: 2 }), ep({ inflight: 4 })])), [1, 0.5, 0]);
  const t = make<Scorer>('active-request-scorer', { idleThreshold: 2, maxBusyScore: 0.5 });
  assert.deepEqual(Array.from(t.score(req(), [ep({ inflight: 2 }), ep({ inflight: 3 }), ep({ inflight: 4 })])), [1, 0.25, 0]);
});

test('token-load-scorer: 1 − in-flight tokens / threshold', () => {
  const s = make<Scorer>('token-load-scorer', { queueThresholdTokens: 1000 });
  assert.deepEqual(Array.from(s.score(req(), [ep({ inflightTokens: 0 }), ep({ inflightTokens: 250 }), ep({ inflightTokens: 5000 })])), [1, 0.75, 0]);
});

test('prefix-cache-scorer: block fraction, and the match-length term', () => {
  const a = ep();
  const b = ep();
  const r = req();
  r.prefix.set('px', new Map([[a.id, { matchBlocks: 3, totalBlocks: 4, blockSize: 16 }], [b.id, { matchBlocks: 0, totalBlocks: 4, blockSize: 16 }]]));
  assert.deepEqual(Array.from(make<Scorer>('prefix-cache-scorer', { prefixMatchInfoProducerName: 'px' }).score(r, [a, b])), [0.75, 0]);
  const w = make<Scorer>('prefix-cache-scorer', { prefixMatchInfoProducerName: 'px', matchLengthWeight: 1, matchLengthScaleTokens: 96 });
  assert.deepEqual(Array.from(w.score(r, [a, b])), [0.25, 0]); // (48/96)^2
});

test('round-robin rotates', () => {
  const s = make<Scorer>('round-robin');
  const eps = [ep(), ep(), ep()];
  const winners = [0, 1, 2, 3].map(() => Array.from(s.score(req(), eps)).indexOf(1));
  assert.deepEqual(winners, [0, 1, 2, 0]);
});

test('max-score-picker ranks by score and breaks ties at random', () => {
  const p = make<Picker>('max-score-picker');
  const [a, b, c] = [ep(), ep(), ep()];
  assert.deepEqual(p.pick([{ endpoint: a, score: 1 }, { endpoint: b, score: 3 }, { endpoint: c, score: 2 }]), [b, c, a]);
  const firsts = new Set<string>();
  for (let i = 0; i < 200; i++) firsts.add(p.pick([{ endpoint: a, score: 1 }, { endpoint: b, score: 1 }])[0]!.id);
  assert.equal(firsts.size, 2);
  assert.equal(make<Picker>('max-score-picker', { maxNumOfEndpoints: 1 }).pick([{ endpoint: a, score: 1 }, { endpoint: b, score: 2 }]).length, 1);
});

test('weighted-random-picker follows the scores; random-picker ignores them', () => {
  const [a, b] = [ep(), ep()];
  const w = make<Picker>('weighted-random-picker');
  let aFirst = 0;
  for (let i = 0; i < 400; i++) if (w.pick([{ endpoint: a, score: 3 }, { endpoint: b, score: 1 }])[0] === a) aFirst++;
  assert.ok(aFirst > 240 && aFirst < 360, `a first ${aFirst}/400, expected ≈300`);
  assert.deepEqual(w.pick([{ endpoint: a, score: 0 }, { endpoint: b, score: 1 }])[0], b);
  const r = make<Picker>('random-picker');
  const seen = new Set<string>();
  for (let i = 0; i < 100; i++) seen.add(r.pick([{ endpoint: a, score: 0 }, { endpoint: b, score: 100 }])[0]!.id);
  assert.equal(seen.size, 2);
});

test('prefix-based-pd-decider: uncached tokens against the threshold; 0 disables', () => {
  const d = ep();
  const dec = make<Decider & { producerName?: string }>('prefix-based-pd-decider', { nonCachedTokens: 16, prefixMatchInfoProducerName: 'px' });
  const none = { prefillPick: () => undefined };
  assert.equal(dec.decide(req('x', { tokens: { count: 5, exact: true } }), d, none).disaggregate, false);
  assert.equal(dec.decide(req('x', { tokens: { count: 59, exact: true } }), d, none).disaggregate, true);
  const cached = req('x', { tokens: { count: 59, exact: true } });
  cached.prefix.set('px', new Map([[d.id, { matchBlocks: 3, totalBlocks: 3, blockSize: 16 }]]));
  const r = dec.decide(cached, d, none);
  assert.equal(r.disaggregate, false);
  assert.match(r.reason, /59 - cached 48 = 11 < nonCachedTokens 16/);
  assert.equal(make<Decider>('prefix-based-pd-decider').decide(req('x', { tokens: { count: 9999, exact: true } }), d, none).disaggregate, false);
  const gated = make<Decider>('prefix-based-pd-decider', { nonCachedTokens: 1, promptTokens: 100 });
  assert.equal(gated.decide(req('x', { tokens: { count: 59, exact: true } }), d, none).disaggregate, false);
});

test('always / never deciders', () => {
  const none = { prefillPick: () => undefined };
  assert.equal(make<Decider>('always-disagg-pd-decider').decide(req(), ep(), none).disaggregate, true);
  assert.equal(make<Decider>('never').decide(req(), ep(), none).disaggregate, false);
  assert.equal(make<Decider>('never-disagg-pd-decider').decide(req(), ep(), none).disaggregate, false);
});

test('cost-model decider: splits long prompts when the prefill engine is faster, keeps short ones local, says why', () => {
  const c = ctx();
  const dec = make<Decider>('cost-model', { defaultPrefillTokensPerSecond: 1000, kvBytesPerToken: 1000, defaultTransferBytesPerSecond: 1e9, defaultLegOverheadMs: 2 }, c);
  const decode = ep({ role: 'decode', inflightTokens: 4000 }); // busy: 4 s of queued prefill
  const prefill = ep({ role: 'prefill' });
  const long = dec.decide(req('x', { tokens: { count: 2000, exact: true } }), decode, { prefillPick: () => prefill });
  assert.equal(long.disaggregate, true);
  assert.match(long.reason, /cost-model: split; split .*ms = queue 0\.00 \+ prefill 2000\.00/);
  // an idle decode engine wins for a tiny prompt: the leg overhead dominates
  const idle = ep({ role: 'decode' });
  const short = dec.decide(req('x', { tokens: { count: 1, exact: true } }), idle, { prefillPick: () => prefill });
  assert.equal(short.disaggregate, false);
  // measured rates replace the defaults: a slow prefill engine stops winning
  c.rates.observePrefill(prefill.id, 1000, 10); // 100 tok/s observed
  const slow = dec.decide(req('x', { tokens: { count: 2000, exact: true } }), decode, { prefillPick: () => prefill });
  assert.equal(slow.disaggregate, false);
  assert.match(slow.reason, /100tok\/s observed/);
  // engine gauge used before the default
  const gauge = ep({ role: 'prefill', metrics: { prefillTokensPerSecond: 50_000 } });
  assert.match(dec.decide(req('x', { tokens: { count: 2000, exact: true } }), decode, { prefillPick: () => gauge }).reason, /50000tok\/s engine/);
  assert.equal(dec.decide(req('x', { tokens: { count: 2000, exact: true } }), decode, { prefillPick: () => undefined }).disaggregate, false);
});

test('cost-model decider: a fixed cost per request, learned from short prompts, keeps tiny prompts local', () => {
  const c = ctx();
  const dec = make<Decider>('cost-model', { kvBytesPerToken: 131072, defaultTransferBytesPerSecond: 25e9, defaultLegOverheadMs: 2 }, c);
  const decode = ep({ role: 'decode', inflightTokens: 100, metrics: { prefillTokensPerSecond: 40_000 } });
  const prefill = ep({ role: 'prefill', metrics: { prefillTokensPerSecond: 40_000 } });
  const tiny = () => dec.decide(req('x', { tokens: { count: 8, exact: true } }), decode, { prefillPick: () => prefill });
  // nothing learned yet: the decode engine's queue makes the idle prefill engine look faster
  assert.equal(tiny().disaggregate, true);
  // a GPU step costs ~15 ms whatever the prompt: both engines have shown it on short prompts
  for (const id of [prefill.id, decode.id]) for (let i = 0; i < 3; i++) c.rates.observePrefill(id, 8, 0.015);
  const d = tiny();
  assert.equal(d.disaggregate, false, d.reason);
  assert.match(d.reason, /decode step 15\.00/);
  // long prompts still split when the decode engine is busy, and the rate is learned net of the fixed cost
  c.rates.observePrefill(prefill.id, 4096, 0.015 + 4096 / 20_000);
  assert.match(c.rates.prefillRate(prefill.id, undefined, 1).value.toFixed(0), /^20000$/);
  const busy = ep({ role: 'decode', inflightTokens: 8192, metrics: { prefillTokensPerSecond: 40_000 } });
  assert.equal(dec.decide(req('x', { tokens: { count: 4096, exact: true } }), busy, { prefillPick: () => prefill }).disaggregate, true);
});

test('token-producer: estimate, engine ids with a cache, and fallback', async () => {
  let calls = 0;
  const c = ctx({ tokenizer: { tokenize: async () => (calls++, [1, 2, 3]), mayTokenize: () => true } });
  const est = make<DataProducer>('token-producer', { backend: 'estimate' }, c);
  const r1 = req('12345678');
  await est.produce(r1, []);
  assert.deepEqual(r1.tokens, { count: 2, exact: false });
  const auto = make<DataProducer>('token-producer', {}, c);
  const r2 = req('same prompt');
  await auto.produce(r2, [ep()]);
  await auto.produce(req('same prompt'), [ep()]);
  assert.deepEqual(r2.tokens, { count: 3, ids: [1, 2, 3], exact: true });
  assert.equal(calls, 1);
  const none = make<DataProducer>('token-producer', {}, ctx());
  const r3 = req('abcdefgh');
  await none.produce(r3, [ep()]);
  assert.deepEqual(r3.tokens, { count: 2, exact: false });
});

test('approx-prefix-cache-producer learns from routing and matches the longest prefix', () => {
  const p = make<DataProducer>('approx-prefix-cache-producer', { blockSizeTokens: 4 }); // 16-character blocks
  const [a, b] = [ep(), ep()];
  const shared = 'S'.repeat(64);
  const r1 = req(`${shared}first question`);
  p.produce(r1, [a, b]);
  assert.equal(r1.prefix.get('approx-prefix-cache-producer')!.get(a.id)!.matchBlocks, 0);
  p.routed!(r1, { decision: 'decode-only', decode: [a], reason: '' });
  const r2 = req(`${shared}another one, longer`);
  p.produce(r2, [a, b]);
  const m = r2.prefix.get('approx-prefix-cache-producer')!;
  assert.equal(m.get(a.id)!.matchBlocks, 4);
  assert.equal(m.get(b.id)!.matchBlocks, 0);
  assert.equal(m.get(a.id)!.totalBlocks, Math.floor(r2.promptText.length / 16));
  // exact ids hash token blocks instead of text
  const r3 = req('ignored', { tokens: { count: 8, ids: [1, 2, 3, 4, 5, 6, 7, 8], exact: true } });
  p.produce(r3, [a]);
  p.routed!(r3, { decision: 'prefill-decode', decode: [a], prefill: [b], reason: '' });
  const r4 = req('ignored', { tokens: { count: 9, ids: [1, 2, 3, 4, 5, 6, 7, 9, 9], exact: true } });
  p.produce(r4, [a, b]);
  assert.equal(r4.prefix.get('approx-prefix-cache-producer')!.get(b.id)!.matchBlocks, 1);
});

test('disagg-profile-handler: decode-first, decider consulted for the decode pick', () => {
  const text = `plugins:
- {type: token-producer, parameters: {backend: estimate}}
- type: decode-filter
- type: prefill-filter
- type: queue-scorer
- {type: prefix-based-pd-decider, parameters: {nonCachedTokens: 10}}
- {type: disagg-profile-handler, parameters: {deciders: {prefill: prefix-based-pd-decider}}}
schedulingProfiles:
- {name: decode, plugins: [{pluginRef: decode-filter}, {pluginRef: queue-scorer}]}
- {name: prefill, plugins: [{pluginRef: prefill-filter}, {pluginRef: queue-scorer}]}
`;
  const s = new Scheduler(loadSchedulerConfig(text, ctx()));
  const P = ep({ role: 'prefill' });
  const D1 = ep({ role: 'decode', metrics: { waiting: 4 } });
  const D2 = ep({ role: 'decode', metrics: { waiting: 0 } });
  const short = s.pick(req('x', { tokens: { count: 5, exact: true } }), [P, D1, D2]);
  assert.equal(short.decision, 'decode-only');
  assert.equal(short.decode[0], D2);
  const long = s.pick(req('x', { tokens: { count: 59, exact: true } }), [P, D1, D2]);
  assert.equal(long.decision, 'prefill-decode');
  assert.equal(long.prefill![0], P);
  assert.equal(long.decode[0], D2);
  // no prefill endpoint: the decision degrades to decode-only with a reason
  const alone = s.pick(req('x', { tokens: { count: 59, exact: true } }), [D1, D2]);
  assert.equal(alone.decision, 'decode-only');
  assert.match(alone.reason, /no prefill endpoint/);
  // a `both` endpoint is never its own remote prefiller
  const B = ep({ role: 'both' });
  assert.equal(s.pick(req('x', { tokens: { count: 59, exact: true } }), [B]).decision, 'decode-only');
  // nothing that decodes
  assert.throws(() => s.pick(req(), [P]), /decode workers/);
  // several sequences (n, best_of) are never split: a P/D leg carries one
  for (const extra of [{ n: 2 }, { best_of: 3 }]) {
    const many = s.pick(req('x', { tokens: { count: 59, exact: true }, body: { model: 'm', prompt: 'x', ...extra } }), [P, D1, D2]);
    assert.equal(many.decision, 'decode-only');
    assert.match(many.reason, /sequences asked \(n\/best_of\): a P\/D leg carries one/);
  }
});

test('single-profile-handler runs its profile', () => {
  const h = make<ProfileHandler>('single-profile-handler');
  const a = ep();
  const r = h.schedule(req(), { profiles: new Set(['default']), run: () => ({ targets: [a] }) });
  assert.equal(r.decode[0], a);
  assert.throws(() => h.schedule(req(), { profiles: new Set(['default']), run: () => ({ targets: [] }) }), /no endpoint/);
});

test('scores are clamped to [0,1] and weighted', () => {
  const text = `plugins:
- {type: token-producer, parameters: {backend: estimate}}
- type: queue-scorer
- type: active-request-scorer
schedulingProfiles:
- name: default
  plugins:
  - {pluginRef: queue-scorer, weight: 1}
  - {pluginRef: active-request-scorer, weight: 3}
`;
  const s = new Scheduler(loadSchedulerConfig(text, ctx()));
  const queued = ep({ metrics: { waiting: 10 }, inflight: 0 });
  const busy = ep({ metrics: { waiting: 0 }, inflight: 5 });
  // queue says busy (1 vs 0), active says queued (1 vs 0): weight 3 wins
  assert.equal(s.pick(req(), [queued, busy]).decode[0], queued);
});
