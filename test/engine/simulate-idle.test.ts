// 16 simulated engines on one machine: a simulated GPU waits in Atomics.wait and idle engines
// run no timers, so a laptop can host a GPU-scale cluster.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { startServe, type Served } from '../../src/bench/serve-util.ts';

/** user + system CPU ticks of a process and its threads (the model worker is a thread) */
const cpuTicks = (pid: number) => {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return Number(f[11]) + Number(f[12]);
};

test('16 idle simulated engines use under 25% of one core together', { skip: process.platform !== 'linux' && 'needs /proc' }, async () => {
  const engines: Served[] = [];
  try {
    const started = await Promise.allSettled(Array.from({ length: 16 }, (_, i) => startServe(['--simulate', 'h200-llama8b', '--role', i < 8 ? 'prefill' : 'decode'])));
    for (const s of started) if (s.status === 'fulfilled') engines.push(s.value);
    assert.equal(engines.length, 16, 'all 16 engines started');
    // each answers, and is simulated
    for (const e of engines) {
      const m = (await (await fetch(`${e.url}/v1/models`)).json()) as { data: { tandem: { simulated?: string } }[] };
      assert.equal(m.data[0]!.tandem.simulated, 'h200-llama8b');
    }
    await new Promise((r) => setTimeout(r, 1000)); // start-up work settles
    const hz = 100; // USER_HZ on Linux
    const before = engines.map((e) => cpuTicks(e.child.pid!));
    const t0 = performance.now();
    await new Promise((r) => setTimeout(r, 5000));
    const seconds = (performance.now() - t0) / 1000;
    const used = engines.reduce((s, e, i) => s + cpuTicks(e.child.pid!) - before[i]!, 0) / hz;
    const share = used / seconds;
    assert.ok(share < 0.25, `16 idle engines used ${(share * 100).toFixed(1)}% of one core`);
  } finally {
    await Promise.all(engines.map((e) => e.stop()));
  }
});
