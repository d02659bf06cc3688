// Redis tier (ioredis). One object per chunk, key "tandem:kv:<hex>", value header ‖ payload; Redis's
// own maxmemory policy bounds its size (run it with allkeys-lru for a cache).
//
// Availability is a small circuit breaker. Any connection error or command timeout marks the tier
// down: it is skipped by lookups, loads and writes, one log line is printed, and a background PING
// probes it with exponential backoff; the first answered PING brings it back (one more log line).
// Every command is bounded by its own deadline, so a slow or paused Redis costs a request at most
// `lookupTimeoutMs` (lookups) or `loadTimeoutMs` (loads), never more.
//
// Reads and writes use separate connections: Redis answers a connection's commands in order, so a
// large background SET must not sit in front of a latency-sensitive lookup.
import { Redis } from 'ioredis';

export interface RedisTierOptions {
  lookupTimeoutMs: number;
  loadTimeoutMs: number;
  writeTimeoutMs: number;
  minBackoffMs: number;
  maxBackoffMs: number;
}

export const REDIS_DEFAULTS: RedisTierOptions = {
  lookupTimeoutMs: 200,
  loadTimeoutMs: 2000,
  writeTimeoutMs: 10_000,
  minBackoffMs: 250,
  maxBackoffMs: 30_000,
};

export interface RedisTierHooks {
  log(line: string): void;
  error(reason: string): void;
  /** Back after being down: whatever we believed Redis held may be gone (a restart without persistence). */
  recovered(): void;
}

class Timeout extends Error {
  override name = 'Timeout';
}

function withDeadline<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Timeout(`no reply within ${ms} ms`)), ms);
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

const PREFIX = 'tandem:kv:';

export class RedisTier {
  private readonly reader: Redis;
  private readonly writer: Redis;
  private up = false;
  private downSince = 0;
  private backoffMs: number;
  private probeTimer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(
    readonly url: string,
    connection: { host: string; port: number; db: number },
    private readonly opts: RedisTierOptions,
    private readonly hooks: RedisTierHooks,
  ) {
    this.backoffMs = opts.minBackoffMs;
    const make = (name: string) => {
      const c = new Redis({
        host: connection.host,
        port: connection.port,
        db: connection.db,
        // Credentials, if any, come from the URL.
        ...credentials(url),
        connectionName: `tandem-kv-${name}`,
        lazyConnect: true,
        // Fail commands at once while disconnected instead of queueing them behind a reconnect.
        enableOfflineQueue: false,
        maxRetriesPerRequest: 0,
        autoResendUnfulfilledCommands: false,
        connectTimeout: Math.max(opts.lookupTimeoutMs, 1000),
        retryStrategy: (times) => Math.min(opts.minBackoffMs * 2 ** Math.min(times, 16), opts.maxBackoffMs),
      });
      // ioredis prints unhandled 'error' events itself; route them to the breaker instead (one line per state change).
      c.on('error', (e: Error) => this.markDown(e, true));
      c.on('close', () => this.markDown(new Error('connection closed'), true));
      c.on('ready', () => {
        if (!this.up && !this.closed) this.scheduleProbe(0);
      });
      return c;
    };
    this.reader = make('reader');
    this.writer = make('writer');
  }

  /** Connect both connections; if Redis does not answer within `waitMs`, start as down (and keep probing). */
  async start(waitMs = 1000): Promise<void> {
    try {
      // Commands fail fast while disconnected (no offline queue), so wait for both connections first.
      await withDeadline(Promise.all([this.reader.connect(), this.writer.connect()]), waitMs);
      await withDeadline(Promise.all([this.reader.ping(), this.writer.ping()]), waitMs);
      this.markUp();
    } catch (e) {
      this.markDown(e as Error, true);
    }
  }

  get available(): boolean {
    return this.up;
  }

  /** Which of `keys` Redis holds (one pipelined round trip); undefined if the tier is down or slow. */
  async existsMany(keys: string[]): Promise<boolean[] | undefined> {
    if (!this.up || keys.length === 0) return this.up ? [] : undefined;
    try {
      const pipe = this.reader.pipeline();
      for (const k of keys) pipe.exists(PREFIX + k);
      const res = await withDeadline(pipe.exec(), this.opts.lookupTimeoutMs);
      if (!res) throw new Error('pipeline aborted');
      return res.map(([err, n]) => {
        if (err) throw err;
        return n === 1;
      });
    } catch (e) {
      this.fail(e as Error);
      return undefined;
    }
  }

  /** The stored object; null if absent; undefined if the tier is down or the read failed. */
  async get(key: string): Promise<Uint8Array | null | undefined> {
    if (!this.up) return undefined;
    try {
      return await withDeadline(this.reader.getBuffer(PREFIX + key), this.opts.loadTimeoutMs);
    } catch (e) {
      this.fail(e as Error);
      return undefined;
    }
  }

  /** Store unless present (EXISTS first, so re-storing a shared prefix does not resend megabytes). */
  async put(key: string, header: Uint8Array, payload: Uint8Array): Promise<'written' | 'present' | 'down' | 'error'> {
    if (!this.up) return 'down';
    try {
      if ((await withDeadline(this.writer.exists(PREFIX + key), this.opts.writeTimeoutMs)) === 1) return 'present';
      const value = Buffer.concat([header, payload]);
      await withDeadline(this.writer.set(PREFIX + key, value), this.opts.writeTimeoutMs);
      return 'written';
    } catch (e) {
      this.fail(e as Error);
      return 'error';
    }
  }

  async remove(key: string): Promise<void> {
    if (!this.up) return;
    try {
      await withDeadline(this.writer.del(PREFIX + key), this.opts.writeTimeoutMs);
    } catch (e) {
      this.fail(e as Error);
    }
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.probeTimer);
    this.reader.disconnect();
    this.writer.disconnect();
  }

  private fail(e: Error): void {
    this.hooks.error(e instanceof Timeout ? 'timeout' : 'unavailable');
    this.markDown(e);
  }

  /** `count`: a connection event rather than a failed command (which `fail` has already counted). */
  private markDown(e: Error, count = false): void {
    if (this.closed) return;
    if (this.up || this.downSince === 0) {
      if (count) this.hooks.error('unavailable');
      this.up = false;
      this.downSince = Date.now();
      this.backoffMs = this.opts.minBackoffMs;
      this.hooks.log(`redis tier ${this.url} unavailable (${e.message}); other tiers keep serving, retrying with backoff`);
      this.scheduleProbe(this.backoffMs);
    }
  }

  private markUp(): void {
    if (this.up) return;
    const wasDown = this.downSince !== 0;
    this.up = true;
    if (wasDown) {
      this.hooks.log(`redis tier ${this.url} available again after ${((Date.now() - this.downSince) / 1000).toFixed(1)} s`);
      this.hooks.recovered();
    }
    this.downSince = 0;
    this.backoffMs = this.opts.minBackoffMs;
  }

  private scheduleProbe(ms: number): void {
    if (this.closed) return;
    clearTimeout(this.probeTimer);
    this.probeTimer = setTimeout(() => void this.probe(), ms);
    this.probeTimer.unref();
  }

  private async probe(): Promise<void> {
    if (this.up || this.closed) return;
    try {
      // Both connections must answer: writes use the second one.
      await withDeadline(Promise.all([this.reader.ping(), this.writer.ping()]), this.opts.lookupTimeoutMs);
      this.markUp();
    } catch {
      this.backoffMs = Math.min(this.backoffMs * 2, this.opts.maxBackoffMs);
      this.scheduleProbe(this.backoffMs);
    }
  }
}

function credentials(url: string): { username?: string; password?: string } {
  const u = new URL(url);
  const out: { username?: string; password?: string } = {};
  if (u.username) out.username = decodeURIComponent(u.username);
  if (u.password) out.password = decodeURIComponent(u.password);
  return out;
}
