// `npm run bench:pd`: the seed's Figures 1–2 — inter-token latency vs QPS, coupled vs disaggregated —
// on simulated GPU engines (the real engine, scheduler, gateway and KV transfers; the model arithmetic
// replaced by the H200 Llama-3-8B timing profile). Both setups get two engines: coupled = two `both`
// engines, each running prefill and decode (chunked prefill); disaggregated = one prefill engine and
// one decode engine behind the same gateway with every request split.
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseFlags } from '../cli/args.ts';
import { DEFAULT_CONFIG_YAML } from '../gateway/index.ts';
import { startUp } from './experiments/cluster.ts';
import { measuredBy, writeReport } from './report.ts';
import { percentile, repoRoot, streamCompletion, type StreamResult } from './serve-util.ts';

function configWith(decider: 'always-disagg-pd-decider' | 'never-disagg-pd-decider'): string {
  return DEFAULT_CONFIG_YAML.replace(/- type: prefix-based-pd-decider\n {2}parameters: \{nonCachedTokens: 16\}\n/, `- type: ${decider}\n`).replace(
    'deciders: {prefill: prefix-based-pd-decider}',
    `deciders: {prefill: ${decider}}`,
  );
}

/** Poisson arrivals at `qps` for `seconds`; every request streams and is timed. */
async function load(url: string, qps: number, seconds: number, promptTokens: number, maxTokens: number, vocab: number, salt: number): Promise<StreamResult[]> {
  const pending: Promise<StreamResult>[] = [];
  const end = performance.now() + seconds * 1000;
  let i = 0;
  let rng = 0x12345678 ^ salt;
  const uniform = () => {
    rng ^= rng << 13;
    rng ^= rng >>> 17;
    rng ^= rng << 5;
    return ((rng >>> 0) + 0.5) / 4294967296;
  };
  while (performance.now() < end) {
    const k = i++;
    // distinct prompts across the whole run (the first tokens spell a unique number): no prefix-cache
    // help, as with independent users
    const id = salt * 100_000 + k;
    const prompt = Array.from({ length: promptTokens }, (_, j) =>
      j < 4 ? 3 + (Math.floor(id / (vocab - 3) ** j) % (vocab - 3)) : 3 + ((j * 7919 + id * 104729) % (vocab - 3)),
    );
    pending.push(streamCompletion(url, { model: 'stories260K', prompt, max_tokens: maxTokens, ignore_eos: true, temperature: 0 }));
    await new Promise((r) => setTimeout(r, (-Math.log(uniform()) / qps) * 1000));
  }
  return Promise.all(pending);
}

export async function main(argv: string[]): Promise<number> {
  const f = parseFlags(argv, {
    qps: { type: 'string', default: '2,4,6,8' },
    seconds: { type: 'number', default: 20 },
    'prompt-tokens': { type: 'number', default: 4096 },
    'max-tokens': { type: 'number', default: 256 },
    profile: { type: 'string', default: 'h200-llama8b' },
    // A whole prompt per step, as vLLM schedules long prompts without chunked prefill (the seed's setting);
    // try 512 to see how much chunked prefill alone reduces the coupled engines' ITL spikes.
    'max-num-batched-tokens': { type: 'number', default: 4096 },
    out: { type: 'string', default: join(repoRoot, 'docs/bench-results/pd.md') },
  });
  const dir = mkdtempSync(join(tmpdir(), 'tandem-bench-pd-'));
  const setups = [
    { name: 'coupled (2 × both)', topo: ['--both', '2'], decider: 'never-disagg-pd-decider' as const },
    { name: 'disaggregated (1 P + 1 D)', topo: ['--prefill', '1', '--decode', '1'], decider: 'always-disagg-pd-decider' as const },
  ];
  const rows: string[] = [];
  for (const s of setups) {
    const cfg = join(dir, `${s.decider}.yaml`);
    writeFileSync(cfg, configWith(s.decider));
    const cluster = await startUp([
      ...s.topo,
      '--port',
      '0',
      '--config',
      cfg,
      `--engine-arg=--simulate=${f.profile}`,
      '--engine-arg=--max-num-seqs=256',
      `--engine-arg=--max-num-batched-tokens=${f['max-num-batched-tokens']}`,
    ]);
    try {
      for (const q of f.qps!.split(',').map(Number)) {
        process.stderr.write(`bench:pd ${s.name} at ${q} QPS…\n`);
        const rs = await load(cluster.url, q, f.seconds!, f['prompt-tokens']!, f['max-tokens']!, 512, Math.round(q * 100));
        const gaps = rs.flatMap((r) => r.gaps);
        const ttft = rs.map((r) => r.ttftMs);
        const row = `| ${s.name} | ${q} | ${rs.length} | ${percentile(gaps, 50).toFixed(1)} | ${percentile(gaps, 90).toFixed(1)} | ${percentile(gaps, 99).toFixed(1)} | ${percentile(ttft, 50).toFixed(0)} | ${percentile(ttft, 99).toFixed(0)} |`;
        process.stderr.write(row + '\n');
        rows.push(row);
      }
    } finally {
      await cluster.stop();
    }
  }
  const report = [
    measuredBy('bench:pd'),
    `Simulated engines (\`--simulate ${f.profile}\`: step times of Llama-3-8B on one H200, from reference/gpu-profile.md), behind \`tandem gateway\`; ` +
      `Poisson arrivals for ${f.seconds} s per point; ${f['prompt-tokens']}-token prompts (all distinct), ${f['max-tokens']} output tokens, streamed. ` +
      `Up to ${f['max-num-batched-tokens']} prompt tokens per engine step. ITL = gap between consecutive streamed tokens, pooled over requests.`,
    '',
    '| setup | QPS | requests | ITL p50 ms | ITL p90 ms | ITL p99 ms | TTFT p50 ms | TTFT p99 ms |',
    '|---|---|---|---|---|---|---|---|',
    ...rows,
  ].join('\n');
  console.log(report);
  writeReport(f.out!, report);
  return 0;
}
