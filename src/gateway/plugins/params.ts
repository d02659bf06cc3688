// Parameter readers for plugin factories: each checks type and range once, at config load,
// and throws ParamError with the key path so the config loader can name the YAML line.
import { ParamError } from '../types.ts';

export type Params = Record<string, unknown>;

export function asParams(value: unknown): Params {
  if (value === undefined || value === null) return {};
  if (typeof value !== 'object' || Array.isArray(value)) throw new ParamError('parameters must be a map');
  return value as Params;
}

export function num(
  p: Params,
  key: string,
  def: number,
  opts: { min?: number; max?: number; int?: boolean } = {},
): number {
  const v = p[key];
  if (v === undefined || v === null) return def;
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new ParamError(`${key} must be a number, got ${JSON.stringify(v)}`, [key]);
  if (opts.int && !Number.isInteger(v)) throw new ParamError(`${key} must be an integer, got ${v}`, [key]);
  if (opts.min !== undefined && v < opts.min) throw new ParamError(`${key} must be >= ${opts.min}, got ${v}`, [key]);
  if (opts.max !== undefined && v > opts.max) throw new ParamError(`${key} must be <= ${opts.max}, got ${v}`, [key]);
  return v;
}

export function str<T extends string>(p: Params, key: string, def: T, allowed?: readonly T[]): T {
  const v = p[key];
  if (v === undefined || v === null) return def;
  if (typeof v !== 'string') throw new ParamError(`${key} must be a string`, [key]);
  if (allowed && !allowed.includes(v as T)) throw new ParamError(`${key} must be one of ${allowed.join(', ')}, got '${v}'`, [key]);
  return v as T;
}

export function optStr(p: Params, key: string): string | undefined {
  const v = p[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string') throw new ParamError(`${key} must be a string`, [key]);
  return v;
}

export function bool(p: Params, key: string, def: boolean): boolean {
  const v = p[key];
  if (v === undefined || v === null) return def;
  if (typeof v !== 'boolean') throw new ParamError(`${key} must be true or false`, [key]);
  return v;
}

/** Reject keys the plugin does not know: a typo should not silently fall back to a default. */
export function only(p: Params, keys: readonly string[]): void {
  for (const k of Object.keys(p)) {
    if (!keys.includes(k)) throw new ParamError(`unknown parameter '${k}' (known: ${keys.length ? keys.join(', ') : 'none'})`, [k]);
  }
}
