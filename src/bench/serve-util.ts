// Start a real `tandem serve` process for a benchmark and stream completions from it.
import { spawn, type ChildProcess } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import http from 'node:http';

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

const agent = new http.Agent({ keepAlive: true, maxSockets: 1024 });

/** POST a streaming completion and time each SSE event. A plain node:http client: undici's body
 * stream delivered some events late in batches, which showed up as doubled inter-token gaps. */
export function streamCompletion(url: string, body: Record<string, unknown>): Promise<StreamResult> {
  const u = new URL(url);
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: u.hostname, port: u.port, path: '/v1/completions', method: 'POST', agent, headers: { 'content-type': 'application/json' } },
      (res) => {
        let buf = '';
        if (res.statusCode !== 200) {
          res.on('data', (d) => (buf += d));
          res.on('end', () => reject(new Error(`HTTP ${res.statusCode}: ${buf}`)));
          return;
        }
        let tokens = 0;
        let last = 0;
        let ttft = 0;
        const gaps: number[] = [];
        res.setEncoding('utf8');
        res.on('data', (d: string) => {
          buf += d;
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
        });
        res.on('end', () => resolve({ tokens, ttftMs: ttft, gaps, totalMs: performance.now() - t0 }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(JSON.stringify({ ...body, stream: true }));
  });
}

export function percentile(xs: number[], p: number): number {
  if (!xs.length) return NaN;
  const s = xs.slice().sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
}
