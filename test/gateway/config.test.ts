// EndpointPickerConfig loading: llm-d defaulting rules and errors that name the line.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadSchedulerConfig, ConfigError, DEFAULT_CONFIG_YAML, ObservedRates, PD_PROXY_CONFIG_YAML, type PluginContext } from '../../src/gateway/index.ts';

const ctx: PluginContext = { rates: new ObservedRates(), endpoints: { onEndpoint: () => () => {} }, tokenizer: { tokenize: async () => undefined, mayTokenize: () => false }, log: () => {} };
const load = (text: string) => loadSchedulerConfig(text, ctx, 'test.yaml');

function errorOf(text: string): string {
  try {
    load(text);
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected ConfigError, got ${(err as Error).name}: ${(err as Error).message}`);
    return err.message;
  }
  assert.fail('config was accepted');
}

test('the default config: decode and prefill profiles, disagg handler, producers wired', () => {
  const c = load(DEFAULT_CONFIG_YAML);
  assert.deepEqual([...c.profiles.keys()], ['decode', 'prefill']);
  assert.equal(c.handler.type, 'disagg-profile-handler');
  assert.deepEqual(c.producers.map((p) => p.type), ['token-producer', 'approx-prefix-cache-producer']);
  const decode = c.profiles.get('decode')!;
  assert.deepEqual(decode.scorers.map((s) => [s.scorer.type, s.weight]), [['queue-scorer', 2], ['kv-cache-utilization-scorer', 2], ['prefix-cache-scorer', 3], ['active-request-scorer', 1]]);
  assert.equal(decode.picker.type, 'max-score-picker');
  load(PD_PROXY_CONFIG_YAML);
});

test('defaulting: no profiles → one default profile; no picker → max-score-picker; one profile → single handler; producers added', () => {
  const c = load(`apiVersion: llm-d.ai/v1alpha1
kind: EndpointPickerConfig
plugins:
- type: decode-filter
- type: prefix-cache-scorer
- type: queue-scorer
`);
  const p = c.profiles.get('default')!;
  assert.deepEqual(p.filters.map((f) => f.type), ['decode-filter']);
  assert.deepEqual(p.scorers.map((s) => [s.scorer.type, s.weight]), [['prefix-cache-scorer', 1], ['queue-scorer', 1]]);
  assert.equal(p.picker.type, 'max-score-picker');
  assert.equal(c.handler.type, 'single-profile-handler');
  assert.deepEqual(c.producers.map((x) => x.type), ['token-producer', 'approx-prefix-cache-producer']);
  const scorer = p.scorers[0]!.scorer as unknown as { producerName: string };
  assert.equal(scorer.producerName, 'approx-prefix-cache-producer');
});

test("llm-d's deprecated precise-prefix-cache-scorer expands to producer + scorer", () => {
  const c = load(`plugins:
- type: precise-prefix-cache-scorer
- type: decode-filter
`);
  assert.ok(c.plugins.get('precise-prefix-cache-scorer-producer'));
  assert.deepEqual(c.producers.map((x) => x.type), ['token-producer', 'precise-prefix-cache-producer']);
});

test('config errors name the line', () => {
  assert.match(errorOf(`plugins:\n- type: queue-scorer\n- type: magic-scorer\n`), /^test\.yaml:3:\d+: unknown plugin type 'magic-scorer'/);
  assert.match(
    errorOf(`plugins:
- type: queue-scorer
schedulingProfiles:
- name: default
  plugins:
  - pluginRef: queue-scorer
    weight: -2
`),
    /^test\.yaml:7:\d+: bad weight -2/,
  );
  assert.match(
    errorOf(`plugins:
- type: queue-scorer
schedulingProfiles:
- name: default
  plugins:
  - pluginRef: queue-scorer
    weight: heavy
`),
    /^test\.yaml:7:\d+: bad weight "heavy"/,
  );
  assert.match(
    errorOf(`plugins:
- type: queue-scorer
schedulingProfiles:
- name: default
  plugins:
  - pluginRef: queue-scorer
  - pluginRef: kv-scorer
`),
    /^test\.yaml:7:\d+: unknown pluginRef 'kv-scorer'/,
  );
  assert.match(errorOf(`plugins:\n- type: token-load-scorer\n  parameters:\n    queueThresholdTokens: -1\n`), /^test\.yaml:4:\d+: token-load-scorer 'token-load-scorer': queueThresholdTokens must be >= 1/);
  assert.match(errorOf(`plugins:\n- type: queue-scorer\n  parameters: {typo: 1}\n`), /^test\.yaml:3:\d+: .*unknown parameter 'typo'/);
  assert.match(errorOf(`plugins:\n- type: queue-scorer\n- type: queue-scorer\n`), /^test\.yaml:3:\d+: duplicate plugin name 'queue-scorer'/);
  assert.match(errorOf(`plugins: [\n`), /^test\.yaml:\d+:\d+: /);
  assert.match(errorOf(`kind: Deployment\n`), /^test\.yaml:1:\d+: kind must be EndpointPickerConfig/);
  assert.match(errorOf(`plugns: []\n`), /^test\.yaml:1:\d+: unknown field 'plugns'/);
  assert.match(
    errorOf(`plugins:
- type: decode-filter
- type: disagg-profile-handler
  parameters:
    deciders: {prefill: nope}
schedulingProfiles:
- {name: decode, plugins: [{pluginRef: decode-filter}]}
`),
    /^test\.yaml:5:\d+: .*deciders\.prefill names unknown plugin 'nope'/,
  );
  assert.match(
    errorOf(`plugins:
- type: decode-filter
- type: prefill-filter
schedulingProfiles:
- {name: a, plugins: [{pluginRef: decode-filter}]}
- {name: b, plugins: [{pluginRef: prefill-filter}]}
`),
    /2 profiles need a profile handler/,
  );
  assert.match(
    errorOf(`plugins:
- type: max-score-picker
- type: random-picker
schedulingProfiles:
- name: default
  plugins: [{pluginRef: max-score-picker}, {pluginRef: random-picker}]
`),
    /^test\.yaml:6:\d+: profile 'default' has more than one picker/,
  );
  assert.match(errorOf(`plugins:\n- type: always-disagg-pd-decider\nschedulingProfiles:\n- name: d\n  plugins:\n  - pluginRef: always-disagg-pd-decider\n`), /^test\.yaml:6:\d+: 'always-disagg-pd-decider' is a decider/);
});

test('`tandem gateway --config` stops start-up with the line of the error', () => {
  const dir = mkdtempSync(join(tmpdir(), 'tandem-gw-cfg-'));
  const file = join(dir, 'bad.yaml');
  writeFileSync(file, `plugins:\n- type: queue-scorer\n- type: nope-scorer\n`);
  const r = spawnSync(process.execPath, ['bin/tandem.js', 'gateway', '--port', '0', '--config', file], { encoding: 'utf8', timeout: 30_000 });
  assert.equal(r.status, 2);
  assert.match(r.stderr, new RegExp(`tandem gateway: ${file.replace(/[.]/g, '\\.')}:3:\\d+: unknown plugin type 'nope-scorer'`));
  const good = join(dir, 'good.yaml');
  writeFileSync(good, DEFAULT_CONFIG_YAML);
  const ok = spawnSync(process.execPath, ['bin/tandem.js', 'gateway', '--port', '0', '--config', good, '--check-config'], { encoding: 'utf8', timeout: 30_000 });
  assert.equal(ok.status, 0, ok.stderr);
  assert.match(ok.stdout, /ok \(profiles: decode, prefill; handler disagg-profile-handler\)/);
});
