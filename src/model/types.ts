// The shapes every model loader produces and every other component consumes.
// Weights are in the llama2.c convention: a matrix W is stored row-major as [out][in],
// so y = W·x means y[n] = Σ_k W[n][k]·x[k].

/** How RoPE pairs the dimensions of a head: adjacent pairs (i, i+1) as in llama2.c and ggml's
 * "normal" mode (GGUF files store Q/K rows permuted for it), or rotate-half pairs (i, i+d/2) as
 * in Hugging Face checkpoints. */
export type RopeStyle = 'interleaved' | 'neox';

export interface ModelConfig {
  architecture: 'llama';
  dim: number;
  hiddenDim: number;
  nLayers: number;
  nHeads: number;
  nKvHeads: number;
  headDim: number;
  vocabSize: number;
  contextLength: number;
  ropeTheta: number;
  rmsEps: number;
  ropeStyle: RopeStyle;
  /** true when the classifier reuses the token embedding matrix */
  tiedEmbeddings: boolean;
}

/** A 2-D weight matrix [rows][cols] (rows = outputs, cols = inputs). F16/BF16 sources are widened to
 * f32 at load; Q8_0 stays quantized: GGUF's block layout, 34 bytes per 32 values
 * (f16 little-endian scale, then 32 int8), rows laid out one after another (cols/32 blocks per row). */
export type Matrix =
  | { type: 'f32'; rows: number; cols: number; data: Float32Array }
  | { type: 'q8_0'; rows: number; cols: number; data: Uint8Array };

export interface LayerWeights {
  attnNorm: Float32Array; // [dim]
  wq: Matrix; // [nHeads*headDim][dim]
  wk: Matrix; // [nKvHeads*headDim][dim]
  wv: Matrix; // [nKvHeads*headDim][dim]
  wo: Matrix; // [dim][nHeads*headDim]
  ffnNorm: Float32Array; // [dim]
  w1: Matrix; // gate  [hiddenDim][dim]
  w2: Matrix; // down  [dim][hiddenDim]
  w3: Matrix; // up    [hiddenDim][dim]
}

export interface ModelWeights {
  tokenEmbedding: Matrix; // [vocab][dim]
  layers: LayerWeights[];
  finalNorm: Float32Array; // [dim]
  /** the classifier [vocab][dim]; the same object as tokenEmbedding when tied */
  output: Matrix;
}

/** Everything a tokenizer needs, as found in the model's files. */
export type TokenizerSpec =
  | {
      /** SentencePiece-style vocabulary with merge scores (llama2.c tokenizer.bin, GGUF tokenizer.ggml.model=llama):
       * encode by repeatedly merging the adjacent pair whose merged piece has the highest score. */
      kind: 'spm';
      pieces: string[];
      scores: Float32Array;
      /** GGUF token types (1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte) when known */
      tokenTypes?: Int32Array;
      bos: number;
      eos: number;
      unk: number;
      addBos: boolean;
      /** the character pieces use for a space: ' ' in llama2.c files, '\u2581' in GGUF/SentencePiece */
      spaceChar: string;
      /** prepend a space to the text before encoding (SentencePiece's add_dummy_prefix) */
      addDummyPrefix: boolean;
    }
  | {
      /** a Hugging Face tokenizer.json (BPE model), with tokenizer_config.json when present */
      kind: 'hf';
      tokenizerJson: unknown;
      tokenizerConfig?: unknown;
      /** overrides from config.json / generation_config.json when tokenizer_config lacks them */
      bos?: number;
      eos?: number;
    };

export type ModelFormat = 'llama2c' | 'gguf' | 'hf' | 'synthetic';

export interface LoadedModel {
  /** short name: built-in name, or the file/folder stem */
  name: string;
  /** what the user asked for: a built-in name, a path or synthetic:<preset> */
  source: string;
  format: ModelFormat;
  config: ModelConfig;
  weights: ModelWeights;
  tokenizer: TokenizerSpec;
  /** Jinja chat template from the model's files, when present */
  chatTemplate?: string;
  /** hex digest identifying the weights (used by the KV connector handshake and KV store keys) */
  fingerprint: string;
}

/** Raised for any unusable model or tokenizer file; the message is one line naming the file and the problem. */
export class ModelLoadError extends Error {
  constructor(
    readonly file: string,
    readonly problem: string,
  ) {
    super(`${file}: ${problem}`);
    this.name = 'ModelLoadError';
  }
}
