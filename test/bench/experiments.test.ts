// `tandem experiment`: the plot function renders real SVG/PNG, the scheduler configs it builds pass the
// gateway's own validation, and one experiment runs end to end (--quick --mode sim) into a temp dir.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { renderCharts } from '../../src/bench/plot.ts';
import { startGateway } from '../../src/gateway/index.ts';
import { schedulerConfig } from '../../src/bench/experiments/cluster.ts';
import { parseEngineMetrics } from '../../src/bench/experiments/common.ts';
import { main } from '../../src/bench/experiments/index.ts';

const repo = join(import.meta.dirname, '..', '..');
const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

test('renderCharts: a log-axis chart with solid and dashed series gives valid SVG and a PNG', async () => {
  const { svg, png } = await renderCharts(
    [
      {
        title: 'ITL p99',
        x: { title: 'QPS' },
        y: { title: 'ms', log: true },
        series: [
          { name: 'coupled', points: [{ x: 1, y: 10 }, { x: 2, y: 0 }, { x: 4, y: 120 }] }, // 0 cannot be drawn on a log axis: dropped
          { name: 'disaggregated', dashed: true, points: [{ x: 1, y: 9 }, { x: 2, y: 10 }, { x: 4, y: NaN }] },
        ],
      },
      { title: 'second', x: { title: 't' }, y: { title: 'n' }, series: [{ name: 'a', points: [{ x: 0, y: 1 }] }] },
    ],
    { columns: 2 },
  );
  assert.match(svg, /^<svg[^>]*xmlns="http:\/\/www\.w3\.org\/2000\/svg"/);
  assert.ok(svg.trimEnd().endsWith('</svg>'));
  for (const text of ['ITL p99', 'coupled', 'disaggregated', 'QPS', 'second']) assert.ok(svg.includes(text), `SVG shows ${text}`);
  assert.match(svg, /stroke-dasharray="6,4"/, 'the dashed series is dashed');
  assert.deepEqual(png.subarray(0, 8), PNG_SIGNATURE);
  assert.equal(png.readUInt32BE(12), 0x49484452, 'IHDR chunk first');
  assert.ok(png.readUInt32BE(16) > 400 && png.readUInt32BE(20) > 200, 'a figure-sized image');
  await assert.rejects(renderCharts([]), /no chart/);
  const bars = await renderCharts({ kind: 'bar', title: 'hit rate', x: { title: '' }, y: { title: '%' }, series: [{ name: 'round-robin', points: [{ x: 0, y: 37 }] }, { name: 'prefix', points: [{ x: 0, y: 90 }] }] });
  assert.ok(bars.svg.includes('round-robin') && bars.svg.includes('prefix'), 'bars are labelled by series');
  assert.deepEqual(bars.png.subarray(0, 8), PNG_SIGNATURE);
});

test('schedulerConfig: every configuration the experiments use is accepted by the gateway', async () => {
  const configs = [
    schedulerConfig({ decider: 'always-disagg-pd-decider' }),
    schedulerConfig({ decider: 'never-disagg-pd-decider', scorers: [{ type: 'round-robin', weight: 1 }] }),
    schedulerConfig({ decider: { type: 'prefix-based-pd-decider', nonCachedTokens: 16 }, prefix: 'precise' }),
    schedulerConfig({ decider: { type: 'cost-model-pd-decider' }, scorers: [{ type: 'queue-scorer', weight: 1 }] }),
  ];
  for (const configText of configs) {
    const gw = await startGateway({ port: 0, host: '127.0.0.1', configText, configSource: 'experiment config' });
    try {
      assert.deepEqual([...gw.scheduler.config.profiles.keys()].sort(), ['decode', 'prefill']);
      assert.equal(gw.scheduler.config.handler.type, 'disagg-profile-handler');
    } finally {
      await gw.close();
    }
  }
  // and a typo is not silently accepted: the builder's output is what the gateway validates
  await assert.rejects(startGateway({ port: 0, host: '127.0.0.1', configText: configs[0]!.replace('queue-scorer', 'queue-scorr') }));
});

test('parseEngineMetrics sums labelled series and skips comments', () => {
  const m = parseEngineMetrics(
    '# HELP vllm:num_requests_running x\n# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running{model_name="a"} 3\nvllm:num_requests_running{model_name="b"} 2\nvllm:kv_cache_usage_perc 0.25\nbad line\n',
  );
  assert.equal(m['vllm:num_requests_running'], 5);
  assert.equal(m['vllm:kv_cache_usage_perc'], 0.25);
});

test('tandem experiment: bad input is refused with a precise message', async () => {
  await assert.rejects(main([]), /which experiment/);
  await assert.rejects(main(['nope']), /unknown experiment 'nope'.*itl-vs-qps/);
  await assert.rejects(main(['burst-256', '--mode', 'gpu']), /--mode must be real, sim or both/);
});

test('tandem experiment burst-256 --quick --mode sim writes results.json, figures and a README', { timeout: 90_000 }, () => {
  const out = mkdtempSync(join(tmpdir(), 'tandem-exp-test-'));
  try {
    // through the CLI module in a child process: real `tandem up`, real simulated engines and gateway
    const r = spawnSync(
      process.execPath,
      ['--import', 'tsx', '-e', `const m = await import(${JSON.stringify(join(repo, 'src/bench/experiments/index.ts'))}); process.exitCode = await m.main(process.argv.slice(1));`, 'burst-256', '--quick', '--mode', 'sim', '--out', out, '--quiet'],
      { cwd: repo, encoding: 'utf8', timeout: 85_000 },
    );
    assert.equal(r.status, 0, `exit ${r.status}\n${r.stdout}\n${r.stderr}`);
    const json = JSON.parse(readFileSync(join(out, 'results.json'), 'utf8')) as {
      experiment: string;
      modes: { sim: { machine: { nproc: number }; command: string; results: { load: { completed: number; failed: number }; engines: { name: string; role: string }[]; samples: Record<string, { t: number; running: number }[]> } } };
    };
    assert.equal(json.experiment, 'burst-256');
    assert.ok(json.modes.sim.machine.nproc >= 1);
    assert.match(json.modes.sim.command, /--quick/);
    const sim = json.modes.sim.results;
    assert.equal(sim.load.failed, 0);
    assert.ok(sim.load.completed > 0);
    assert.deepEqual(sim.engines.map((e) => e.role).sort(), ['decode', 'decode', 'prefill', 'prefill']);
    for (const e of sim.engines) assert.ok((sim.samples[e.name]?.length ?? 0) > 5, `${e.name} was sampled`);
    // the decode engines ran the streams: at least one sample saw a running request
    assert.ok(sim.engines.filter((e) => e.role === 'decode').some((e) => sim.samples[e.name]!.some((s) => s.running > 0)));
    const png = readFileSync(join(out, 'burst-256-sim.png'));
    assert.deepEqual(png.subarray(0, 8), PNG_SIGNATURE);
    assert.match(readFileSync(join(out, 'burst-256-sim.svg'), 'utf8'), /^<svg/);
    const readme = readFileSync(join(out, 'README.md'), 'utf8');
    assert.match(readme, /tandem experiment burst-256 --mode sim --quick/);
    assert.match(readme, /vCPUs/);
    assert.match(readme, /!\[[^\]]+\]\(burst-256-sim\.png\)/);
    assert.ok(!existsSync(join(out, 'burst-256-real.png')), 'real mode did not run');
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});
