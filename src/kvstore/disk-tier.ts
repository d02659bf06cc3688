// Local-disk tier: one file per chunk, <dir>/<key>.kv, holding the header and payload.
//
// - Writers create a private temp file and rename it into place. rename(2) is atomic, and every writer
//   of one key writes the same bytes, so concurrent writers (threads or engines sharing the directory)
//   leave one valid file whoever wins.
// - The index (key → size, in LRU order) is rebuilt from the directory at start, oldest mtime first.
//   Other engines sharing the directory add files we have not seen: a lookup that misses the index
//   stats the file once before giving up, so their chunks are found without a directory watcher.
// - The capacity bounds what this process knows about; each engine on a shared directory evicts its
//   own view (a reader that loses a file to another engine's eviction just sees a miss).
// - ENOSPC/EDQUOT: the tier stops writing for `fullRetryMs`, logs once, reads continue.
// - No fsync: a file cut short by a crash fails its checksum and is discarded on read.
import { randomBytes } from 'node:crypto';
import { mkdirSync, readdirSync, statSync, unlinkSync } from 'node:fs';
import { open, readFile, rename, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { HEADER_BYTES } from './chunk.ts';

const FILE_RE = /^([0-9a-f]{64})\.kv$/;
const TMP_RE = /^\.[0-9a-f]{64}\.\d+\.[0-9a-f]+\.tmp$/;
const STALE_TMP_MS = 10 * 60_000;

export interface DiskTierHooks {
  log(line: string): void;
  error(reason: string): void;
  bytesDelta(delta: number): void;
  removed(keys: string[]): void;
}

export type DiskWriteResult = 'written' | 'present' | 'full' | 'too-large' | 'error';

export class DiskTier {
  private readonly index = new Map<string, number>();
  usedBytes = 0;
  private fullUntil = 0;
  private fullLogged = false;

  private constructor(
    readonly dir: string,
    readonly capacityBytes: number,
    private readonly fullRetryMs: number,
    private readonly hooks: DiskTierHooks,
  ) {}

  /** Open (creating the directory if needed) and index what is already there. Startup-only, so sync. */
  static open(dir: string, capacityBytes: number, fullRetryMs: number, hooks: DiskTierHooks): DiskTier {
    try {
      mkdirSync(dir, { recursive: true });
    } catch (e) {
      throw Object.assign(new Error(`--kv-store: cannot create disk tier directory '${dir}': ${(e as Error).message}`), { userFacing: true });
    }
    const t = new DiskTier(dir, capacityBytes, fullRetryMs, hooks);
    const found: { key: string; size: number; mtime: number }[] = [];
    const now = Date.now();
    for (const name of readdirSync(dir)) {
      const m = FILE_RE.exec(name);
      try {
        if (m) {
          const st = statSync(join(dir, name));
          if (st.isFile()) found.push({ key: m[1]!, size: st.size, mtime: st.mtimeMs });
        } else if (TMP_RE.test(name) && now - statSync(join(dir, name)).mtimeMs > STALE_TMP_MS) {
          unlinkSync(join(dir, name)); // left by a writer that died mid-write
        }
      } catch {
        // Raced with another engine's eviction or rename; skip it.
      }
    }
    found.sort((a, b) => a.mtime - b.mtime);
    for (const f of found) t.remember(f.key, f.size);
    t.evictUntilFits(0);
    return t;
  }

  get size(): number {
    return this.index.size;
  }

  get writable(): boolean {
    return Date.now() >= this.fullUntil;
  }

  path(key: string): string {
    return join(this.dir, `${key}.kv`);
  }

  /** In the index, without touching the file system. */
  known(key: string): boolean {
    return this.index.has(key);
  }

  /** In the index, or on disk (written by another engine sharing the directory). */
  has(key: string): boolean {
    if (this.index.has(key)) return true;
    try {
      const st = statSync(this.path(key));
      if (!st.isFile()) return false;
      this.remember(key, st.size);
      this.evictUntilFits(0, key);
      return this.index.has(key);
    } catch {
      return false;
    }
  }

  /** The whole stored object, or undefined if the file is gone. */
  async read(key: string): Promise<Uint8Array | undefined> {
    try {
      const bytes = await readFile(this.path(key));
      this.touch(key, bytes.byteLength);
      return bytes;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') this.hooks.error('io');
      this.forget(key);
      return undefined;
    }
  }

  async write(key: string, header: Uint8Array, payload: Uint8Array): Promise<DiskWriteResult> {
    if (!this.writable) return 'full';
    const bytes = HEADER_BYTES + payload.byteLength;
    if (bytes > this.capacityBytes) return 'too-large';
    if (this.has(key)) return 'present';
    this.evictUntilFits(bytes);
    const tmp = join(this.dir, `.${key}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
    try {
      const fh = await open(tmp, 'wx');
      try {
        // writev may write partially; continue from where it stopped.
        for (let off = 0; off < bytes; ) {
          const bufs = off < header.byteLength ? [header.subarray(off), payload] : [payload.subarray(off - header.byteLength)];
          off += (await fh.writev(bufs)).bytesWritten;
        }
      } finally {
        await fh.close();
      }
      await rename(tmp, this.path(key));
    } catch (e) {
      await unlink(tmp).catch(() => {});
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOSPC' || code === 'EDQUOT') {
        this.fullUntil = Date.now() + this.fullRetryMs;
        this.hooks.error('enospc');
        if (!this.fullLogged) {
          this.fullLogged = true;
          this.hooks.log(`disk tier ${this.dir} is full (${code}); writes paused for ${this.fullRetryMs} ms, reads continue`);
        }
        return 'full';
      }
      this.hooks.error('io');
      return 'error';
    }
    if (this.fullLogged) {
      this.fullLogged = false;
      this.hooks.log(`disk tier ${this.dir} is writable again`);
    }
    this.remember(key, bytes);
    return 'written';
  }

  /** Delete a chunk (a corrupt one, or on eviction). */
  remove(key: string): void {
    this.forget(key);
    // Synchronous (an unlink is microseconds): once a bad chunk is reported, it is gone.
    try {
      unlinkSync(this.path(key));
    } catch {
      // already gone (another engine removed it)
    }
  }

  private remember(key: string, size: number): void {
    const old = this.index.get(key);
    if (old !== undefined) {
      this.index.delete(key);
      this.usedBytes -= old;
      this.hooks.bytesDelta(-old);
    }
    this.index.set(key, size);
    this.usedBytes += size;
    this.hooks.bytesDelta(size);
  }

  private touch(key: string, size: number): void {
    this.remember(key, size);
  }

  private forget(key: string): void {
    const old = this.index.get(key);
    if (old === undefined) return;
    this.index.delete(key);
    this.usedBytes -= old;
    this.hooks.bytesDelta(-old);
  }

  private evictUntilFits(incoming: number, keep?: string): void {
    const evicted: string[] = [];
    for (const key of this.index.keys()) {
      if (this.usedBytes + incoming <= this.capacityBytes) break;
      if (key === keep) continue;
      this.forget(key);
      // Sync so the space is free before the write that needed it; an unlink is microseconds.
      try {
        unlinkSync(this.path(key));
      } catch {
        // Already gone (another engine evicted it).
      }
      evicted.push(key);
    }
    if (evicted.length) this.hooks.removed(evicted);
  }
}
