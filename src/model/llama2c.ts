// llama2.c checkpoints (Karpathy's run.c "version 0" format): 7 int32 header fields, then f32
// tensors in a fixed order. The header is validated against the file size before any tensor is
// touched, so a truncated or foreign file is reported instead of misread.
import { dirname, join } from 'node:path';
import { kindOf, readBytes } from './files.ts';
import { buildWeights, shapeText, validateConfig } from './layout.ts';
import { f32At } from './numeric.ts';
import { ByteReader } from './reader.ts';
import { readLlama2cTokenizer, readTokenizerOverride } from './tokenizer-files.ts';
import type { LoadedModel, Matrix, ModelConfig } from './types.ts';
import { ModelLoadError } from './types.ts';

export type LoadedParts = Omit<LoadedModel, 'name' | 'source' | 'fingerprint'>;

const HEADER_BYTES = 28;

/** Tensor sizes in floats, in file order. `perLayer` tensors are stored layer-major for all layers at once. */
function fileLayout(c: ModelConfig, seqLen: number, sharedClassifier: boolean) {
  const kvDim = c.nKvHeads * c.headDim;
  const L = c.nLayers;
  const parts: { key: string; floats: number }[] = [
    { key: 'token_embedding', floats: c.vocabSize * c.dim },
    { key: 'rms_att', floats: L * c.dim },
    { key: 'wq', floats: L * c.dim * c.dim },
    { key: 'wk', floats: L * kvDim * c.dim },
    { key: 'wv', floats: L * kvDim * c.dim },
    { key: 'wo', floats: L * c.dim * c.dim },
    { key: 'rms_ffn', floats: L * c.dim },
    { key: 'w1', floats: L * c.hiddenDim * c.dim },
    { key: 'w2', floats: L * c.dim * c.hiddenDim },
    { key: 'w3', floats: L * c.hiddenDim * c.dim },
    { key: 'rms_final', floats: c.dim },
  ];
  const freqCis = seqLen * c.headDim; // freq_cis_real + freq_cis_imag, seq_len × head_size/2 each
  const wcls = sharedClassifier ? 0 : c.vocabSize * c.dim;
  const weights = parts.reduce((s, p) => s + p.floats, 0);
  return { parts, freqCis, wcls, withFreq: HEADER_BYTES + 4 * (weights + freqCis + wcls), withoutFreq: HEADER_BYTES + 4 * (weights + wcls) };
}

export async function loadLlama2c(file: string, tokenizerPath: string | undefined): Promise<LoadedParts> {
  const bytes = await readBytes(file);
  const r = new ByteReader(file, bytes);
  const names = ['dim', 'hidden_dim', 'n_layers', 'n_heads', 'n_kv_heads', 'vocab_size', 'seq_len'] as const;
  const h = {} as Record<(typeof names)[number], number>;
  for (const n of names) h[n] = r.i32(`header field ${n}`);
  const sharedClassifier = h.vocab_size > 0;
  const config: ModelConfig = {
    architecture: 'llama',
    dim: h.dim,
    hiddenDim: h.hidden_dim,
    nLayers: h.n_layers,
    nHeads: h.n_heads,
    nKvHeads: h.n_kv_heads,
    headDim: h.n_heads > 0 ? h.dim / h.n_heads : 0,
    vocabSize: Math.abs(h.vocab_size),
    contextLength: h.seq_len,
    ropeTheta: 10000,
    rmsEps: 1e-5,
    ropeStyle: 'interleaved',
    tiedEmbeddings: sharedClassifier,
  };
  validateConfig(file, config, {
    dim: 'dim',
    hiddenDim: 'hidden_dim',
    nLayers: 'n_layers',
    nHeads: 'n_heads',
    nKvHeads: 'n_kv_heads',
    vocabSize: 'vocab_size',
    contextLength: 'seq_len',
    headDim: 'dim/n_heads',
  });

  const layout = fileLayout(config, h.seq_len, sharedClassifier);
  const header = `dim=${h.dim} hidden_dim=${h.hidden_dim} n_layers=${h.n_layers} n_heads=${h.n_heads} n_kv_heads=${h.n_kv_heads} vocab_size=${h.vocab_size} seq_len=${h.seq_len}`;
  let hasFreqCis: boolean;
  if (bytes.length === layout.withFreq) hasFreqCis = true;
  else if (bytes.length === layout.withoutFreq) hasFreqCis = false;
  else if (bytes.length < layout.withoutFreq)
    throw new ModelLoadError(file, `truncated: header (${header}) needs ${layout.withFreq} bytes but the file has ${bytes.length}`);
  else
    throw new ModelLoadError(
      file,
      `size ${bytes.length} bytes does not match the header (${header}): expected ${layout.withFreq} (or ${layout.withoutFreq} without freq_cis); not a llama2.c checkpoint?`,
    );

  const offsets = new Map<string, number>();
  let off = HEADER_BYTES;
  for (const p of layout.parts) {
    offsets.set(p.key, off);
    off += p.floats * 4;
  }
  if (hasFreqCis) off += layout.freqCis * 4;
  offsets.set('wcls', off);

  const matrix = (key: string, layer: number, rows: number, cols: number): Matrix => ({
    type: 'f32',
    rows,
    cols,
    data: f32At(bytes, offsets.get(key)! + layer * rows * cols * 4, rows * cols),
  });
  const vector = (key: string, layer: number, n: number) => f32At(bytes, offsets.get(key)! + layer * n * 4, n);
  const perLayer: Record<string, string> = {
    attn_norm: 'rms_att',
    attn_q: 'wq',
    attn_k: 'wk',
    attn_v: 'wv',
    attn_output: 'wo',
    ffn_norm: 'rms_ffn',
    ffn_gate: 'w1',
    ffn_down: 'w2',
    ffn_up: 'w3',
  };
  const weights = buildWeights(config, (slot) => {
    const [rows, cols] = slot.shape;
    if (slot.name === 'token_embd.weight') return matrix('token_embedding', 0, rows, cols!);
    if (slot.name === 'output.weight') return matrix('wcls', 0, rows, cols!);
    if (slot.name === 'output_norm.weight') return vector('rms_final', 0, rows);
    const m = /^blk\.(\d+)\.(\w+)\.weight$/.exec(slot.name);
    const key = m && perLayer[m[2]!];
    if (!key) throw new ModelLoadError(file, `internal: no llama2.c tensor for ${slot.name} ${shapeText(slot.shape)}`);
    return slot.kind === 'vector' ? vector(key, Number(m[1]), rows) : matrix(key, Number(m[1]), rows, cols!);
  });

  const tokenizer = tokenizerPath
    ? await readTokenizerOverride(tokenizerPath, config.vocabSize)
    : { spec: await readLlama2cTokenizer(await findTokenizerBin(file, config.vocabSize), config.vocabSize) };
  return {
    format: 'llama2c',
    config,
    weights,
    tokenizer: tokenizer.spec,
    ...(tokenizer.chatTemplate !== undefined ? { chatTemplate: tokenizer.chatTemplate } : {}),
  };
}

async function findTokenizerBin(modelFile: string, vocabSize: number): Promise<string> {
  const dir = dirname(modelFile);
  for (const name of [`tok${vocabSize}.bin`, 'tokenizer.bin']) {
    const p = join(dir, name);
    if ((await kindOf(p)) === 'file') return p;
  }
  throw new ModelLoadError(
    modelFile,
    `no tokenizer: llama2.c checkpoints carry none; pass --tokenizer or put tok${vocabSize}.bin or tokenizer.bin next to the model`,
  );
}
