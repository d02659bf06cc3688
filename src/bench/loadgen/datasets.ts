// Workloads: each request is a pure function of (seed, index), so a duration-bounded run can draw
// as many as it needs and the same seed gives the same prompts on any machine.
//
// On the completions endpoint `random` and `shared-prefix` send token-id arrays, so the input length
// is exact whatever the tokenizer (vLLM's random dataset makes its ids the same way, then decodes
// them); the chat endpoint takes text, so there a prompt is words and its true length is the
// server's `usage.prompt_tokens`.
import { readFileSync } from 'node:fs';
import { Rng } from './arrivals.ts';

export type DatasetSpec =
  | { kind: 'random'; inputLen: number; outputLen: number; rangeRatio?: number }
  | { kind: 'shared-prefix'; groups: number; prefixLen: number; suffixLen: number; outputLen: number }
  | { kind: 'jsonl'; path: string; outputLen?: number };

export interface SampleRequest {
  prompt: number[] | string;
  /** tokens sent; 0 when the prompt is text (the server's usage says) */
  promptLen: number;
  outputLen: number;
}

export interface Dataset {
  /** e.g. "random(in=128±0%, out=32)" */
  name: string;
  /** number of distinct entries when finite (JSONL lines); requests cycle through them */
  size?: number;
  sample(i: number): SampleRequest;
}

export interface DatasetContext {
  endpoint: 'completions' | 'chat';
  seed: number;
  /** token ids are drawn in [FIRST_ID, vocabSize) */
  vocabSize: number;
}

export class DatasetError extends Error {
  override name = 'DatasetError';
  readonly userFacing = true;
}

/** Low ids are special or control tokens in most vocabularies (<unk>, <s>, </s>, bytes …). */
export const FIRST_ID = 100;
export const DEFAULT_VOCAB_SIZE = 256;

/** A stream seeded by (seed, stream, index): independent per request and per purpose. */
function rngFor(seed: number, stream: number, i: number): Rng {
  let h = Math.imul(seed ^ 0x85ebca6b, 0xc2b2ae35) ^ Math.imul(stream + 1, 0x27d4eb2f) ^ Math.imul(i + 1, 0x165667b1);
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return new Rng((h ^ (h >>> 16)) >>> 0);
}

const SYLLABLES = ['ka', 'lo', 'mi', 'ne', 'ru', 'sa', 'ti', 'vo', 'de', 'pa', 'zu', 'ho', 'ge', 'fi', 'bo', 'ya'];

function tokens(rng: Rng, n: number, ctx: DatasetContext): number[] {
  const out = new Array<number>(n);
  for (let i = 0; i < n; i++) out[i] = rng.int(FIRST_ID, ctx.vocabSize - 1);
  return out;
}

/** n short random words: roughly one or two tokens each in a real vocabulary. */
function words(rng: Rng, n: number): string[] {
  const out = new Array<string>(n);
  for (let i = 0; i < n; i++) out[i] = SYLLABLES[rng.int(0, 15)]! + SYLLABLES[rng.int(0, 15)]!;
  return out;
}

function positiveInt(name: string, v: unknown, min = 1): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min) throw new DatasetError(`${name} must be an integer ≥ ${min}, got ${String(v)}`);
  return v;
}

export function makeDataset(spec: DatasetSpec, ctx: DatasetContext): Dataset {
  if (spec.kind !== 'jsonl' && ctx.endpoint === 'completions') {
    if (!Number.isInteger(ctx.vocabSize) || ctx.vocabSize <= FIRST_ID) {
      throw new DatasetError(`vocabSize must be an integer > ${FIRST_ID}, got ${ctx.vocabSize}`);
    }
  }
  switch (spec.kind) {
    case 'random':
      return randomDataset(spec, ctx);
    case 'shared-prefix':
      return sharedPrefixDataset(spec, ctx);
    case 'jsonl':
      return jsonlDataset(spec, ctx);
    default:
      throw new DatasetError(`unknown dataset kind '${(spec as { kind: unknown }).kind}'`);
  }
}

/** vLLM's random dataset: lengths uniform over [⌊len·(1−r)⌋, ⌈len·(1+r)⌉], output at least 1. */
function randomDataset(spec: Extract<DatasetSpec, { kind: 'random' }>, ctx: DatasetContext): Dataset {
  const inputLen = positiveInt('inputLen', spec.inputLen);
  const outputLen = positiveInt('outputLen', spec.outputLen);
  const r = spec.rangeRatio ?? 0;
  if (!(r >= 0 && r < 1)) throw new DatasetError(`rangeRatio must be in [0, 1), got ${r}`);
  const inLo = Math.max(1, Math.floor(inputLen * (1 - r)));
  const inHi = Math.ceil(inputLen * (1 + r));
  const outLo = Math.max(1, Math.floor(outputLen * (1 - r)));
  const outHi = Math.ceil(outputLen * (1 + r));
  return {
    name: `random(in=${inputLen}, out=${outputLen}${r ? `, range-ratio=${r}` : ''})`,
    sample(i) {
      const rng = rngFor(ctx.seed, 0, i);
      const n = rng.int(inLo, inHi);
      const out = rng.int(outLo, outHi);
      if (ctx.endpoint === 'chat') return { prompt: words(rng, n).join(' '), promptLen: 0, outputLen: out };
      return { prompt: tokens(rng, n, ctx), promptLen: n, outputLen: out };
    },
  };
}

/**
 * G groups, each a random prefix of P tokens; a request is its group's prefix + S fresh tokens. The
 * group is drawn at random per request (not i mod G, which a round-robin router would align with).
 */
function sharedPrefixDataset(spec: Extract<DatasetSpec, { kind: 'shared-prefix' }>, ctx: DatasetContext): Dataset {
  const groups = positiveInt('groups', spec.groups);
  const prefixLen = positiveInt('prefixLen', spec.prefixLen);
  const suffixLen = positiveInt('suffixLen', spec.suffixLen, 0);
  const outputLen = positiveInt('outputLen', spec.outputLen);
  const chat = ctx.endpoint === 'chat';
  const prefixes: (number[] | string[])[] = [];
  for (let g = 0; g < groups; g++) {
    const rng = rngFor(ctx.seed, 1, g);
    prefixes.push(chat ? words(rng, prefixLen) : tokens(rng, prefixLen, ctx));
  }
  return {
    name: `shared-prefix(groups=${groups}, prefix=${prefixLen}, suffix=${suffixLen}, out=${outputLen})`,
    sample(i) {
      const rng = rngFor(ctx.seed, 2, i);
      const g = rng.int(0, groups - 1);
      if (chat) return { prompt: [...(prefixes[g] as string[]), ...words(rng, suffixLen)].join(' '), promptLen: 0, outputLen };
      const prompt = [...(prefixes[g] as number[]), ...tokens(rng, suffixLen, ctx)];
      return { prompt, promptLen: prompt.length, outputLen };
    },
  };
}

/** One JSON object per line: {"prompt": string | number[], "output_len"?: number}; blank lines skipped. */
function jsonlDataset(spec: Extract<DatasetSpec, { kind: 'jsonl' }>, ctx: DatasetContext): Dataset {
  if (spec.outputLen !== undefined) positiveInt('outputLen', spec.outputLen);
  let text: string;
  try {
    text = readFileSync(spec.path, 'utf8');
  } catch (err) {
    throw new DatasetError(`cannot read dataset ${spec.path}: ${(err as Error).message}`);
  }
  const entries: SampleRequest[] = [];
  const lines = text.split('\n');
  for (let ln = 0; ln < lines.length; ln++) {
    const line = lines[ln]!.trim();
    if (!line) continue;
    const at = `${spec.path}:${ln + 1}`;
    let v: unknown;
    try {
      v = JSON.parse(line);
    } catch (err) {
      throw new DatasetError(`${at}: not valid JSON (${(err as Error).message})`);
    }
    if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new DatasetError(`${at}: expected a JSON object like {"prompt": "…"}`);
    const o = v as Record<string, unknown>;
    const p = o.prompt;
    let prompt: number[] | string;
    if (typeof p === 'string') {
      if (!p) throw new DatasetError(`${at}: "prompt" is empty`);
      prompt = p;
    } else if (Array.isArray(p)) {
      if (!p.length) throw new DatasetError(`${at}: "prompt" is an empty token list`);
      const bad = p.findIndex((t) => typeof t !== 'number' || !Number.isInteger(t) || t < 0);
      if (bad >= 0) throw new DatasetError(`${at}: "prompt"[${bad}] must be a token id (integer ≥ 0), got ${JSON.stringify(p[bad])}`);
      if (ctx.endpoint === 'chat') throw new DatasetError(`${at}: a token-id prompt needs the completions endpoint (chat takes text)`);
      prompt = p as number[];
    } else if (p === undefined) {
      throw new DatasetError(`${at}: missing "prompt"`);
    } else {
      throw new DatasetError(`${at}: "prompt" must be a string or an array of token ids, got ${typeof p}`);
    }
    let outputLen = spec.outputLen;
    if (o.output_len !== undefined) {
      if (typeof o.output_len !== 'number' || !Number.isInteger(o.output_len) || o.output_len < 1) {
        throw new DatasetError(`${at}: "output_len" must be an integer ≥ 1, got ${JSON.stringify(o.output_len)}`);
      }
      // an explicit --output-len overrides every line, as vLLM's --custom-output-len does
      outputLen ??= o.output_len;
    }
    if (outputLen === undefined) throw new DatasetError(`${at}: no "output_len" on the line and no output length given (--output-len)`);
    entries.push({ prompt, promptLen: typeof prompt === 'string' ? 0 : prompt.length, outputLen });
  }
  if (!entries.length) throw new DatasetError(`${spec.path}: no prompts (the file is empty)`);
  return {
    name: `jsonl(${spec.path}, ${entries.length} prompts)`,
    size: entries.length,
    sample: (i) => entries[i % entries.length]!,
  };
}
