// What every benchmark shares: the GGUF files both engines load, and how results are written down.
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { dirname, join } from 'node:path';
import { loadModel, writeGguf } from '../model/index.ts';
import { repoRoot } from './serve-util.ts';

const SHIPPED_GGUF: Record<string, string> = {
  stories260K: 'models/stories260K-gguf/stories260K.gguf',
  'tinystories-656k': 'models/tinystories-656k/TinyStories-656K-Q8_0.gguf',
};

/** The GGUF file for a model: the shipped one, or a synthetic model exported once into .bench-cache/gguf. */
export async function ggufFile(name: string): Promise<string> {
  const shipped = SHIPPED_GGUF[name];
  if (shipped) return join(repoRoot, shipped);
  const file = join(repoRoot, '.bench-cache', 'gguf', name.replace(':', '-') + '.gguf');
  if (!existsSync(file)) {
    mkdirSync(dirname(file), { recursive: true });
    await writeGguf(await loadModel(name), file);
  }
  return file;
}

/** "Measured <when> by `npm run <script>` on <cpu> (N vCPUs), Node <v>; load average …" */
export function measuredBy(script: string): string {
  const cpu = cpus();
  return (
    `Measured ${new Date().toISOString()} by \`npm run ${script}\` on ${cpu[0]?.model ?? 'unknown CPU'} (${cpu.length} vCPUs), ` +
    `Node ${process.version}; load average ${loadavg().map((x) => x.toFixed(1)).join(' / ')}.`
  );
}

export function writeReport(out: string, report: string): void {
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(out, report.endsWith('\n') ? report : report + '\n');
}
