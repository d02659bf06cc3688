// The forward pass: one call runs a batch of rows from many sequences — chunks of prefill and
// single decode tokens mixed — each row attending to its own sequence's paged KV.
// It reads like llama2.c's forward(), with the loops over tokens replaced by kernel calls over rows.

import type { Kernels, KvPoolLayout, PackedMatrix } from '../kernels/types.ts';
import type { LoadedModel, ModelConfig } from '../model/types.ts';

/** One sequence's share of a step: `count` consecutive tokens starting at position `start`. */
export interface SeqChunk {
  tokens: ArrayLike<number>;
  /** position of tokens[0] in the sequence */
  start: number;
  /** block ids covering positions 0 .. start+count-1 */
  blockTable: ArrayLike<number>;
  /** compute logits for the last token of this chunk */
  wantLogits: boolean;
}

interface PackedLayer {
  attnNorm: number;
  ffnNorm: number;
  wq: PackedMatrix;
  wk: PackedMatrix;
  wv: PackedMatrix;
  wo: PackedMatrix;
  w1: PackedMatrix;
  w2: PackedMatrix;
  w3: PackedMatrix;
}

/** Activation buffers sized for `rows` rows, reused across steps. */
interface Scratch {
  /** arena marks around this scratch (it can be released and reallocated while it is the last allocation) */
  start: number;
  end: number;
  rows: number;
  logitRows: number;
  tableInts: number;
  x: number;
  xb: number;
  q: number;
  k: number;
  v: number;
  att: number;
  hb: number;
  hb2: number;
  tokens: number;
  positions: number;
  slots: number;
  rowTables: number;
  tables: number;
  attScratch: number;
  gathered: number;
  logits: number;
}

export class ModelRunner {
  readonly config: ModelConfig;
  readonly pool: KvPoolLayout;
  private readonly layers: PackedLayer[];
  private readonly embedding: PackedMatrix;
  private readonly output: PackedMatrix;
  private readonly finalNorm: number;
  private scratch?: Scratch;

  constructor(
    readonly kernels: Kernels,
    model: LoadedModel,
    kv: { blockSize: number; numBlocks: number; dtype: 'f32' | 'f16' },
  ) {
    const c = (this.config = model.config);
    const w = model.weights;
    const k = kernels;
    const f32 = (a: Float32Array): number => {
      const p = k.alloc(a.byteLength);
      k.f32(p, a.length).set(a);
      return p;
    };
    this.embedding = k.packMatrix(w.tokenEmbedding);
    this.output = w.output === w.tokenEmbedding ? this.embedding : k.packMatrix(w.output);
    this.finalNorm = f32(w.finalNorm);
    this.layers = w.layers.map((l) => ({
      attnNorm: f32(l.attnNorm),
      ffnNorm: f32(l.ffnNorm),
      wq: k.packMatrix(l.wq),
      wk: k.packMatrix(l.wk),
      wv: k.packMatrix(l.wv),
      wo: k.packMatrix(l.wo),
      w1: k.packMatrix(l.w1),
      w2: k.packMatrix(l.w2),
      w3: k.packMatrix(l.w3),
    }));
    const layout = {
      blockSize: kv.blockSize,
      nLayers: c.nLayers,
      nKvHeads: c.nKvHeads,
      headDim: c.headDim,
      dtype: kv.dtype,
    };
    const blockBytes = c.nLayers * 2 * kv.blockSize * c.nKvHeads * c.headDim * (kv.dtype === 'f16' ? 2 : 4);
    const base = k.alloc(blockBytes * kv.numBlocks);
    this.pool = { ...layout, base, numBlocks: kv.numBlocks };
  }

  private ensureScratch(rows: number, logitRows: number, tableInts: number): Scratch {
    const s = this.scratch;
    if (s && s.rows >= rows && s.logitRows >= logitRows && s.tableInts >= tableInts) return s;
    // Grow geometrically, so a batch creeping up one row at a time reallocates O(log n) times. The
    // scratch is the arena's last allocation, so its old space is reused rather than abandoned (an
    // engine under load once grew past WASM's 4 GiB this way).
    const c = this.config;
    const R = Math.max(rows, s ? (rows > s.rows ? 2 * s.rows : s.rows) : 16);
    const L = Math.max(logitRows, s ? (logitRows > s.logitRows ? 2 * s.logitRows : s.logitRows) : 1);
    const T = Math.max(tableInts, (s?.tableInts ?? 0) * 2, 256);
    const k = this.kernels;
    if (s && k.mark() === s.end) k.release(s.start);
    const start = k.mark();
    const qDim = c.nHeads * c.headDim;
    const kvDim = c.nKvHeads * c.headDim;
    this.scratch = {
      rows: R,
      logitRows: L,
      tableInts: T,
      x: k.alloc(R * c.dim * 4),
      xb: k.alloc(R * Math.max(c.dim, qDim) * 4),
      q: k.alloc(R * qDim * 4),
      k: k.alloc(R * kvDim * 4),
      v: k.alloc(R * kvDim * 4),
      att: k.alloc(R * qDim * 4),
      hb: k.alloc(R * c.hiddenDim * 4),
      hb2: k.alloc(R * c.hiddenDim * 4),
      tokens: k.alloc(R * 4),
      positions: k.alloc(R * 4),
      slots: k.alloc(R * 4),
      rowTables: k.alloc(R * 4),
      tables: k.alloc(T * 4),
      attScratch: k.alloc((c.contextLength + 16) * 4),
      gathered: k.alloc(L * c.dim * 4),
      logits: k.alloc(L * c.vocabSize * 4),
      start,
      end: 0,
    };
    this.scratch.end = k.mark();
    return this.scratch;
  }

  /** Run one step. Returns the logits of the chunks with wantLogits, in chunk order: a view into
   * kernel memory [n][vocab], valid until the next call. */
  forward(chunks: readonly SeqChunk[]): Float32Array {
    const c = this.config;
    const k = this.kernels;
    const bs = this.pool.blockSize;
    let rows = 0;
    let logitRows = 0;
    let tableInts = 0;
    for (const ch of chunks) {
      rows += ch.tokens.length;
      if (ch.wantLogits) logitRows++;
      tableInts += ch.blockTable.length;
    }
    if (rows === 0) return new Float32Array(0);
    const s = this.ensureScratch(rows, logitRows, tableInts);

    // Row metadata: token ids, positions, KV slots, and a pointer to each row's block table.
    const tokens = k.i32(s.tokens, rows);
    const positions = k.i32(s.positions, rows);
    const slots = k.i32(s.slots, rows);
    const rowTables = k.i32(s.rowTables, rows);
    const tables = k.i32(s.tables, tableInts);
    let r = 0;
    let t = 0;
    for (const ch of chunks) {
      const tablePtr = s.tables + t * 4;
      for (let i = 0; i < ch.blockTable.length; i++) tables[t + i] = ch.blockTable[i]!;
      t += ch.blockTable.length;
      for (let i = 0; i < ch.tokens.length; i++, r++) {
        const pos = ch.start + i;
        const block = ch.blockTable[Math.floor(pos / bs)];
        if (block === undefined) throw new RangeError(`position ${pos} has no block in the block table`);
        tokens[r] = ch.tokens[i]!;
        positions[r] = pos;
        slots[r] = block * bs + (pos % bs);
        rowTables[r] = tablePtr;
      }
    }

    const dim = c.dim;
    k.embed(s.x, this.embedding, s.tokens, rows);
    for (let l = 0; l < c.nLayers; l++) {
      const w = this.layers[l]!;
      // attention
      k.rmsnorm(s.xb, s.x, w.attnNorm, rows, dim, c.rmsEps);
      k.matmul(s.q, s.xb, w.wq, rows);
      k.matmul(s.k, s.xb, w.wk, rows);
      k.matmul(s.v, s.xb, w.wv, rows);
      k.rope(s.q, s.positions, rows, c.nHeads, c.headDim, c.ropeTheta, c.ropeStyle);
      k.rope(s.k, s.positions, rows, c.nKvHeads, c.headDim, c.ropeTheta, c.ropeStyle);
      k.kvWrite(this.pool, l, s.k, s.v, s.slots, rows);
      k.attention(s.att, s.q, this.pool, l, c.nHeads, rows, s.positions, s.rowTables, s.attScratch);
      k.matmul(s.xb, s.att, w.wo, rows);
      k.addInPlace(s.x, s.xb, rows * dim);
      // feed-forward (SwiGLU)
      k.rmsnorm(s.xb, s.x, w.ffnNorm, rows, dim, c.rmsEps);
      k.matmul(s.hb, s.xb, w.w1, rows);
      k.matmul(s.hb2, s.xb, w.w3, rows);
      k.swiglu(s.hb, s.hb2, rows * c.hiddenDim);
      k.matmul(s.xb, s.hb, w.w2, rows);
      k.addInPlace(s.x, s.xb, rows * dim);
    }

    // Classifier only for the rows that need logits (the last row of each such chunk).
    if (logitRows === 0) return new Float32Array(0);
    const x = k.f32(s.x, rows * dim);
    const gathered = k.f32(s.gathered, logitRows * dim);
    r = 0;
    let g = 0;
    for (const ch of chunks) {
      r += ch.tokens.length;
      if (ch.wantLogits) gathered.set(x.subarray((r - 1) * dim, r * dim), g++ * dim);
    }
    k.rmsnorm(s.gathered, s.gathered, this.finalNorm, logitRows, dim, c.rmsEps);
    k.matmul(s.logits, s.gathered, this.output, logitRows);
    return k.f32(s.logits, logitRows * c.vocabSize);
  }
}
