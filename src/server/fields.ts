// Typed readers over a parsed JSON body: each returns the value or undefined (absent or null, as
// pydantic's Optional fields in vLLM treat them) and throws a 400 naming the field otherwise.

import { badField } from './errors.ts';

export interface NumberRule {
  integer?: boolean;
  min?: number;
  /** exclusive lower bound */
  above?: number;
  max?: number;
  /** how the rule reads in the error message, e.g. "a number in (0, 1]" */
  describe: string;
}

export class Fields {
  constructor(private readonly body: Record<string, unknown>) {}

  has(name: string): boolean {
    return this.body[name] !== undefined && this.body[name] !== null;
  }

  raw(name: string): unknown {
    const v = this.body[name];
    return v === null ? undefined : v;
  }

  number(name: string, rule: NumberRule): number | undefined {
    const v = this.raw(name);
    if (v === undefined) return undefined;
    const ok =
      typeof v === 'number' &&
      Number.isFinite(v) &&
      (!rule.integer || Number.isSafeInteger(v)) &&
      (rule.min === undefined || v >= rule.min) &&
      (rule.above === undefined || v > rule.above) &&
      (rule.max === undefined || v <= rule.max);
    if (!ok) throw badField(name, `must be ${rule.describe}, got ${show(v)}`);
    return v as number;
  }

  bool(name: string): boolean | undefined {
    const v = this.raw(name);
    if (v === undefined) return undefined;
    if (typeof v !== 'boolean') throw badField(name, `must be a boolean, got ${show(v)}`);
    return v;
  }

  string(name: string, opts: { nonEmpty?: boolean } = {}): string | undefined {
    const v = this.raw(name);
    if (v === undefined) return undefined;
    if (typeof v !== 'string') throw badField(name, `must be a string, got ${show(v)}`);
    if (opts.nonEmpty && v === '') throw badField(name, 'must be a non-empty string');
    return v;
  }

  object(name: string): Record<string, unknown> | undefined {
    const v = this.raw(name);
    if (v === undefined) return undefined;
    if (typeof v !== 'object' || Array.isArray(v)) throw badField(name, `must be an object, got ${show(v)}`);
    return v as Record<string, unknown>;
  }

  /** string | string[] → string[] (OpenAI's `stop`) */
  strings(name: string): string[] | undefined {
    const v = this.raw(name);
    if (v === undefined) return undefined;
    const list = typeof v === 'string' ? [v] : v;
    if (!Array.isArray(list) || !list.every((s) => typeof s === 'string' && s !== '')) {
      throw badField(name, `must be a non-empty string or an array of non-empty strings, got ${show(v)}`);
    }
    return list as string[];
  }

  /** an array of token ids in [0, vocabSize) */
  tokenIds(name: string, vocabSize: number): number[] | undefined {
    const v = this.raw(name);
    if (v === undefined) return undefined;
    if (!Array.isArray(v)) throw badField(name, `must be an array of token ids, got ${show(v)}`);
    checkTokenIds(v, name, vocabSize);
    return v as number[];
  }
}

export function checkTokenIds(list: unknown[], name: string, vocabSize: number): asserts list is number[] {
  for (let i = 0; i < list.length; i++) {
    const t = list[i];
    if (typeof t !== 'number' || !Number.isInteger(t) || t < 0 || t >= vocabSize) {
      throw badField(name, `must contain token ids in [0, ${vocabSize}); element ${i} is ${show(t)}`);
    }
  }
}

/** A short rendering of a bad value for error messages (never echoes a huge payload back). */
export function show(v: unknown): string {
  let s: string;
  try {
    s = JSON.stringify(v) ?? String(v);
  } catch {
    s = String(v);
  }
  return s.length > 60 ? `${s.slice(0, 57)}...` : s;
}
