// Runs worker.mjs in a child process and turns its one JSON line into a checked object.
import { spawn } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const workerPath = join(dirname(fileURLToPath(import.meta.url)), 'worker.mjs');

export class LlamaCppWorkerError extends Error {
  override name = 'LlamaCppWorkerError';
  readonly userFacing = true;
}

const tail = (text: string, lines = 10): string => text.trimEnd().split('\n').slice(-lines).join('\n');

/**
 * The worker's result: the last stdout line that is a JSON object. Earlier lines (a stray library print) are ignored;
 * `{"ok":false,"error":…}` and missing output become a LlamaCppWorkerError carrying the tail of stderr.
 */
export function parseWorkerOutput(stdout: string, stderr: string, exitCode: number | null): Record<string, unknown> {
  const lines = stdout.split('\n').map((l) => l.trim()).filter((l) => l.startsWith('{'));
  let result: unknown;
  for (let i = lines.length - 1; i >= 0 && result === undefined; i--) {
    try {
      result = JSON.parse(lines[i]!);
    } catch {
      // not our line
    }
  }
  const where = stderr.trim() ? `\n${tail(stderr)}` : '';
  if (result === null || typeof result !== 'object' || Array.isArray(result)) {
    throw new LlamaCppWorkerError(`llama.cpp worker exited with code ${exitCode} without a result${where}`);
  }
  const r = result as Record<string, unknown>;
  if (r.ok !== true) {
    const msg = typeof r.error === 'string' ? r.error : 'unknown error';
    throw new LlamaCppWorkerError(`llama.cpp worker failed: ${msg}${r.ok === false ? '' : where}`);
  }
  if (exitCode !== 0) throw new LlamaCppWorkerError(`llama.cpp worker reported a result but exited with code ${exitCode}${where}`);
  return r;
}

/** Reads a required finite number out of a worker result, naming the field if it is missing. */
export function numberField(r: Record<string, unknown>, key: string): number {
  const v = r[key];
  if (typeof v !== 'number' || !Number.isFinite(v)) {
    throw new LlamaCppWorkerError(`llama.cpp worker result has no numeric '${key}' (got ${JSON.stringify(v)})`);
  }
  return v;
}

export interface RunWorkerOptions {
  /** Kill the worker after this long; default 30 minutes (100M-parameter models at batch 32 take minutes). */
  timeoutMs?: number;
  /** Forward the worker's stderr (llama.cpp warnings) here; default: kept only for error messages. */
  onStderr?: (chunk: string) => void;
  /** Another script speaking the same protocol; for tests. */
  worker?: string;
}

export function runWorker(args: Record<string, unknown>, options: RunWorkerOptions = {}): Promise<Record<string, unknown>> {
  const { timeoutMs = 30 * 60_000, onStderr, worker = workerPath } = options;
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [worker, JSON.stringify(args)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => {
      const s = d.toString();
      stderr += s;
      if (stderr.length > 1 << 20) stderr = stderr.slice(-(1 << 19)); // keep the tail only
      onStderr?.(s);
    });
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(new LlamaCppWorkerError(`cannot start the llama.cpp worker: ${e.message}`));
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      if (timedOut) return reject(new LlamaCppWorkerError(`llama.cpp worker timed out after ${timeoutMs} ms`));
      try {
        resolve(parseWorkerOutput(stdout, stderr, code));
      } catch (e) {
        reject(e);
      }
    });
  });
}
