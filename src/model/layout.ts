// The canonical list of a Llama model's tensors, named as in GGUF. One list drives loading
// (what each format must supply, with the expected shape), the fingerprint (hash order), the
// GGUF writer and the synthetic generator, so they cannot drift apart.
import type { LayerWeights, Matrix, ModelConfig, ModelWeights } from './types.ts';
import { ModelLoadError } from './types.ts';

export interface TensorSlot {
  /** GGUF tensor name, e.g. blk.3.attn_q.weight */
  name: string;
  kind: 'matrix' | 'vector';
  /** [rows, cols] for matrices (rows = outputs), [n] for vectors */
  shape: [number, number] | [number];
}

type LayerKey = keyof LayerWeights;
const LAYER_TENSORS: [LayerKey, string][] = [
  ['attnNorm', 'attn_norm'],
  ['wq', 'attn_q'],
  ['wk', 'attn_k'],
  ['wv', 'attn_v'],
  ['wo', 'attn_output'],
  ['ffnNorm', 'ffn_norm'],
  ['w1', 'ffn_gate'],
  ['w2', 'ffn_down'],
  ['w3', 'ffn_up'],
];

function layerShape(c: ModelConfig, key: LayerKey): [number, number] | [number] {
  const q = c.nHeads * c.headDim;
  const kv = c.nKvHeads * c.headDim;
  switch (key) {
    case 'attnNorm':
    case 'ffnNorm':
      return [c.dim];
    case 'wq':
      return [q, c.dim];
    case 'wk':
    case 'wv':
      return [kv, c.dim];
    case 'wo':
      return [c.dim, q];
    case 'w1':
    case 'w3':
      return [c.hiddenDim, c.dim];
    case 'w2':
      return [c.dim, c.hiddenDim];
  }
}

/** Every tensor in canonical order: token_embd, then per block attn_norm, attn_q, attn_k, attn_v,
 * attn_output, ffn_norm, ffn_gate, ffn_down, ffn_up, then output_norm and (untied only) output. */
export function tensorSlots(c: ModelConfig): TensorSlot[] {
  const out: TensorSlot[] = [{ name: 'token_embd.weight', kind: 'matrix', shape: [c.vocabSize, c.dim] }];
  for (let l = 0; l < c.nLayers; l++) {
    for (const [key, gg] of LAYER_TENSORS) {
      const shape = layerShape(c, key);
      out.push({ name: `blk.${l}.${gg}.weight`, kind: shape.length === 2 ? 'matrix' : 'vector', shape });
    }
  }
  out.push({ name: 'output_norm.weight', kind: 'vector', shape: [c.dim] });
  if (!c.tiedEmbeddings) out.push({ name: 'output.weight', kind: 'matrix', shape: [c.vocabSize, c.dim] });
  return out;
}

/** The tensor a slot names inside loaded weights. */
export function slotTensor(w: ModelWeights, name: string): Matrix | Float32Array {
  if (name === 'token_embd.weight') return w.tokenEmbedding;
  if (name === 'output_norm.weight') return w.finalNorm;
  if (name === 'output.weight') return w.output;
  const m = /^blk\.(\d+)\.(\w+)\.weight$/.exec(name);
  const entry = m && LAYER_TENSORS.find(([, gg]) => gg === m[2]);
  const layer = m && w.layers[Number(m[1])];
  if (!entry || !layer) throw new Error(`no tensor slot ${name}`);
  return layer[entry[0]];
}

export type SlotFetcher = (slot: TensorSlot) => Matrix | Float32Array;

/** Assemble weights from a format-specific fetcher (which checks shapes against slot.shape). */
export function buildWeights(c: ModelConfig, fetch: SlotFetcher): ModelWeights {
  const byName = new Map<string, Matrix | Float32Array>();
  for (const slot of tensorSlots(c)) byName.set(slot.name, fetch(slot));
  const get = <T>(name: string) => byName.get(name) as T;
  const layers: LayerWeights[] = [];
  for (let l = 0; l < c.nLayers; l++) {
    const layer = {} as Record<LayerKey, Matrix | Float32Array>;
    for (const [key, gg] of LAYER_TENSORS) layer[key] = get(`blk.${l}.${gg}.weight`);
    layers.push(layer as unknown as LayerWeights);
  }
  const tokenEmbedding = get<Matrix>('token_embd.weight');
  return {
    tokenEmbedding,
    layers,
    finalNorm: get<Float32Array>('output_norm.weight'),
    output: c.tiedEmbeddings ? tokenEmbedding : get<Matrix>('output.weight'),
  };
}

/** Check the architectural numbers every format supplies; the problem names the source field. */
export function validateConfig(file: string, c: ModelConfig, fields: Partial<Record<keyof ModelConfig, string>> = {}): void {
  const name = (k: keyof ModelConfig) => fields[k] ?? k;
  const ints: (keyof ModelConfig)[] = ['dim', 'hiddenDim', 'nLayers', 'nHeads', 'nKvHeads', 'headDim', 'vocabSize', 'contextLength'];
  for (const k of ints) {
    const v = c[k] as number;
    if (!Number.isSafeInteger(v) || v <= 0 || v > 1 << 24) throw new ModelLoadError(file, `${name(k)} must be a positive integer, got ${v}`);
  }
  if (c.nHeads % c.nKvHeads !== 0)
    throw new ModelLoadError(file, `${name('nHeads')}=${c.nHeads} is not a multiple of ${name('nKvHeads')}=${c.nKvHeads}`);
  if (c.headDim % 2 !== 0) throw new ModelLoadError(file, `head dimension ${c.headDim} must be even for RoPE`);
  if (!(c.rmsEps > 0 && c.rmsEps < 1)) throw new ModelLoadError(file, `${name('rmsEps')} must be in (0, 1), got ${c.rmsEps}`);
  if (!(c.ropeTheta > 0) || !Number.isFinite(c.ropeTheta))
    throw new ModelLoadError(file, `${name('ropeTheta')} must be positive, got ${c.ropeTheta}`);
}

export function matrixBytes(m: Matrix): number {
  return m.data.byteLength;
}

export function shapeText(shape: readonly number[]): string {
  return `[${shape.join(', ')}]`;
}

/** Permute the rows of a Q or K projection between Hugging Face's rotate-half order and GGUF's
 * adjacent-pair order (llama.cpp convert_hf_to_gguf's `permute`): within each head, GGUF row 2i
 * is HF row i and GGUF row 2i+1 is HF row i + headDim/2. `inverse` goes GGUF → HF. */
export function permuteRopeRows(m: Matrix, nHeads: number, inverse = false): Matrix {
  const headDim = m.rows / nHeads;
  const half = headDim / 2;
  const rowBytes = m.data.byteLength / m.rows;
  const src = new Uint8Array(m.data.buffer, m.data.byteOffset, m.data.byteLength);
  const dst = new Uint8Array(m.data.byteLength);
  for (let h = 0; h < nHeads; h++) {
    for (let i = 0; i < half; i++) {
      for (let j = 0; j < 2; j++) {
        const gguf = h * headDim + 2 * i + j;
        const hf = h * headDim + j * half + i;
        const [to, from] = inverse ? [hf, gguf] : [gguf, hf];
        dst.set(src.subarray(from * rowBytes, (from + 1) * rowBytes), to * rowBytes);
      }
    }
  }
  return m.type === 'f32'
    ? { type: 'f32', rows: m.rows, cols: m.cols, data: new Float32Array(dst.buffer) }
    : { type: 'q8_0', rows: m.rows, cols: m.cols, data: dst };
}
