// GGUF v3 writer, producing files llama.cpp loads as a 'llama' model. Because GGUF implies ggml's
// adjacent-pair RoPE, a Hugging Face ('neox') model has its Q/K rows permuted on export exactly as
// llama.cpp's convert_hf_to_gguf does; the result reads back as ropeStyle 'interleaved'.
import { rename, unlink, writeFile } from 'node:fs/promises';
import { GGML_F32, GGML_Q8_0, GgufValueType } from './gguf.ts';
import { permuteRopeRows, slotTensor, tensorSlots } from './layout.ts';
import { dequantizeQ8_0, f32Bytes, Q8_0_BLOCK, quantizeQ8_0 } from './numeric.ts';
import { deriveTokenTypes } from './tokenizer-files.ts';
import type { LoadedModel, Matrix, TokenizerSpec } from './types.ts';
import { isObject } from './files.ts';

export type GgufMetaValue =
  | { type: 'string'; value: string }
  | { type: 'u32'; value: number }
  | { type: 'i32'; value: number }
  | { type: 'f32'; value: number }
  | { type: 'bool'; value: boolean }
  | { type: 'string[]'; value: readonly string[] }
  | { type: 'f32[]'; value: ArrayLike<number> }
  | { type: 'i32[]'; value: ArrayLike<number> };

export interface GgufTensorOut {
  name: string;
  /** fastest-varying first ([cols, rows] for a matrix) */
  dims: number[];
  /** ggml type id */
  type: number;
  data: Uint8Array;
}

const ALIGNMENT = 32;
const enc = new TextEncoder();

/** Serialize metadata and tensors into GGUF v3 bytes (low level: no Llama knowledge, no checks
 * beyond layout; tests use it to craft corrupt files). */
export function serializeGguf(metadata: [string, GgufMetaValue][], tensors: GgufTensorOut[], version = 3): Uint8Array {
  const chunks: Uint8Array[] = [];
  let size = 0;
  const push = (b: Uint8Array) => {
    chunks.push(b);
    size += b.length;
  };
  const scalar = (bytes: number, set: (v: DataView) => void) => {
    const b = new Uint8Array(bytes);
    set(new DataView(b.buffer));
    push(b);
  };
  const u32 = (v: number) => scalar(4, (d) => d.setUint32(0, v, true));
  const u64 = (v: number) => scalar(8, (d) => d.setBigUint64(0, BigInt(v), true));
  const str = (s: string) => {
    const b = enc.encode(s);
    u64(b.length);
    push(b);
  };
  u32(0x46554747);
  u32(version);
  u64(tensors.length);
  u64(metadata.length);
  for (const [key, v] of metadata) {
    str(key);
    switch (v.type) {
      case 'string':
        u32(GgufValueType.STRING);
        str(v.value);
        break;
      case 'u32':
        u32(GgufValueType.UINT32);
        u32(v.value);
        break;
      case 'i32':
        u32(GgufValueType.INT32);
        scalar(4, (d) => d.setInt32(0, v.value, true));
        break;
      case 'f32':
        u32(GgufValueType.FLOAT32);
        scalar(4, (d) => d.setFloat32(0, v.value, true));
        break;
      case 'bool':
        u32(GgufValueType.BOOL);
        push(Uint8Array.of(v.value ? 1 : 0));
        break;
      case 'string[]':
        u32(GgufValueType.ARRAY);
        u32(GgufValueType.STRING);
        u64(v.value.length);
        for (const s of v.value) str(s);
        break;
      case 'f32[]':
      case 'i32[]': {
        u32(GgufValueType.ARRAY);
        u32(v.type === 'f32[]' ? GgufValueType.FLOAT32 : GgufValueType.INT32);
        u64(v.value.length);
        const arr = v.type === 'f32[]' ? Float32Array.from(v.value) : Int32Array.from(v.value);
        push(new Uint8Array(arr.buffer));
        break;
      }
    }
  }
  let offset = 0;
  const offsets: number[] = [];
  for (const t of tensors) {
    str(t.name);
    u32(t.dims.length);
    for (const d of t.dims) u64(d);
    u32(t.type);
    offsets.push(offset);
    u64(offset);
    offset = Math.ceil((offset + t.data.length) / ALIGNMENT) * ALIGNMENT;
  }
  const dataStart = Math.ceil(size / ALIGNMENT) * ALIGNMENT;
  const out = new Uint8Array(dataStart + offset);
  let p = 0;
  for (const c of chunks) {
    out.set(c, p);
    p += c.length;
  }
  tensors.forEach((t, i) => out.set(t.data, dataStart + offsets[i]!));
  return out;
}

/** An 'hf' tokenizer.json as a SentencePiece-style GGUF vocab. llama.cpp's 'llama' tokenizer merges
 * the adjacent pair whose merged piece has the highest score, so each piece produced by BPE merge r
 * gets score -r (earlier merges win, as in BPE); other pieces score 0. This reproduces the BPE
 * result except where one merged string is reachable through two different merges. (llama.cpp's
 * own converter writes placeholder scores of -1000 here, which makes its tokenization poor.) */
function hfToSpm(spec: Extract<TokenizerSpec, { kind: 'hf' }>, vocabSize: number): Extract<TokenizerSpec, { kind: 'spm' }> {
  const tj = spec.tokenizerJson as Record<string, unknown>;
  const model = (isObject(tj) && isObject(tj.model) ? tj.model : {}) as Record<string, unknown>;
  const vocab = isObject(model.vocab) ? (model.vocab as Record<string, number>) : {};
  const pieces: string[] = Array.from({ length: vocabSize }, (_, i) => `[PAD${i}]`);
  const tokenTypes = new Int32Array(vocabSize).fill(5); // unused until named
  const idOf = new Map<string, number>();
  for (const [piece, id] of Object.entries(vocab)) {
    if (id >= 0 && id < vocabSize) {
      pieces[id] = piece;
      tokenTypes[id] = /^<0x[0-9A-Fa-f]{2}>$/.test(piece) ? 6 : 1;
      idOf.set(piece, id);
    }
  }
  const added = Array.isArray(tj.added_tokens) ? tj.added_tokens : [];
  for (const a of added) {
    if (isObject(a) && Number.isInteger(a.id) && typeof a.content === 'string' && (a.id as number) < vocabSize) {
      pieces[a.id as number] = a.content;
      tokenTypes[a.id as number] = a.special === true ? 3 : 4;
      idOf.set(a.content, a.id as number);
    }
  }
  const scores = new Float32Array(vocabSize);
  const merges = Array.isArray(model.merges) ? model.merges : [];
  const scored = new Set<number>();
  merges.forEach((m, rank) => {
    const pair = typeof m === 'string' ? m.split(' ') : Array.isArray(m) ? m : [];
    const id = idOf.get(pair.join(''));
    if (pair.length === 2 && id !== undefined && !scored.has(id)) {
      scored.add(id);
      scores[id] = -(rank + 1);
    }
  });
  const cfg = isObject(spec.tokenizerConfig) ? spec.tokenizerConfig : {};
  const tokenName = (v: unknown) => (typeof v === 'string' ? v : isObject(v) && typeof v.content === 'string' ? v.content : undefined);
  const lookup = (v: unknown) => {
    const n = tokenName(v);
    return n === undefined ? undefined : idOf.get(n);
  };
  const unk = lookup(model.unk_token) ?? 0;
  // like llama.cpp's converter, a special added <unk> stays 'control'
  if (tokenTypes[unk] !== undefined && tokenTypes[unk] !== 3) tokenTypes[unk] = 2;
  const normalizer = JSON.stringify(tj.normalizer ?? null);
  return {
    kind: 'spm',
    pieces,
    scores,
    tokenTypes,
    bos: lookup(cfg.bos_token) ?? spec.bos ?? 1,
    eos: lookup(cfg.eos_token) ?? spec.eos ?? 2,
    unk,
    addBos: typeof cfg.add_bos_token === 'boolean' ? cfg.add_bos_token : true,
    spaceChar: '\u2581',
    addDummyPrefix: normalizer.includes('"Prepend"') && normalizer.includes('\u2581'),
  };
}

function tokenizerMetadata(model: LoadedModel): [string, GgufMetaValue][] {
  let spm = model.tokenizer.kind === 'hf' ? hfToSpm(model.tokenizer, model.config.vocabSize) : model.tokenizer;
  let pieces = spm.pieces;
  if (spm.spaceChar !== '\u2581') {
    // llama2.c vocabularies spell spaces ' ' and wrap BOS/EOS in newlines ("\n<s>\n")
    const control = new Set([spm.bos, spm.eos, spm.unk]);
    pieces = pieces.map((p, i) => (control.has(i) ? p.trim() : p.split(spm.spaceChar).join('\u2581')));
    spm = { ...spm, pieces };
  }
  const types = spm.tokenTypes ?? deriveTokenTypes(pieces, spm);
  return [
    ['tokenizer.ggml.model', { type: 'string', value: 'llama' }],
    ['tokenizer.ggml.tokens', { type: 'string[]', value: pieces }],
    ['tokenizer.ggml.scores', { type: 'f32[]', value: spm.scores }],
    ['tokenizer.ggml.token_type', { type: 'i32[]', value: types }],
    ['tokenizer.ggml.bos_token_id', { type: 'u32', value: spm.bos }],
    ['tokenizer.ggml.eos_token_id', { type: 'u32', value: spm.eos }],
    ['tokenizer.ggml.unknown_token_id', { type: 'u32', value: spm.unk }],
    ['tokenizer.ggml.add_bos_token', { type: 'bool', value: spm.addBos }],
    ['tokenizer.ggml.add_space_prefix', { type: 'bool', value: spm.addDummyPrefix }],
  ];
}

export interface WriteGgufOptions {
  /** tensor type for matrices: 'f32' (default) or 'q8_0' (matrices whose rows are not a multiple
   * of 32 values stay F32, as llama.cpp's converter falls back; norms are always F32) */
  type?: 'f32' | 'q8_0';
}

function tensorOut(name: string, m: Matrix | Float32Array, type: 'f32' | 'q8_0'): GgufTensorOut {
  if (m instanceof Float32Array) return { name, dims: [m.length], type: GGML_F32, data: f32Bytes(m) };
  const dims = [m.cols, m.rows];
  if (type === 'q8_0' && m.cols % Q8_0_BLOCK === 0) {
    const data = m.type === 'q8_0' ? m.data : quantizeQ8_0(m.data, m.rows, m.cols);
    return { name, dims, type: GGML_Q8_0, data };
  }
  const f32 = m.type === 'f32' ? m.data : dequantizeQ8_0(m.data, m.rows, m.cols);
  return { name, dims, type: GGML_F32, data: f32Bytes(f32) };
}

/** The GGUF bytes for a model (see writeGguf). */
export function encodeGguf(model: LoadedModel, opts: WriteGgufOptions = {}): Uint8Array {
  const { metadata, tensors } = ggufParts(model, opts);
  return serializeGguf(metadata, tensors);
}

/** The metadata and tensors writeGguf would write (tests alter them to craft bad files). */
export function ggufParts(model: LoadedModel, opts: WriteGgufOptions = {}): { metadata: [string, GgufMetaValue][]; tensors: GgufTensorOut[] } {
  const c = model.config;
  const type = opts.type ?? 'f32';
  const metadata: [string, GgufMetaValue][] = [
    ['general.architecture', { type: 'string', value: 'llama' }],
    ['general.name', { type: 'string', value: model.name }],
    ['general.alignment', { type: 'u32', value: ALIGNMENT }],
    // llama.cpp's llama_ftype: 0 = all F32, 7 = mostly Q8_0
    ['general.file_type', { type: 'u32', value: type === 'q8_0' ? 7 : 0 }],
    ['llama.context_length', { type: 'u32', value: c.contextLength }],
    ['llama.embedding_length', { type: 'u32', value: c.dim }],
    ['llama.block_count', { type: 'u32', value: c.nLayers }],
    ['llama.feed_forward_length', { type: 'u32', value: c.hiddenDim }],
    ['llama.rope.dimension_count', { type: 'u32', value: c.headDim }],
    ['llama.attention.head_count', { type: 'u32', value: c.nHeads }],
    ['llama.attention.head_count_kv', { type: 'u32', value: c.nKvHeads }],
    ['llama.attention.layer_norm_rms_epsilon', { type: 'f32', value: c.rmsEps }],
    ['llama.rope.freq_base', { type: 'f32', value: c.ropeTheta }],
    ['llama.vocab_size', { type: 'u32', value: c.vocabSize }],
  ];
  if (c.headDim * c.nHeads !== c.dim) {
    metadata.push(['llama.attention.key_length', { type: 'u32', value: c.headDim }]);
    metadata.push(['llama.attention.value_length', { type: 'u32', value: c.headDim }]);
  }
  if (type === 'q8_0') metadata.push(['general.quantization_version', { type: 'u32', value: 2 }]);
  metadata.push(...tokenizerMetadata(model));
  if (model.chatTemplate !== undefined) metadata.push(['tokenizer.chat_template', { type: 'string', value: model.chatTemplate }]);

  const tensors = tensorSlots(c).map((slot) => {
    let t = slotTensor(model.weights, slot.name);
    if (c.ropeStyle === 'neox' && !(t instanceof Float32Array)) {
      if (slot.name.endsWith('.attn_q.weight')) t = permuteRopeRows(t, c.nHeads);
      else if (slot.name.endsWith('.attn_k.weight')) t = permuteRopeRows(t, c.nKvHeads);
    }
    return tensorOut(slot.name, t, type);
  });
  return { metadata, tensors };
}

/** Write `model` as a GGUF v3 file llama.cpp can load (atomically: a temp file, then rename). */
export async function writeGguf(model: LoadedModel, path: string, opts: WriteGgufOptions = {}): Promise<{ bytes: number; tensors: number }> {
  const bytes = encodeGguf(model, opts);
  const tmp = `${path}.tmp-${process.pid}`;
  try {
    await writeFile(tmp, bytes);
    await rename(tmp, path);
  } catch (err) {
    await unlink(tmp).catch(() => {});
    const code = (err as NodeJS.ErrnoException)?.code ?? 'error';
    throw Object.assign(new Error(`${path}: cannot write (${code})`), { userFacing: true });
  }
  return { bytes: bytes.length, tensors: tensorSlots(model.config).length };
}
