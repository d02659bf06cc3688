// `tandem bench loadgen`: the load generator's own ceiling. Against a server that answers at once
// (the SSE stub, in its own process), how many streamed requests per second can it drive, and does
// an open-loop 500 req/s schedule come out at 500 req/s? If the generator were the bottleneck, every
// serving number it reports would be a statement about the client.
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { loadavg } from 'node:os';
import { parseFlags } from '../../cli/args.ts';
import { repoRoot } from '../serve-util.ts';
import { runLoad } from './run.ts';

export async function main(argv: string[]): Promise<number> {
  const f = parseFlags(argv, {
    'num-prompts': { type: 'number', default: 3000 },
    concurrency: { type: 'number', default: 64 },
    'output-len': { type: 'number', default: 16 },
    repeat: { type: 'number', default: 3 },
  });
  const child = spawn(process.execPath, ['--import', 'tsx', join(repoRoot, 'src/bench/loadgen/sse-stub.ts'), '0'], { cwd: repoRoot, stdio: ['ignore', 'pipe', 'inherit'] });
  try {
    const url = await new Promise<string>((resolve, reject) => {
      let out = '';
      child.stdout!.on('data', (d) => {
        out += d;
        const m = /on (http:\/\/\S+)/.exec(out);
        if (m) resolve(m[1]!);
      });
      child.once('exit', (c) => reject(new Error(`sse stub exited with ${c}`)));
    });
    const dataset = { kind: 'random' as const, inputLen: 16, outputLen: f['output-len']! };
    console.log(`load average before: ${loadavg().map((x) => x.toFixed(2)).join(' / ')}`);
    await runLoad({ url, dataset, numPrompts: 500, concurrency: f.concurrency }); // warm the JIT and sockets
    for (let i = 0; i < f.repeat!; i++) {
      const closed = await runLoad({ url, dataset, numPrompts: f['num-prompts'], concurrency: f.concurrency });
      const open = await runLoad({ url, dataset, numPrompts: 2000, qps: 500, arrival: 'constant' });
      console.log(
        `closed loop (concurrency ${f.concurrency}, ${f['output-len']} chunks each): ${closed.request_throughput.toFixed(0)} req/s, ` +
          `${(closed.output_throughput as number).toFixed(0)} chunks/s, failed ${closed.failed}; ` +
          `open loop 500 req/s constant: achieved ${open.request_throughput.toFixed(1)} req/s, ` +
          `mean TTFT ${open.mean_ttft_ms.toFixed(2)} ms, p99 ${open.p99_ttft_ms.toFixed(2)} ms, failed ${open.failed}`,
      );
    }
    console.log(`load average after: ${loadavg().map((x) => x.toFixed(2)).join(' / ')}`);
    return 0;
  } finally {
    child.kill('SIGTERM');
  }
}
