// RoPE rotation angles, shared by both backends so they rotate by the same f32 values.
// Follows llama2.c's f32 precision: freq_i = 1 / theta^(2i/headDim) and angle = pos·freq_i, each rounded
// to f32, then cos/sin of the f32 angle rounded to f32. Pair i of a head uses freq_i in both styles
// ('interleaved' pairs (2i, 2i+1), 'neox' pairs (i, i + headDim/2)).

const f = Math.fround;

/** cos/sin per position, [pos][headDim/2][cos, sin], grown on demand and kept per (theta, headDim). */
export class RopeTable {
  private table = new Float32Array(0);
  private positions = 0;
  private readonly freqs: Float32Array;

  constructor(
    readonly theta: number,
    readonly headDim: number,
  ) {
    const half = headDim >> 1;
    this.freqs = new Float32Array(half);
    for (let i = 0; i < half; i++) this.freqs[i] = f(1 / f(Math.pow(f(theta), f((2 * i) / headDim))));
  }

  /** The [headDim/2][cos, sin] entries of `pos`, a view valid until the next call. */
  row(pos: number): Float32Array {
    const n = this.headDim; // half pairs × 2 values
    if (pos >= this.positions) this.grow(pos + 1);
    return this.table.subarray(pos * n, pos * n + n);
  }

  private grow(need: number): void {
    const positions = Math.max(need, this.positions * 2, 256);
    const half = this.headDim >> 1;
    const t = new Float32Array(positions * this.headDim);
    t.set(this.table);
    for (let p = this.positions; p < positions; p++) {
      for (let i = 0; i < half; i++) {
        const angle = f(p * this.freqs[i]!);
        t[p * this.headDim + 2 * i] = f(Math.cos(angle));
        t[p * this.headDim + 2 * i + 1] = f(Math.sin(angle));
      }
    }
    this.table = t;
    this.positions = positions;
  }
}

/** One RopeTable per (theta, headDim); a model uses one or two. */
export class RopeTables {
  private readonly tables = new Map<string, RopeTable>();
  get(theta: number, headDim: number): RopeTable {
    if (!(Number.isFinite(theta) && theta > 0)) throw new RangeError(`rope theta must be a positive number, got ${theta}`);
    const key = `${theta}/${headDim}`;
    let t = this.tables.get(key);
    if (!t) {
      t = new RopeTable(theta, headDim);
      this.tables.set(key, t);
    }
    return t;
  }
}
