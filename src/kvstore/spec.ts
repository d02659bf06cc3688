// `--kv-store` parsing: memory:<size>[,disk:<dir>:<size>][,redis://host:port[/db]].
// Tiers are always tried fastest first (memory, disk, redis) whatever order they are written in.
import { parseBytes, UsageError } from '../cli/args.ts';

export type TierName = 'memory' | 'disk' | 'redis';
export const TIER_ORDER: readonly TierName[] = ['memory', 'disk', 'redis'];

export interface KvStoreSpec {
  memory?: { capacityBytes: number };
  disk?: { dir: string; capacityBytes: number };
  redis?: { url: string; host: string; port: number; db: number };
}

const GRAMMAR = 'memory:<size>[,disk:<dir>:<size>][,redis://host:port[/db]]';

function size(text: string, what: string): number {
  let n: number;
  try {
    n = parseBytes(text);
  } catch {
    throw new UsageError(`--kv-store: bad ${what} size '${text}' (use e.g. 512MiB, 4GiB)`);
  }
  if (!(n > 0)) throw new UsageError(`--kv-store: ${what} size must be positive, got '${text}'`);
  return n;
}

export function parseKvStoreSpec(spec: string): KvStoreSpec {
  const out: KvStoreSpec = {};
  const parts = spec.split(',').map((p) => p.trim());
  if (!spec.trim() || parts.some((p) => !p)) throw new UsageError(`--kv-store: empty tier in '${spec}' (expected ${GRAMMAR})`);
  for (const part of parts) {
    if (part.startsWith('memory:')) {
      if (out.memory) throw new UsageError('--kv-store: memory tier given twice');
      out.memory = { capacityBytes: size(part.slice('memory:'.length), 'memory') };
    } else if (part.startsWith('disk:')) {
      if (out.disk) throw new UsageError('--kv-store: disk tier given twice');
      // The directory may itself contain ':'; the size is after the last one.
      const rest = part.slice('disk:'.length);
      const colon = rest.lastIndexOf(':');
      if (colon <= 0) throw new UsageError(`--kv-store: disk tier needs a directory and a size, e.g. disk:/var/cache/kv:10GiB (got '${part}')`);
      out.disk = { dir: rest.slice(0, colon), capacityBytes: size(rest.slice(colon + 1), 'disk') };
    } else if (part.startsWith('redis://')) {
      if (out.redis) throw new UsageError('--kv-store: redis tier given twice');
      out.redis = parseRedisUrl(part);
    } else {
      throw new UsageError(`--kv-store: unknown tier '${part}' (expected ${GRAMMAR})`);
    }
  }
  return out;
}

function parseRedisUrl(text: string): NonNullable<KvStoreSpec['redis']> {
  let u: URL;
  try {
    u = new URL(text);
  } catch {
    throw new UsageError(`--kv-store: bad redis URL '${text}' (expected redis://host:port[/db])`);
  }
  if (!u.hostname) throw new UsageError(`--kv-store: redis URL '${text}' has no host`);
  const port = u.port ? Number(u.port) : 6379;
  const dbText = u.pathname.replace(/^\//, '');
  if (dbText && !/^\d+$/.test(dbText)) throw new UsageError(`--kv-store: redis database must be a number, got '/${dbText}'`);
  if (u.search || u.hash) throw new UsageError(`--kv-store: redis URL '${text}' must not have a query or fragment`);
  return { url: text, host: u.hostname.replace(/^\[|\]$/g, ''), port, db: dbText ? Number(dbText) : 0 };
}
