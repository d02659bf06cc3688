// Start a real `tandem serve` process for a benchmark and stream completions from it.
import { spawn, type ChildProcess } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { request } from 'undici';

export const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

export interface Served {
  url: string;
  child: ChildProcess;
  stop(): Promise<void>;
}

/** Spawn `tandem serve <args>` on a free port; resolves once it prints its listening line. */
export function startServe(args: string[], opts: { log?: (line: string) => void } = {}): Promise<Served> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [join(repoRoot, 'bin/tandem.js'), 'serve', '--port', '0', ...args], {
      cwd: repoRoot,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let done = false;
    const onLine = (line: string) => {
      opts.log?.(line);
      const m = /on (http:\/\/[^\s]+)/.exec(line);
      if (m && !done) {
        done = true;
        const url = m[1]!.replace(/\/$/, '');
        resolve({
          url,
          child,
          stop: () =>
            new Promise<void>((r) => {
              if (child.exitCode !== null) return r();
              child.once('exit', () => r());
              child.kill('SIGTERM');
              setTimeout(() => child.kill('SIGKILL'), 5000).unref();
            }),
        });
      }
    };
    let buf = '';
    const feed = (d: Buffer) => {
      buf += d.toString();
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        onLine(buf.slice(0, i));
        buf = buf.slice(i + 1);
      }
    };
    child.stdout!.on('data', feed);
    child.stderr!.on('data', feed);
    child.on('exit', (code) => {
      if (!done) reject(new Error(`tandem serve exited with ${code} before listening`));
    });
  });
}

export interface StreamResult {
  tokens: number;
  ttftMs: number;
  /** gaps between consecutive streamed chunks, ms */
  gaps: number[];
  totalMs: number;
}

/** POST a streaming completion and time each chunk. */
export async function streamCompletion(url: string, body: Record<string, unknown>): Promise<StreamResult> {
  const t0 = performance.now();
  const res = await request(`${url}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ ...body, stream: true }),
  });
  if (res.statusCode !== 200) throw new Error(`HTTP ${res.statusCode}: ${await res.body.text()}`);
  let buf = '';
  let tokens = 0;
  let last = 0;
  let ttft = 0;
  const gaps: number[] = [];
  for await (const chunk of res.body) {
    buf += chunk.toString();
    let i;
    while ((i = buf.indexOf('\n\n')) >= 0) {
      const ev = buf.slice(0, i);
      buf = buf.slice(i + 2);
      if (!ev.startsWith('data: ') || ev === 'data: [DONE]') continue;
      const now = performance.now();
      const j = JSON.parse(ev.slice(6)) as { choices?: { text?: string }[] };
      if (!j.choices?.length) continue;
      tokens++;
      if (tokens === 1) ttft = now - t0;
      else gaps.push(now - last);
      last = now;
    }
  }
  return { tokens, ttftMs: ttft, gaps, totalMs: performance.now() - t0 };
}

export function percentile(xs: number[], p: number): number {
  if (!xs.length) return NaN;
  const s = xs.slice().sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
}
