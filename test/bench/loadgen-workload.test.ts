// Arrivals (constant, Poisson, gamma burstiness) and datasets (exact lengths, shared prefixes, JSONL
// validation) of the load generator.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { arrivalOffsets, interArrivals, makeDataset, mean, std, DatasetError, type DatasetSpec } from '../../src/bench/loadgen/index.ts';

const ctx = { endpoint: 'completions' as const, seed: 7, vocabSize: 512 };

test('constant arrivals are evenly spaced at 1/qps (the first waits one gap, as in vLLM)', () => {
  const t = arrivalOffsets(5, { qps: 10, arrival: 'constant' });
  t.forEach((x, i) => assert.ok(Math.abs(x - (i + 1) / 10) < 1e-12, `${x}`));
  assert.deepEqual(arrivalOffsets(3, { qps: Infinity }), [0, 0, 0]);
});

test('Poisson arrivals: mean gap 1/qps, coefficient of variation 1, reproducible with a seed', () => {
  const draw = (seed: number, b = 1) => {
    const g = interArrivals({ qps: 20, burstiness: b, seed });
    return Array.from({ length: 20000 }, g);
  };
  const xs = draw(1);
  assert.deepEqual(xs.slice(0, 50), draw(1).slice(0, 50), 'same seed, same arrivals');
  assert.notDeepEqual(xs.slice(0, 50), draw(2).slice(0, 50));
  assert.ok(Math.abs(mean(xs) / 0.05 - 1) < 0.03, `mean ${mean(xs)}`);
  assert.ok(Math.abs(std(xs) / mean(xs) - 1) < 0.05, `cv ${std(xs) / mean(xs)}`);
  // fixed-count schedules are rescaled so the last arrival is exactly n / qps
  const t = arrivalOffsets(200, { qps: 20, seed: 3 });
  assert.ok(Math.abs(t[199]! - 10) < 1e-9);
  for (let i = 1; i < t.length; i++) assert.ok(t[i]! >= t[i - 1]!);
});

test('gamma burstiness: same mean rate, CV = 1/√burstiness', () => {
  for (const b of [0.25, 4]) {
    const g = interArrivals({ qps: 10, burstiness: b, seed: 11 });
    const xs = Array.from({ length: 40000 }, g);
    assert.ok(Math.abs(mean(xs) / 0.1 - 1) < 0.04, `b=${b} mean ${mean(xs)}`);
    const cv = std(xs) / mean(xs);
    assert.ok(Math.abs(cv * Math.sqrt(b) - 1) < 0.06, `b=${b} cv ${cv}`);
    assert.ok(xs.every((x) => x >= 0 && Number.isFinite(x)));
  }
});

test('random dataset: exact lengths, ids in [100, vocab), range ratio, deterministic', () => {
  const d = makeDataset({ kind: 'random', inputLen: 50, outputLen: 9 }, ctx);
  for (let i = 0; i < 20; i++) {
    const s = d.sample(i);
    assert.ok(Array.isArray(s.prompt));
    assert.equal(s.prompt.length, 50);
    assert.equal(s.promptLen, 50);
    assert.equal(s.outputLen, 9);
    assert.ok((s.prompt as number[]).every((t) => Number.isInteger(t) && t >= 100 && t < 512));
  }
  assert.deepEqual(d.sample(3), makeDataset({ kind: 'random', inputLen: 50, outputLen: 9 }, ctx).sample(3));
  assert.notDeepEqual(d.sample(3).prompt, makeDataset({ kind: 'random', inputLen: 50, outputLen: 9 }, { ...ctx, seed: 8 }).sample(3).prompt);
  const r = makeDataset({ kind: 'random', inputLen: 100, outputLen: 10, rangeRatio: 0.5 }, ctx);
  const ins = Array.from({ length: 300 }, (_, i) => r.sample(i));
  assert.ok(ins.every((s) => s.promptLen >= 50 && s.promptLen <= 150 && s.outputLen >= 5 && s.outputLen <= 15));
  assert.ok(new Set(ins.map((s) => s.promptLen)).size > 20, 'lengths vary');
  const chat = makeDataset({ kind: 'random', inputLen: 12, outputLen: 4 }, { ...ctx, endpoint: 'chat' }).sample(0);
  assert.equal(typeof chat.prompt, 'string');
  assert.equal((chat.prompt as string).split(' ').length, 12);
});

test('shared-prefix dataset: each group shares its prefix exactly, suffixes are fresh', () => {
  const d = makeDataset({ kind: 'shared-prefix', groups: 3, prefixLen: 40, suffixLen: 8, outputLen: 5 }, ctx);
  const byPrefix = new Map<string, number[][]>();
  for (let i = 0; i < 60; i++) {
    const s = d.sample(i);
    const p = s.prompt as number[];
    assert.equal(p.length, 48);
    assert.equal(s.promptLen, 48);
    const key = p.slice(0, 40).join(',');
    byPrefix.set(key, [...(byPrefix.get(key) ?? []), p]);
  }
  assert.equal(byPrefix.size, 3, 'exactly G distinct prefixes');
  for (const group of byPrefix.values()) {
    assert.ok(group.length >= 5, 'every group is used');
    assert.equal(new Set(group.map((p) => p.slice(40).join(','))).size, group.length, 'suffixes differ');
  }
});

test('JSONL dataset: prompts, output lengths, and precise errors', () => {
  const dir = mkdtempSync(join(tmpdir(), 'loadgen-'));
  try {
    const file = (name: string, text: string) => {
      const p = join(dir, name);
      writeFileSync(p, text);
      return p;
    };
    const good = file('good.jsonl', '{"prompt": "hello there", "output_len": 3}\n\n{"prompt": [101, 102, 103]}\n');
    const d = makeDataset({ kind: 'jsonl', path: good, outputLen: 7 }, ctx);
    assert.equal(d.size, 2);
    assert.deepEqual(d.sample(0), { prompt: 'hello there', promptLen: 0, outputLen: 7 });
    assert.deepEqual(d.sample(1), { prompt: [101, 102, 103], promptLen: 3, outputLen: 7 });
    assert.deepEqual(d.sample(2), d.sample(0), 'requests cycle through the file');
    assert.equal(makeDataset({ kind: 'jsonl', path: file('own.jsonl', '{"prompt":"a","output_len":3}\n') }, ctx).sample(0).outputLen, 3);

    const bad = (text: string, re: RegExp, spec: Partial<Extract<DatasetSpec, { kind: 'jsonl' }>> = { outputLen: 4 }, endpoint: 'completions' | 'chat' = 'completions') => {
      const path = file('bad.jsonl', text);
      assert.throws(
        () => makeDataset({ kind: 'jsonl', path, ...spec }, { ...ctx, endpoint }),
        (err: Error) => err instanceof DatasetError && re.test(err.message),
      );
    };
    bad('{"prompt":"a"}\n{"prompt":"b"}\n{"prompt": "c",}\n', /bad\.jsonl:3: not valid JSON/);
    bad('["a"]\n', /bad\.jsonl:1: expected a JSON object/);
    bad('{"text":"a"}\n', /bad\.jsonl:1: missing "prompt"/);
    bad('{"prompt": 5}\n', /bad\.jsonl:1: "prompt" must be a string or an array of token ids, got number/);
    bad('{"prompt": [1, -2]}\n', /bad\.jsonl:1: "prompt"\[1\] must be a token id/);
    bad('{"prompt": [1, 2.5]}\n', /"prompt"\[1\] must be a token id \(integer ≥ 0\), got 2\.5/);
    bad('{"prompt": ""}\n', /bad\.jsonl:1: "prompt" is empty/);
    bad('{"prompt": "a", "output_len": 0}\n', /bad\.jsonl:1: "output_len" must be an integer ≥ 1, got 0/);
    bad('{"prompt": "a"}\n', /bad\.jsonl:1: no "output_len" on the line and no output length given/, {});
    bad('\n\n', /no prompts/);
    bad('{"prompt": [1, 2]}\n', /bad\.jsonl:1: a token-id prompt needs the completions endpoint/, { outputLen: 4 }, 'chat');
    assert.throws(() => makeDataset({ kind: 'jsonl', path: join(dir, 'missing.jsonl'), outputLen: 1 }, ctx), /cannot read dataset .*missing\.jsonl/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('dataset parameters are validated', () => {
  assert.throws(() => makeDataset({ kind: 'random', inputLen: 0, outputLen: 4 }, ctx), /inputLen must be an integer ≥ 1, got 0/);
  assert.throws(() => makeDataset({ kind: 'random', inputLen: 4, outputLen: 4, rangeRatio: 1 }, ctx), /rangeRatio must be in \[0, 1\)/);
  assert.throws(() => makeDataset({ kind: 'shared-prefix', groups: 0, prefixLen: 4, suffixLen: 1, outputLen: 1 }, ctx), /groups must be/);
  assert.throws(() => makeDataset({ kind: 'random', inputLen: 4, outputLen: 4 }, { ...ctx, vocabSize: 50 }), /vocabSize must be an integer > 100/);
});
