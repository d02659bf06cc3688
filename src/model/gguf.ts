// GGUF (v2 and v3) reader: the header, metadata and tensor directory are parsed with bounds checks,
// then the Llama tensors are sliced out of the single in-memory copy of the file.
// Spec: https://github.com/ggml-org/ggml/blob/master/docs/gguf.md
import { ByteReader } from './reader.ts';
import { ModelLoadError } from './types.ts';
import type { LoadedModel, Matrix, ModelConfig, TokenizerSpec } from './types.ts';
import { buildWeights, shapeText, validateConfig, type TensorSlot } from './layout.ts';
import { f32At, Q8_0_BLOCK, Q8_0_BYTES, shortestF32, widenBf16, widenF16 } from './numeric.ts';
import { readBytes } from './files.ts';
import { readTokenizerOverride } from './tokenizer-files.ts';

export const GGUF_MAGIC = 0x46554747; // "GGUF" read as little-endian u32

export enum GgufValueType {
  UINT8 = 0,
  INT8 = 1,
  UINT16 = 2,
  INT16 = 3,
  UINT32 = 4,
  INT32 = 5,
  FLOAT32 = 6,
  BOOL = 7,
  STRING = 8,
  ARRAY = 9,
  UINT64 = 10,
  INT64 = 11,
  FLOAT64 = 12,
}

/** ggml tensor types by id; only F32, F16, BF16 and Q8_0 are loadable, the rest are named in errors. */
export const GGML_TYPE_NAMES: Record<number, string> = {
  0: 'F32', 1: 'F16', 2: 'Q4_0', 3: 'Q4_1', 6: 'Q5_0', 7: 'Q5_1', 8: 'Q8_0', 9: 'Q8_1', 10: 'Q2_K', 11: 'Q3_K',
  12: 'Q4_K', 13: 'Q5_K', 14: 'Q6_K', 15: 'Q8_K', 16: 'IQ2_XXS', 17: 'IQ2_XS', 18: 'IQ3_XXS', 19: 'IQ1_S',
  20: 'IQ4_NL', 21: 'IQ3_S', 22: 'IQ2_S', 23: 'IQ4_XS', 24: 'I8', 25: 'I16', 26: 'I32', 27: 'I64', 28: 'F64',
  29: 'IQ1_M', 30: 'BF16', 34: 'TQ1_0', 35: 'TQ2_0', 39: 'MXFP4',
};
export const GGML_F32 = 0;
export const GGML_F16 = 1;
export const GGML_Q8_0 = 8;
export const GGML_BF16 = 30;

export type GgufValue = number | bigint | boolean | string | GgufValue[] | Float32Array | Int32Array | Uint32Array;

export interface GgufTensorInfo {
  name: string;
  /** fastest-varying first, as stored: [cols, rows] for a row-major matrix */
  dims: number[];
  type: number;
  /** byte offset relative to the data section */
  offset: number;
}

export interface GgufFile {
  file: string;
  version: number;
  metadata: Map<string, GgufValue>;
  tensors: Map<string, GgufTensorInfo>;
  alignment: number;
  dataOffset: number;
  bytes: Uint8Array;
}

function readValue(r: ByteReader, type: number, key: string, depth = 0): GgufValue {
  switch (type) {
    case GgufValueType.UINT8: return r.u8(key);
    case GgufValueType.INT8: return r.i8(key);
    case GgufValueType.UINT16: return r.u16(key);
    case GgufValueType.INT16: return r.i16(key);
    case GgufValueType.UINT32: return r.u32(key);
    case GgufValueType.INT32: return r.i32(key);
    case GgufValueType.FLOAT32: return r.f32(key);
    case GgufValueType.BOOL: return r.u8(key) !== 0;
    case GgufValueType.STRING: return r.utf8(r.u64(`${key} length`), key);
    case GgufValueType.UINT64: return r.u64(key);
    case GgufValueType.INT64: return r.i64(key);
    case GgufValueType.FLOAT64: return r.f64(key);
    case GgufValueType.ARRAY: {
      if (depth > 4) throw new ModelLoadError(r.file, `metadata ${key}: arrays nested too deeply`);
      const itemType = r.u32(`${key} item type`);
      const n = r.u64(`${key} length`);
      // every element takes at least one byte: a count beyond the file is corrupt, not a huge allocation
      if (n > r.remaining) throw new ModelLoadError(r.file, `truncated: metadata ${key} claims ${n} elements but only ${r.remaining} bytes remain`);
      if (itemType === GgufValueType.FLOAT32 || itemType === GgufValueType.INT32 || itemType === GgufValueType.UINT32) {
        const raw = r.bytesOf(n * 4, key);
        const copy = raw.slice().buffer;
        return itemType === GgufValueType.FLOAT32 ? new Float32Array(copy) : itemType === GgufValueType.INT32 ? new Int32Array(copy) : new Uint32Array(copy);
      }
      const out: GgufValue[] = new Array(n);
      for (let i = 0; i < n; i++) out[i] = readValue(r, itemType, key, depth + 1);
      return out;
    }
    default:
      throw new ModelLoadError(r.file, `metadata ${key} has unknown value type ${type}`);
  }
}

function tensorBytes(file: string, t: GgufTensorInfo): number {
  const n = t.dims.reduce((a, b) => a * b, 1);
  switch (t.type) {
    case GGML_F32: return n * 4;
    case GGML_F16:
    case GGML_BF16: return n * 2;
    case GGML_Q8_0:
      if (t.dims[0]! % Q8_0_BLOCK !== 0)
        throw new ModelLoadError(file, `tensor ${t.name}: Q8_0 row length ${t.dims[0]} is not a multiple of ${Q8_0_BLOCK}`);
      return (n / Q8_0_BLOCK) * Q8_0_BYTES;
    default: {
      const name = GGML_TYPE_NAMES[t.type];
      throw new ModelLoadError(
        file,
        name
          ? `tensor ${t.name} has type ${t.type} (${name}), which is not supported (F32, F16, BF16, Q8_0 only)`
          : `tensor ${t.name} has unknown tensor type ${t.type}`,
      );
    }
  }
}

/** Parse the header, metadata and tensor directory. Tensor types and bounds are checked when a
 * tensor is read (tensorData), so files with extra tensors of other types still load. */
export function parseGguf(file: string, bytes: Uint8Array): GgufFile {
  const r = new ByteReader(file, bytes);
  const magic = r.u32('magic');
  if (magic !== GGUF_MAGIC) throw new ModelLoadError(file, `bad magic 0x${magic.toString(16).padStart(8, '0')}: not a GGUF file`);
  const version = r.u32('version');
  if (version !== 2 && version !== 3)
    throw new ModelLoadError(file, `unsupported GGUF version ${version} (2 and 3 are supported)`);
  const nTensors = r.u64('tensor count');
  const nKv = r.u64('metadata count');
  if (nTensors > r.remaining || nKv > r.remaining)
    throw new ModelLoadError(file, `truncated: header claims ${nTensors} tensors and ${nKv} metadata entries in a ${bytes.length}-byte file`);
  const metadata = new Map<string, GgufValue>();
  for (let i = 0; i < nKv; i++) {
    const key = r.utf8(r.u64(`metadata key ${i} length`), `metadata key ${i}`);
    const type = r.u32(`metadata ${key} type`);
    metadata.set(key, readValue(r, type, key));
  }
  const tensors = new Map<string, GgufTensorInfo>();
  for (let i = 0; i < nTensors; i++) {
    const name = r.utf8(r.u64(`tensor ${i} name length`), `tensor ${i} name`);
    const nDims = r.u32(`tensor ${name} dimension count`);
    if (nDims < 1 || nDims > 4) throw new ModelLoadError(file, `tensor ${name} has ${nDims} dimensions (1..4 allowed)`);
    const dims: number[] = [];
    for (let d = 0; d < nDims; d++) dims.push(r.u64(`tensor ${name} dimension ${d}`));
    const type = r.u32(`tensor ${name} type`);
    const offset = r.u64(`tensor ${name} offset`);
    if (tensors.has(name)) throw new ModelLoadError(file, `tensor ${name} appears twice`);
    tensors.set(name, { name, dims, type, offset });
  }
  const alignValue = metadata.get('general.alignment') ?? 32;
  const alignment = typeof alignValue === 'number' ? alignValue : NaN;
  if (!Number.isInteger(alignment) || alignment <= 0 || alignment & (alignment - 1))
    throw new ModelLoadError(file, `general.alignment must be a power of two, got ${String(alignValue)}`);
  const dataOffset = Math.ceil(r.pos / alignment) * alignment;
  const out: GgufFile = { file, version, metadata, tensors, alignment, dataOffset, bytes };
  return out;
}

/** Bounds- and type-check one tensor and return its bytes. */
function tensorData(g: GgufFile, t: GgufTensorInfo): Uint8Array {
  const size = tensorBytes(g.file, t);
  const start = g.dataOffset + t.offset;
  if (start + size > g.bytes.length)
    throw new ModelLoadError(
      g.file,
      `truncated: tensor ${t.name} needs bytes ${start}..${start + size} but the file has ${g.bytes.length} bytes`,
    );
  return g.bytes.subarray(start, start + size);
}

function widen(g: GgufFile, t: GgufTensorInfo, n: number): Float32Array {
  const data = tensorData(g, t);
  if (t.type === GGML_F32) return f32At(g.bytes, data.byteOffset - g.bytes.byteOffset, n);
  if (t.type === GGML_F16) return widenF16(data, 0, n);
  if (t.type === GGML_BF16) return widenBf16(data, 0, n);
  throw new ModelLoadError(g.file, `tensor ${t.name} has type ${GGML_TYPE_NAMES[t.type] ?? t.type}; norm weights must be F32, F16 or BF16`);
}

export function ggufMatrix(g: GgufFile, t: GgufTensorInfo): Matrix {
  const [cols, rows = 1] = t.dims;
  if (t.type === GGML_Q8_0) return { type: 'q8_0', rows, cols: cols!, data: tensorData(g, t).slice() };
  return { type: 'f32', rows, cols: cols!, data: widen(g, t, rows * cols!) };
}

function meta(g: GgufFile, key: string): GgufValue | undefined {
  return g.metadata.get(key);
}

function metaNumber(g: GgufFile, key: string, fallback?: number): number {
  const v = meta(g, key);
  if (v === undefined) {
    if (fallback !== undefined) return fallback;
    throw new ModelLoadError(g.file, `missing metadata ${key}`);
  }
  if (typeof v !== 'number') throw new ModelLoadError(g.file, `metadata ${key} must be a number, got ${describe(v)}`);
  return v;
}

function describe(v: GgufValue): string {
  if (Array.isArray(v) || ArrayBuffer.isView(v)) return `an array`;
  return JSON.stringify(typeof v === 'bigint' ? String(v) : v);
}

function ggufTokenizer(g: GgufFile, vocabSize: number): TokenizerSpec {
  const model = meta(g, 'tokenizer.ggml.model');
  if (model === undefined) throw new ModelLoadError(g.file, 'no tokenizer in the file (tokenizer.ggml.model missing); pass --tokenizer');
  if (model !== 'llama')
    throw new ModelLoadError(g.file, `tokenizer.ggml.model ${describe(model)} is not supported (llama/SentencePiece only); pass --tokenizer tokenizer.json`);
  const tokens = meta(g, 'tokenizer.ggml.tokens');
  if (!Array.isArray(tokens) || tokens.some((t) => typeof t !== 'string'))
    throw new ModelLoadError(g.file, 'tokenizer.ggml.tokens must be an array of strings');
  if (tokens.length !== vocabSize)
    throw new ModelLoadError(g.file, `tokenizer.ggml.tokens has ${tokens.length} tokens but token_embd has ${vocabSize} rows`);
  let scores = meta(g, 'tokenizer.ggml.scores');
  if (scores === undefined) scores = new Float32Array(vocabSize);
  if (!(scores instanceof Float32Array) || scores.length !== vocabSize)
    throw new ModelLoadError(g.file, `tokenizer.ggml.scores must be ${vocabSize} float32 values`);
  const types = meta(g, 'tokenizer.ggml.token_type');
  if (types !== undefined && (!(types instanceof Int32Array) || types.length !== vocabSize))
    throw new ModelLoadError(g.file, `tokenizer.ggml.token_type must be ${vocabSize} int32 values`);
  const id = (key: string, fallback: number) => {
    const v = metaNumber(g, key, fallback);
    if (!Number.isInteger(v) || v < 0 || v >= vocabSize) throw new ModelLoadError(g.file, `metadata ${key}=${v} is not a token id`);
    return v;
  };
  const flag = (key: string, fallback: boolean) => {
    const v = meta(g, key);
    if (v === undefined) return fallback;
    if (typeof v !== 'boolean') throw new ModelLoadError(g.file, `metadata ${key} must be a bool`);
    return v;
  };
  const spec: TokenizerSpec = {
    kind: 'spm',
    pieces: tokens as string[],
    scores,
    bos: id('tokenizer.ggml.bos_token_id', 1),
    eos: id('tokenizer.ggml.eos_token_id', 2),
    unk: id('tokenizer.ggml.unknown_token_id', 0),
    addBos: flag('tokenizer.ggml.add_bos_token', true),
    spaceChar: '\u2581',
    addDummyPrefix: flag('tokenizer.ggml.add_space_prefix', true),
  };
  if (types instanceof Int32Array) spec.tokenTypes = types;
  return spec;
}

function sameBytes(a: Matrix, b: Matrix): boolean {
  if (a.type !== b.type || a.rows !== b.rows || a.cols !== b.cols) return false;
  const x = Buffer.from(a.data.buffer, a.data.byteOffset, a.data.byteLength);
  const y = Buffer.from(b.data.buffer, b.data.byteOffset, b.data.byteLength);
  return x.equals(y);
}

export async function loadGguf(file: string, tokenizerPath: string | undefined): Promise<Omit<LoadedModel, 'name' | 'source' | 'fingerprint'>> {
  const g = parseGguf(file, await readBytes(file));
  const arch = meta(g, 'general.architecture');
  if (arch === undefined) throw new ModelLoadError(file, 'missing metadata general.architecture');
  if (arch !== 'llama') throw new ModelLoadError(file, `architecture ${describe(arch)} is not supported (llama only)`);
  if (g.tensors.has('rope_freqs.weight'))
    throw new ModelLoadError(file, 'has rope_freqs.weight (Llama 3 RoPE scaling), which is not supported');
  const scaling = meta(g, 'llama.rope.scaling.type');
  if (scaling !== undefined && scaling !== 'none')
    throw new ModelLoadError(file, `llama.rope.scaling.type ${describe(scaling)} is not supported`);

  const embd = g.tensors.get('token_embd.weight');
  if (!embd) throw new ModelLoadError(file, 'missing tensor token_embd.weight');
  const dim = metaNumber(g, 'llama.embedding_length');
  const nHeads = metaNumber(g, 'llama.attention.head_count');
  const config: ModelConfig = {
    architecture: 'llama',
    dim,
    hiddenDim: metaNumber(g, 'llama.feed_forward_length'),
    nLayers: metaNumber(g, 'llama.block_count'),
    nHeads,
    nKvHeads: metaNumber(g, 'llama.attention.head_count_kv', nHeads),
    headDim: metaNumber(g, 'llama.attention.key_length', metaNumber(g, 'llama.rope.dimension_count', nHeads > 0 ? dim / nHeads : 0)),
    vocabSize: metaNumber(g, 'llama.vocab_size', embd.dims[1] ?? 0),
    contextLength: metaNumber(g, 'llama.context_length'),
    ropeTheta: shortestF32(metaNumber(g, 'llama.rope.freq_base', 10000)),
    rmsEps: shortestF32(metaNumber(g, 'llama.attention.layer_norm_rms_epsilon')),
    // GGUF stores Q/K rows permuted for ggml's adjacent-pair ("normal") RoPE
    ropeStyle: 'interleaved',
    tiedEmbeddings: !g.tensors.has('output.weight'),
  };
  validateConfig(file, config, {
    dim: 'llama.embedding_length',
    hiddenDim: 'llama.feed_forward_length',
    nLayers: 'llama.block_count',
    nHeads: 'llama.attention.head_count',
    nKvHeads: 'llama.attention.head_count_kv',
    headDim: 'llama.rope.dimension_count',
    vocabSize: 'llama.vocab_size',
    contextLength: 'llama.context_length',
    rmsEps: 'llama.attention.layer_norm_rms_epsilon',
    ropeTheta: 'llama.rope.freq_base',
  });
  const ropeDims = meta(g, 'llama.rope.dimension_count');
  if (ropeDims !== undefined && ropeDims !== config.headDim)
    throw new ModelLoadError(file, `llama.rope.dimension_count=${String(ropeDims)} differs from the head dimension ${config.headDim} (partial RoPE is not supported)`);

  const fetch = (slot: TensorSlot) => {
    const t = g.tensors.get(slot.name);
    if (!t) throw new ModelLoadError(file, `missing tensor ${slot.name}`);
    const expected = [...slot.shape].reverse(); // GGUF lists dims fastest-first
    const actual = t.dims.length === 2 && t.dims[1] === 1 && slot.kind === 'vector' ? [t.dims[0]!] : t.dims;
    if (actual.length !== expected.length || actual.some((d, i) => d !== expected[i]))
      throw new ModelLoadError(file, `tensor ${slot.name} has shape ${shapeText(t.dims)}, expected ${shapeText(expected)} (GGUF order, fastest dim first)`);
    return slot.kind === 'vector' ? widen(g, t, slot.shape[0]) : ggufMatrix(g, t);
  };
  let weights = buildWeights(config, fetch);
  // llama.cpp's llama2.c converter writes output.weight as a copy of the embedding: keep one copy
  // and call it tied, so the model (and its fingerprint) equals the checkpoint it came from
  if (!config.tiedEmbeddings && sameBytes(weights.output, weights.tokenEmbedding)) {
    config.tiedEmbeddings = true;
    weights = { ...weights, output: weights.tokenEmbedding };
  }

  let tokenizer: TokenizerSpec;
  let chatTemplate: string | undefined;
  if (tokenizerPath) {
    const bos = meta(g, 'tokenizer.ggml.bos_token_id');
    const eos = meta(g, 'tokenizer.ggml.eos_token_id');
    const t = await readTokenizerOverride(tokenizerPath, config.vocabSize, {
      ...(typeof bos === 'number' ? { bos } : {}),
      ...(typeof eos === 'number' ? { eos } : {}),
    });
    tokenizer = t.spec;
    chatTemplate = t.chatTemplate;
  } else tokenizer = ggufTokenizer(g, config.vocabSize);
  const tmpl = meta(g, 'tokenizer.chat_template');
  if (chatTemplate === undefined && typeof tmpl === 'string') chatTemplate = tmpl;
  return { format: 'gguf', config, weights, tokenizer, ...(chatTemplate !== undefined ? { chatTemplate } : {}) };
}
