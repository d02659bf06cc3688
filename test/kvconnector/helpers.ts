// Shared by the KV connector tests and their child-process fixture: seeded KV pools in a
// SharedArrayBuffer (no model needed) and a handle on a KvTransferServer running in a child process.
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { KvPoolLayout } from '../../src/kernels/types.ts';
import { kvBlockBytes } from '../../src/kernels/types.ts';
import { f32ToF16, type PoolRef } from '../../src/engine/kv-layout.ts';
import type { KvCompat } from '../../src/kvconnector/index.ts';

export const SHAPE = { nLayers: 4, nKvHeads: 4, headDim: 32 } as const; // 4 KiB per token in f32

export function compatOf(over: Partial<KvCompat> = {}): KvCompat {
  return { architecture: 'llama', ...SHAPE, fingerprint: 'fp-test-0001', ...over };
}

/**
 * A pool at a non-zero base offset, every byte deterministic from `seed` (0 = zeros). In a
 * SharedArrayBuffer, or with `wasm` in a shared WebAssembly.Memory as the engine's (the sender then
 * checksums blocks in place instead of through a copy).
 */
export function makePool(
  l: { blockSize: number; numBlocks: number; dtype: 'f32' | 'f16'; wasm?: boolean },
  seed = 0,
  shape: { nLayers: number; nKvHeads: number; headDim: number } = SHAPE,
): PoolRef {
  const layout: KvPoolLayout = { base: 256, ...shape, blockSize: l.blockSize, numBlocks: l.numBlocks, dtype: l.dtype };
  const bytes = layout.base + layout.numBlocks * kvBlockBytes(layout);
  const pages = Math.ceil(bytes / 65536);
  const memory = l.wasm ? new WebAssembly.Memory({ initial: pages, maximum: pages, shared: true }) : undefined;
  const buffer = memory ? memory.buffer : new SharedArrayBuffer(bytes);
  if (seed) {
    let s = seed >>> 0;
    const rnd = () => {
      // mulberry32
      s = (s + 0x6d2b79f5) >>> 0;
      let t = s;
      t = Math.imul(t ^ (t >>> 15), t | 1);
      t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
    const n = (buffer.byteLength - layout.base) / (l.dtype === 'f16' ? 2 : 4);
    if (l.dtype === 'f32') {
      const v = new Float32Array(buffer, layout.base, n);
      // Full-precision values over a wide range, so f32→f16 rounding is actually exercised.
      for (let i = 0; i < n; i++) v[i] = (rnd() - 0.5) * 2 ** Math.floor(rnd() * 24 - 12);
    } else {
      const v = new Uint16Array(buffer, layout.base, n);
      for (let i = 0; i < n; i++) v[i] = f32ToF16((rnd() - 0.5) * 2 ** Math.floor(rnd() * 16 - 8));
    }
  }
  return memory ? { buffer, layout, memory } : { buffer, layout };
}

export interface ServerConfig {
  engineId: string;
  blockSize: number;
  numBlocks: number;
  dtype: 'f32' | 'f16';
  seed: number;
  secret?: string;
  frameBytes?: number;
  compat?: KvCompat;
  /** the pool lives in a shared WebAssembly.Memory (PoolRef.memory set) */
  wasm?: boolean;
  /** a simulated engine: payload-less frames on this link, and no pool at all */
  simulatedLink?: { bytesPerToken: number; bandwidthBytesPerSec: number; latencyMs: number };
}

type Reply = Record<string, unknown>;

/** A KvTransferServer in a child process, driven over JSON lines on stdin/stdout. */
export class ServerProcess {
  readonly releases: { requestId: string; reason: string }[] = [];
  private waiters = new Map<number, (r: Reply) => void>();
  private releaseWaiters: (() => void)[] = [];
  private nextId = 1;
  port = 0;
  exited: Promise<number | null>;

  private constructor(readonly child: ChildProcess, readonly config: ServerConfig) {
    this.exited = new Promise((resolve) => child.once('exit', (code) => resolve(code)));
  }

  static async start(config: ServerConfig): Promise<ServerProcess> {
    const fixture = fileURLToPath(new URL('./fixtures/kv-server.ts', import.meta.url));
    const child = spawn(process.execPath, ['--import', 'tsx', fixture, JSON.stringify(config)], { stdio: ['pipe', 'pipe', 'inherit'] });
    const sp = new ServerProcess(child, config);
    const ready = new Promise<void>((resolve, reject) => {
      child.once('exit', (code) => reject(new Error(`fixture exited early (${code})`)));
      createInterface({ input: child.stdout! }).on('line', (line) => {
        const msg = JSON.parse(line) as Reply;
        if (msg['ready']) {
          sp.port = msg['port'] as number;
          resolve();
        } else if (msg['event'] === 'release') {
          sp.releases.push({ requestId: msg['requestId'] as string, reason: msg['reason'] as string });
          for (const w of sp.releaseWaiters.splice(0)) w();
        } else sp.waiters.get(msg['id'] as number)?.(msg);
      });
    });
    await ready;
    return sp;
  }

  private call(cmd: Reply): Promise<Reply> {
    const id = this.nextId++;
    return new Promise((resolve) => {
      this.waiters.set(id, resolve);
      this.child.stdin!.write(JSON.stringify({ id, ...cmd }) + '\n');
    });
  }

  async offer(requestId: string, numTokens: number, opts: { leaseMs?: number; blockIds?: number[] } = {}): Promise<{ transferToken: string; blockIds: number[] }> {
    const r = await this.call({ cmd: 'offer', requestId, numTokens, leaseMs: opts.leaseMs ?? 30_000, blockIds: opts.blockIds });
    if (r['error']) throw new Error(r['error'] as string);
    return { transferToken: r['transferToken'] as string, blockIds: r['blockIds'] as number[] };
  }

  async metrics(): Promise<string> {
    return (await this.call({ cmd: 'metrics' }))['text'] as string;
  }

  async waitRelease(requestId: string): Promise<string> {
    for (;;) {
      const r = this.releases.find((x) => x.requestId === requestId);
      if (r) return r.reason;
      await new Promise<void>((resolve) => this.releaseWaiters.push(resolve));
    }
  }

  async stop(): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
    await this.exited;
  }
}

/** The block table the fixture uses for a request: scattered, non-contiguous blocks. */
export function scatteredBlocks(numTokens: number, blockSize: number, numBlocks: number, salt: number): number[] {
  const n = Math.ceil(numTokens / blockSize);
  if (n > numBlocks) throw new Error('pool too small');
  const ids = Array.from({ length: numBlocks }, (_, i) => i);
  let s = salt;
  for (let i = ids.length - 1; i > 0; i--) {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    const j = s % (i + 1);
    [ids[i], ids[j]] = [ids[j]!, ids[i]!];
  }
  return ids.slice(0, n);
}

/** Value of a prom-client sample in exposition text, e.g. metric('tandem:kv_leased_blocks'). */
export function metricValue(text: string, series: string): number | undefined {
  for (const line of text.split('\n')) {
    if (line.startsWith(series + ' ')) return Number(line.slice(series.length + 1));
  }
  return undefined;
}
