// Hugging Face tokenizer.json with a BPE model, the SentencePiece-BPE export used by Llama, Mistral
// and TinyLlama: normalizer → (pre-tokenizer) → BPE by merge rank with byte fallback, and a decoder
// of Replace/ByteFallback/Fuse/Strip or Metaspace. Behaviour follows the tokenizers library, including
// where added tokens are matched (see splitAdded). Other families (ByteLevel GPT-2 style, WordPiece,
// Unigram) are refused at creation with a ModelLoadError naming the unsupported type.

import { ModelLoadError, type TokenizerSpec } from '../model/types.ts';
import {
  byteOfPiece,
  checkId,
  createStreamDecoder,
  decodeIds,
  utf8Bytes,
  type DecodeTable,
  type LeadingSpaceRule,
} from './detokenize.ts';
import { LiteralMatcher, type Fragment, type LiteralToken } from './literals.ts';
import { applyMerges, PairTable } from './merge.ts';
import type { Tokenizer } from './types.ts';

type HfSpec = Extract<TokenizerSpec, { kind: 'hf' }>;
type Json = Record<string, unknown>;

const FILE = 'tokenizer.json';
const CONFIG_FILE = 'tokenizer_config.json';

function fail(problem: string, file = FILE): never {
  throw new ModelLoadError(file, problem);
}

function isObject(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function obj(v: unknown, where: string): Json {
  if (!isObject(v)) fail(`${where} must be an object`);
  return v;
}

function str(v: unknown, where: string): string {
  if (typeof v !== 'string') fail(`${where} must be a string`);
  return v;
}

function optBool(v: unknown, where: string, dflt: boolean): boolean {
  if (v === undefined || v === null) return dflt;
  if (typeof v !== 'boolean') fail(`${where} must be a boolean`);
  return v;
}

function typeOf(v: Json, where: string): string {
  return str(v.type, `${where}.type`);
}

/** Replace's pattern: {"String": "x"} (literal) or {"Regex": "..."} (Oniguruma; JS syntax covers the common ones). */
function replacer(v: Json, where: string): (s: string) => string {
  const pattern = obj(v.pattern, `${where}.pattern`);
  const content = str(v.content, `${where}.content`);
  if (typeof pattern.String === 'string') {
    const from = pattern.String;
    if (from.length === 0) fail(`${where}: empty Replace pattern`);
    return (s) => s.replaceAll(from, content);
  }
  if (typeof pattern.Regex === 'string') {
    let re: RegExp;
    try {
      re = new RegExp(pattern.Regex, 'gu');
    } catch (err) {
      fail(`${where}: unsupported Replace regex ${JSON.stringify(pattern.Regex)}: ${(err as Error).message}`);
    }
    return (s) => s.replace(re, () => content);
  }
  fail(`${where}.pattern must have a String or Regex`);
}

// ---- normalizers ----

type Normalize = (s: string) => string;

function compileNormalizer(v: unknown, where = 'normalizer'): Normalize {
  if (v === null || v === undefined) return (s) => s;
  const n = obj(v, where);
  const type = typeOf(n, where);
  switch (type) {
    case 'Sequence': {
      const list = n.normalizers;
      if (!Array.isArray(list)) fail(`${where}.normalizers must be an array`);
      const steps = list.map((x, i) => compileNormalizer(x, `${where}.normalizers[${i}]`));
      return (s) => steps.reduce((acc, f) => f(acc), s);
    }
    case 'Prepend': {
      const prepend = str(n.prepend, `${where}.prepend`);
      return (s) => (s.length > 0 ? prepend + s : s);
    }
    case 'Replace':
      return replacer(n, where);
    case 'Strip': {
      const left = optBool(n.strip_left, `${where}.strip_left`, true);
      const right = optBool(n.strip_right, `${where}.strip_right`, true);
      return (s) => (left ? (right ? s.trim() : s.trimStart()) : right ? s.trimEnd() : s);
    }
    case 'NFC':
    case 'NFD':
    case 'NFKC':
    case 'NFKD':
      return (s) => s.normalize(type);
    case 'Lowercase':
      return (s) => s.toLowerCase();
    default:
      fail(`unsupported normalizer type ${type}`);
  }
}

// ---- pre-tokenizers ----

/** `first`: is this text at the very start of the input (Metaspace's prepend_scheme "first")? */
type PreTokenize = (s: string, first: boolean) => string[];

function prependScheme(m: Json, where: string): 'first' | 'always' | 'never' {
  const scheme = m.prepend_scheme;
  if (scheme === undefined || scheme === null) {
    // Files from before prepend_scheme existed say add_prefix_space instead.
    return optBool(m.add_prefix_space, `${where}.add_prefix_space`, true) ? 'always' : 'never';
  }
  if (scheme !== 'first' && scheme !== 'always' && scheme !== 'never') {
    fail(`${where}.prepend_scheme must be first, always or never, got ${JSON.stringify(scheme)}`);
  }
  return scheme;
}

function metaspaceReplacement(m: Json, where: string): string {
  const r = str(m.replacement ?? m.str_rep, `${where}.replacement`);
  if ([...r].length !== 1) fail(`${where}.replacement must be one character`);
  return r;
}

function compilePreTokenizer(v: unknown, where = 'pre_tokenizer'): PreTokenize {
  if (v === null || v === undefined) return (s) => [s];
  const p = obj(v, where);
  const type = typeOf(p, where);
  switch (type) {
    case 'Sequence': {
      const list = p.pretokenizers;
      if (!Array.isArray(list)) fail(`${where}.pretokenizers must be an array`);
      const steps = list.map((x, i) => compilePreTokenizer(x, `${where}.pretokenizers[${i}]`));
      return (s, first) =>
        steps.reduce<string[]>((words, f) => words.flatMap((w, i) => f(w, first && i === 0)), [s]);
    }
    case 'Metaspace': {
      const rep = metaspaceReplacement(p, where);
      const scheme = prependScheme(p, where);
      const split = optBool(p.split, `${where}.split`, true);
      return (s, first) => {
        let t = s.replaceAll(' ', rep);
        if ((scheme === 'always' || (scheme === 'first' && first)) && !t.startsWith(rep)) t = rep + t;
        if (!split) return t.length > 0 ? [t] : [];
        // Split before every replacement character; it stays with the word that follows it.
        const words: string[] = [];
        let start = 0;
        for (let i = t.indexOf(rep, 1); i >= 0; i = t.indexOf(rep, i + rep.length)) {
          if (i > start) words.push(t.slice(start, i));
          start = i;
        }
        if (start < t.length) words.push(t.slice(start));
        return words;
      };
    }
    default:
      fail(`unsupported pre_tokenizer type ${type}`);
  }
}

// ---- decoders ----

interface DecoderPlan {
  /** string steps applied to each token before byte fallback */
  perToken: ((s: string) => string)[];
  byteFallback: boolean;
  /** leading spaces removed from the fused text */
  stripLeft: number;
  /** Metaspace: the replacement character, removed entirely from the first token */
  firstTokenDrops?: string;
}

function compileDecoder(v: unknown, plan: DecoderPlan, fused: { yes: boolean }, where = 'decoder'): void {
  if (v === null || v === undefined) return;
  const d = obj(v, where);
  const type = typeOf(d, where);
  switch (type) {
    case 'Sequence': {
      const list = d.decoders;
      if (!Array.isArray(list)) fail(`${where}.decoders must be an array`);
      list.forEach((x, i) => compileDecoder(x, plan, fused, `${where}.decoders[${i}]`));
      return;
    }
    case 'Replace':
      plan.perToken.push(replacer(d, where));
      return;
    case 'ByteFallback':
      plan.byteFallback = true;
      return;
    case 'Fuse':
      fused.yes = true;
      return;
    case 'Strip': {
      const content = str(d.content, `${where}.content`);
      const start = d.start ?? 0;
      const stop = d.stop ?? 0;
      if (!Number.isInteger(start) || !Number.isInteger(stop) || (start as number) < 0 || (stop as number) < 0) {
        fail(`${where}: start and stop must be non-negative integers`);
      }
      if (content !== ' ') fail(`${where}: unsupported Strip content ${JSON.stringify(content)} (only ' ')`);
      if (fused.yes) {
        // Stripping the end of the whole text would need to see the future of a stream.
        if ((stop as number) > 0) fail(`${where}: unsupported Strip decoder with stop > 0 after Fuse`);
        plan.stripLeft += start as number;
      } else {
        const a = start as number;
        const b = stop as number;
        plan.perToken.push((s) => {
          let i = 0;
          let j = s.length;
          while (i < a && i < j && s[i] === ' ') i++;
          while (s.length - j < b && j > i && s[j - 1] === ' ') j--;
          return s.slice(i, j);
        });
      }
      return;
    }
    case 'Metaspace': {
      const rep = metaspaceReplacement(d, where);
      if (prependScheme(d, where) !== 'never') plan.firstTokenDrops = rep;
      plan.perToken.push((s) => s.replaceAll(rep, ' '));
      return;
    }
    default:
      fail(`unsupported decoder type ${type}`);
  }
}

// ---- the BPE model ----

interface AddedToken extends LiteralToken {
  special: boolean;
  normalized: boolean;
}

function parseAddedTokens(v: unknown): AddedToken[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) fail('added_tokens must be an array');
  return v.map((x, i) => {
    const t = obj(x, `added_tokens[${i}]`);
    const id = t.id;
    if (!Number.isInteger(id) || (id as number) < 0) fail(`added_tokens[${i}].id must be a non-negative integer`);
    const special = optBool(t.special, `added_tokens[${i}].special`, false);
    return {
      id: id as number,
      content: str(t.content, `added_tokens[${i}].content`),
      special,
      // tokenizers' default: special tokens are matched as written, others after normalization.
      normalized: optBool(t.normalized, `added_tokens[${i}].normalized`, !special),
      lstrip: optBool(t.lstrip, `added_tokens[${i}].lstrip`, false),
      rstrip: optBool(t.rstrip, `added_tokens[${i}].rstrip`, false),
    };
  });
}

/** bos_token / eos_token in tokenizer_config.json: a string, or an AddedToken-like {content}. */
function configToken(config: Json | undefined, key: string): string | undefined {
  const v = config?.[key];
  if (typeof v === 'string') return v;
  if (isObject(v) && typeof v.content === 'string') return v.content;
  if (v !== undefined && v !== null) fail(`${key} must be a string or an object with content`, CONFIG_FILE);
  return undefined;
}

function templateBos(postProcessor: unknown): { bos?: number; addsBos?: boolean } {
  if (!isObject(postProcessor)) return {};
  if (postProcessor.type === 'Sequence' && Array.isArray(postProcessor.processors)) {
    for (const p of postProcessor.processors) {
      const r = templateBos(p);
      if (r.addsBos !== undefined) return r;
    }
    return {};
  }
  if (postProcessor.type !== 'TemplateProcessing' || !Array.isArray(postProcessor.single)) return {};
  const firstItem: unknown = postProcessor.single[0];
  if (!isObject(firstItem) || !isObject(firstItem.SpecialToken)) return { addsBos: false };
  const name = firstItem.SpecialToken.id;
  const specials = isObject(postProcessor.special_tokens) ? postProcessor.special_tokens : {};
  const entry = typeof name === 'string' ? specials[name] : undefined;
  const ids = isObject(entry) && Array.isArray(entry.ids) ? entry.ids : [];
  return { addsBos: true, bos: Number.isInteger(ids[0]) ? (ids[0] as number) : undefined };
}

export function createHfTokenizer(spec: HfSpec): Tokenizer {
  const root = obj(spec.tokenizerJson, 'the root');
  const config = spec.tokenizerConfig === undefined || spec.tokenizerConfig === null
    ? undefined
    : isObject(spec.tokenizerConfig) ? spec.tokenizerConfig : fail('the root must be an object', CONFIG_FILE);

  const model = obj(root.model, 'model');
  const modelType = model.type ?? (model.merges !== undefined ? 'BPE' : undefined);
  if (modelType !== 'BPE') fail(`unsupported model type ${String(modelType)} (only BPE)`);
  for (const key of ['continuing_subword_prefix', 'end_of_word_suffix'] as const) {
    if (model[key] !== undefined && model[key] !== null && model[key] !== '') {
      fail(`unsupported model.${key} ${JSON.stringify(model[key])}`);
    }
  }
  const vocabJson = obj(model.vocab, 'model.vocab');
  const byteFallback = optBool(model.byte_fallback, 'model.byte_fallback', false);
  const fuseUnk = optBool(model.fuse_unk, 'model.fuse_unk', false);
  const ignoreMerges = optBool(model.ignore_merges, 'model.ignore_merges', false);

  const vocab = new Map<string, number>();
  let vocabSize = 0;
  for (const [piece, id] of Object.entries(vocabJson)) {
    if (!Number.isInteger(id) || (id as number) < 0) fail(`model.vocab[${JSON.stringify(piece)}] must be a non-negative integer`);
    vocab.set(piece, id as number);
    vocabSize = Math.max(vocabSize, (id as number) + 1);
  }
  const added = parseAddedTokens(root.added_tokens);
  for (const t of added) vocabSize = Math.max(vocabSize, t.id + 1);
  if (vocabSize === 0) fail('the vocabulary is empty');

  const pieces: string[] = new Array<string>(vocabSize).fill('');
  for (const [piece, id] of vocab) pieces[id] = piece;
  const special = new Uint8Array(vocabSize);
  for (const t of added) {
    pieces[t.id] = t.content;
    if (t.special) special[t.id] = 1;
  }

  const idOf = (content: string): number | undefined => added.find((t) => t.content === content)?.id ?? vocab.get(content);

  let unk: number | undefined;
  if (model.unk_token !== undefined && model.unk_token !== null) {
    unk = vocab.get(str(model.unk_token, 'model.unk_token'));
    if (unk === undefined) fail(`model.unk_token ${JSON.stringify(model.unk_token)} is not in the vocabulary`);
  }

  const byteId = new Int32Array(256).fill(-1);
  const isByte = new Uint8Array(vocabSize);
  if (byteFallback) {
    for (let b = 0; b < 256; b++) {
      const id = vocab.get(`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`);
      if (id !== undefined) {
        byteId[b] = id;
        isByte[id] = 1;
      }
    }
  }

  // Merge rank = position in the list. Special added tokens are never produced by merging.
  const merges = new PairTable();
  const mergeList = model.merges ?? [];
  if (!Array.isArray(mergeList)) fail('model.merges must be an array');
  mergeList.forEach((m: unknown, rank) => {
    let a: unknown;
    let b: unknown;
    if (typeof m === 'string') {
      const parts = m.split(' ');
      if (parts.length !== 2) fail(`model.merges[${rank}] ${JSON.stringify(m)} is not "left right"`);
      [a, b] = parts;
    } else if (Array.isArray(m) && m.length === 2) {
      [a, b] = m;
    } else {
      fail(`model.merges[${rank}] must be "left right" or [left, right]`);
    }
    if (typeof a !== 'string' || typeof b !== 'string') fail(`model.merges[${rank}] must hold two strings`);
    const left = vocab.get(a);
    const right = vocab.get(b);
    const merged = vocab.get(a + b);
    if (left === undefined || right === undefined || merged === undefined) {
      fail(`model.merges[${rank}] ${JSON.stringify(`${a} ${b}`)} names a piece missing from the vocabulary`);
    }
    if (special[merged] !== 1) merges.set(left, right, merged, rank);
  });

  const normalize = compileNormalizer(root.normalizer);
  const preTokenize = compilePreTokenizer(root.pre_tokenizer);

  const plan: DecoderPlan = { perToken: [], byteFallback: false, stripLeft: 0 };
  compileDecoder(root.decoder, plan, { yes: false });

  // ---- BOS / EOS ----
  const template = templateBos(root.post_processor);
  const resolve = (key: 'bos_token' | 'eos_token'): number | undefined => {
    const content = configToken(config, key);
    if (content === undefined) return undefined;
    const id = idOf(content);
    if (id === undefined) fail(`${key} ${JSON.stringify(content)} is not in the vocabulary`, CONFIG_FILE);
    return id;
  };
  const bos = resolve('bos_token') ?? spec.bos ?? template.bos ?? -1;
  const eos = resolve('eos_token') ?? spec.eos;
  if (eos === undefined) fail('no EOS token: tokenizer_config.json has no eos_token and none was given');
  const addBosSetting = config?.add_bos_token;
  if (addBosSetting !== undefined && addBosSetting !== null && typeof addBosSetting !== 'boolean') {
    fail('add_bos_token must be a boolean', CONFIG_FILE);
  }
  const addBos = addBosSetting ?? template.addsBos ?? bos >= 0;
  if (addBos && bos < 0) fail('add_bos_token is set but no BOS token is known');
  for (const [name, id] of [['bos', bos], ['eos', eos]] as const) {
    if (id >= vocabSize || (name === 'eos' && id < 0)) fail(`${name} id ${id} is outside the vocabulary of ${vocabSize}`);
  }
  const stopIds = [eos];
  const extraEos = config?.eos_token_id;
  for (const id of Array.isArray(extraEos) ? extraEos : [extraEos]) {
    if (Number.isInteger(id) && id >= 0 && id < vocabSize && !stopIds.includes(id)) stopIds.push(id);
  }

  // ---- encode ----
  // tokenizers matches added tokens in two passes: those with normalized=false in the raw text,
  // then those with normalized=true in the normalized text, against their own normalized content.
  // With Llama's Prepend("▁") normalizer that content is "▁<s>"-like, so such a token is found
  // at the start of the text or after a space, just as the reference library finds it.
  const literal = (keep: (t: AddedToken) => boolean, normal: boolean): LiteralToken[] =>
    added
      .filter((t) => t.normalized === normal && keep(t))
      .map((t) => ({ ...t, content: normal ? normalize(t.content) : t.content }));
  const nonSpecial = (t: AddedToken): boolean => !t.special;
  const all = (): boolean => true;
  const matchers = {
    raw: [new LiteralMatcher(literal(nonSpecial, false)), new LiteralMatcher(literal(all, false))],
    normalized: [new LiteralMatcher(literal(nonSpecial, true)), new LiteralMatcher(literal(all, true))],
  };

  const bpe = (word: string, out: number[]): void => {
    if (ignoreMerges) {
      const whole = vocab.get(word);
      if (whole !== undefined) {
        out.push(whole);
        return;
      }
    }
    const symbols: number[] = [];
    let lastWasUnk = false;
    for (const ch of word) {
      const id = vocab.get(ch);
      if (id !== undefined) {
        symbols.push(id);
        lastWasUnk = false;
        continue;
      }
      if (byteFallback) {
        const bs = utf8Bytes(ch);
        if (bs.every((b) => byteId[b]! >= 0)) {
          for (const b of bs) symbols.push(byteId[b]!);
          lastWasUnk = false;
          continue;
        }
      }
      if (unk === undefined) continue; // tokenizers drops characters it cannot represent
      if (!(fuseUnk && lastWasUnk)) symbols.push(unk);
      lastWasUnk = true;
    }
    for (const id of applyMerges(symbols, merges)) out.push(id);
  };

  const encode: Tokenizer['encode'] = (text, opts) => {
    if (typeof text !== 'string') throw new TypeError('text to encode must be a string');
    const which = opts?.parseSpecial ? 1 : 0;
    const out: number[] = [];
    if (opts?.addBos ?? addBos) {
      if (bos < 0) throw new RangeError('this tokenizer has no BOS token to add');
      out.push(bos);
    }
    for (const raw of matchers.raw[which]!.split(text)) {
      if (raw.kind === 'token') {
        out.push(raw.id);
        continue;
      }
      const parts: Fragment[] = matchers.normalized[which]!.split(normalize(raw.text));
      for (const part of parts) {
        if (part.kind === 'token') {
          out.push(part.id);
          continue;
        }
        for (const word of preTokenize(part.text, raw.start === 0 && part.start === 0)) bpe(word, out);
      }
    }
    return out;
  };

  // ---- decode ----
  const tokenString = (piece: string): string => plan.perToken.reduce((s, f) => f(s), piece);
  const toBytes = (piece: string): Uint8Array => {
    const b = plan.byteFallback ? byteOfPiece(piece) : -1;
    return b >= 0 ? Uint8Array.of(b) : utf8Bytes(tokenString(piece));
  };
  const bytes: Uint8Array[] = new Array(vocabSize);
  const addedIds = new Set(added.map((t) => t.id));
  for (let id = 0; id < vocabSize; id++) {
    bytes[id] = addedIds.has(id) ? utf8Bytes(pieces[id]!) : toBytes(pieces[id]!);
  }
  const drops = plan.firstTokenDrops;
  const leading: LeadingSpaceRule = plan.stripLeft > 0 ? { kind: 'text-start', count: plan.stripLeft } : { kind: 'none' };
  const table: DecodeTable = {
    bytes,
    special,
    isByte,
    leading,
    firstTokenBytes:
      drops === undefined
        ? undefined
        : (id) => (addedIds.has(id) || isByte[id] ? bytes[id]! : utf8Bytes(tokenString(pieces[id]!.replaceAll(drops, '')))),
  };

  return {
    vocabSize,
    bos,
    eos,
    stopIds,
    encode,
    decode: (ids, opts) => decodeIds(table, ids, opts?.keepSpecial ?? false),
    streamDecoder: (opts) => createStreamDecoder(table, opts?.keepSpecial ?? false, opts?.prefix ?? []),
    piece: (id) => {
      checkId(id, vocabSize);
      return pieces[id]!;
    },
  };
}
