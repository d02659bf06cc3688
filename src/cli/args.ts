// A small flag parser shared by the subcommands: --name value, --name=value, repeated flags, booleans.
export class UsageError extends Error {
  override name = 'UsageError';
}

export interface FlagSpec {
  [name: string]: { type: 'string' | 'number' | 'boolean' | 'list'; default?: unknown; help?: string };
}

export type ParsedFlags<S extends FlagSpec> = {
  [K in keyof S]: S[K]['type'] extends 'number'
    ? number | undefined
    : S[K]['type'] extends 'boolean'
      ? boolean
      : S[K]['type'] extends 'list'
        ? string[]
        : string | undefined;
};

export function parseFlags<S extends FlagSpec>(argv: string[], spec: S): ParsedFlags<S> & { _: string[] } {
  const out: Record<string, unknown> = { _: [] as string[] };
  for (const [k, s] of Object.entries(spec)) {
    out[k] = s.type === 'list' ? [] : s.type === 'boolean' ? (s.default ?? false) : s.default;
  }
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (!a.startsWith('--')) {
      (out._ as string[]).push(a);
      continue;
    }
    let name = a.slice(2);
    let value: string | undefined;
    const eq = name.indexOf('=');
    if (eq >= 0) {
      value = name.slice(eq + 1);
      name = name.slice(0, eq);
    }
    let s = spec[name];
    if (!s && name.startsWith('no-') && spec[name.slice(3)]?.type === 'boolean') {
      out[name.slice(3)] = false;
      continue;
    }
    if (!s) throw new UsageError(`unknown option --${name}`);
    if (s.type === 'boolean') {
      out[name] = value === undefined ? true : !['false', '0', 'no'].includes(value);
      continue;
    }
    if (value === undefined) {
      value = argv[++i];
      if (value === undefined) throw new UsageError(`--${name} needs a value`);
    }
    if (s.type === 'number') {
      const n = Number(value);
      if (!Number.isFinite(n)) throw new UsageError(`--${name} must be a number, got '${value}'`);
      out[name] = n;
    } else if (s.type === 'list') {
      (out[name] as string[]).push(value);
    } else out[name] = value;
  }
  return out as ParsedFlags<S> & { _: string[] };
}

/** Parse sizes like 256MiB, 1GiB, 512MB, 1024 (bytes). */
export function parseBytes(text: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?$/i.exec(text.trim());
  if (!m) throw new UsageError(`bad size '${text}' (use e.g. 256MiB, 2GiB)`);
  const n = Number(m[1]);
  const unit = (m[2] ?? 'b').toLowerCase();
  const pow = { b: 0, k: 1, m: 2, g: 3, t: 4 }[unit[0] as 'b' | 'k' | 'm' | 'g' | 't'];
  const base = unit.includes('i') || unit.length === 1 ? 1024 : 1000;
  return Math.round(n * base ** pow);
}

/** '25GB/s', '200Gb/s', '3GiB/s', '800MB/s' → bytes per second. */
export function parseRate(text: string, flag: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(G|M|K|Gi|Mi|Ki)?(B|b)\/s\s*$/.exec(text);
  if (!m) throw new UsageError(`--${flag}: expected a rate such as 25GB/s or 200Gb/s, got '${text}'`);
  const scale: Record<string, number> = { '': 1, K: 1e3, M: 1e6, G: 1e9, Ki: 1024, Mi: 1024 ** 2, Gi: 1024 ** 3 };
  const bytes = Number(m[1]) * scale[m[2] ?? '']! / (m[3] === 'b' ? 8 : 1);
  if (!(bytes > 0)) throw new UsageError(`--${flag} must be > 0, got '${text}'`);
  return bytes;
}
