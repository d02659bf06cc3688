// The reference kernels: plain loops in the style of llama2.c's run.c, the ground truth the wasm
// kernels are tested against. Arithmetic is f32 like llama2.c: every operation is rounded with
// Math.fround (a single f64 op followed by fround is the correctly rounded f32 op), and sums run
// sequentially. Matrices are kept in their source layout (row-major f32, GGUF Q8_0 blocks).

import type { Matrix, RopeStyle } from '../model/types.ts';
import { f16Table, f32ToF16 } from './f16.ts';
import { KernelMemory, memoryAccess, type MemoryOptions } from './memory.ts';
import { RopeTables } from './rope.ts';
import { kvBlockBytes, type Kernels, type KvPoolLayout, type PackedMatrix } from './types.ts';
import {
  Q8_0_BLOCK,
  Q8_0_BLOCK_BYTES,
  checkCount,
  checkHeadDim,
  checkHeads,
  checkMatrix,
  checkPool,
  checkPosition,
  checkRopeStyle,
} from './validate.ts';

const f = Math.fround;

export function createReferenceKernels(opts: MemoryOptions = {}): Kernels {
  const mem = new KernelMemory(opts);
  const ropeTables = new RopeTables();
  const half = f16Table();
  const packed = new WeakSet<PackedMatrix>();
  const f32 = (ptr: number, n: number) => mem.f32(ptr, n);
  const i32 = (ptr: number, n: number) => mem.i32(ptr, n);

  function checkPacked(w: PackedMatrix): void {
    if (!packed.has(w)) throw new TypeError('matrix was not packed by this Kernels instance');
  }

  // Element offset (in elements, not bytes) of token `t`'s K or V for `layer` in the pool.
  function kvOffset(pool: KvPoolLayout, block: number, layer: number, kv: 0 | 1, t: number): number {
    const kvDim = pool.nKvHeads * pool.headDim;
    return (((block * pool.nLayers + layer) * 2 + kv) * pool.blockSize + t) * kvDim;
  }

  return {
    name: 'reference',
    ...memoryAccess(mem),

    packMatrix(m: Matrix): PackedMatrix {
      checkMatrix(m);
      let ptr: number;
      if (m.type === 'f32') {
        ptr = mem.alloc(m.data.byteLength, false);
        f32(ptr, m.data.length).set(m.data);
      } else {
        ptr = mem.alloc(m.data.byteLength, false);
        mem.u8(ptr, m.data.length).set(m.data);
      }
      const w: PackedMatrix = Object.freeze({ type: m.type, rows: m.rows, cols: m.cols, ptr });
      packed.add(w);
      return w;
    },

    matmul(out, x, w, rows) {
      checkPacked(w);
      checkCount('rows', rows);
      const N = w.rows, K = w.cols;
      const xv = f32(x, rows * K);
      const o = f32(out, rows * N);
      if (w.type === 'f32') {
        const W = f32(w.ptr, N * K);
        for (let r = 0; r < rows; r++) {
          for (let n = 0; n < N; n++) {
            let sum = 0;
            for (let k = 0; k < K; k++) sum = f(sum + f(xv[r * K + k]! * W[n * K + k]!));
            o[r * N + n] = sum;
          }
        }
        return;
      }
      // Q8_0: per 32-value block, sum q·x in f32, then add blockSum·scale to the row total.
      const nb = K / Q8_0_BLOCK;
      const W = mem.u8(w.ptr, N * nb * Q8_0_BLOCK_BYTES);
      const q = new Int8Array(W.buffer, W.byteOffset, W.length);
      for (let r = 0; r < rows; r++) {
        for (let n = 0; n < N; n++) {
          let total = 0;
          for (let b = 0; b < nb; b++) {
            const blk = (n * nb + b) * Q8_0_BLOCK_BYTES;
            const d = half[W[blk]! | (W[blk + 1]! << 8)]!;
            let sum = 0;
            for (let j = 0; j < Q8_0_BLOCK; j++) sum = f(sum + f(q[blk + 2 + j]! * xv[r * K + b * Q8_0_BLOCK + j]!));
            total = f(total + f(sum * d));
          }
          o[r * N + n] = total;
        }
      }
    },

    embed(out, table, ids, rows) {
      checkPacked(table);
      checkCount('rows', rows);
      const K = table.cols;
      const id = i32(ids, rows);
      const o = f32(out, rows * K);
      for (let r = 0; r < rows; r++) {
        const n = id[r]!;
        if (!(n >= 0 && n < table.rows)) throw new RangeError(`embed: id ${n} out of range [0, ${table.rows})`);
        if (table.type === 'f32') {
          o.set(f32(table.ptr + n * K * 4, K), r * K);
          continue;
        }
        const nb = K / Q8_0_BLOCK;
        const W = mem.u8(table.ptr + n * nb * Q8_0_BLOCK_BYTES, nb * Q8_0_BLOCK_BYTES);
        const q = new Int8Array(W.buffer, W.byteOffset, W.length);
        for (let b = 0; b < nb; b++) {
          const blk = b * Q8_0_BLOCK_BYTES;
          const d = half[W[blk]! | (W[blk + 1]! << 8)]!;
          for (let j = 0; j < Q8_0_BLOCK; j++) o[r * K + b * Q8_0_BLOCK + j] = f(q[blk + 2 + j]! * d);
        }
      }
    },

    rmsnorm(out, x, weight, rows, dim, eps) {
      checkCount('rows', rows);
      checkCount('dim', dim);
      const xv = f32(x, rows * dim);
      const o = f32(out, rows * dim);
      const wv = f32(weight, dim);
      const e = f(eps);
      for (let r = 0; r < rows; r++) {
        let ss = 0;
        for (let j = 0; j < dim; j++) ss = f(ss + f(xv[r * dim + j]! * xv[r * dim + j]!));
        ss = f(f(ss / dim) + e);
        const inv = f(1 / f(Math.sqrt(ss)));
        for (let j = 0; j < dim; j++) o[r * dim + j] = f(wv[j]! * f(inv * xv[r * dim + j]!));
      }
    },

    rope(x, positions, rows, nHeads, headDim, theta, style: RopeStyle) {
      checkCount('rows', rows);
      checkCount('nHeads', nHeads);
      checkHeadDim(headDim);
      checkRopeStyle(style);
      const pairs = headDim / 2;
      const xv = f32(x, rows * nHeads * headDim);
      const pos = i32(positions, rows);
      const table = ropeTables.get(theta, headDim);
      for (let r = 0; r < rows; r++) {
        checkPosition(pos[r]!);
        const cs = table.row(pos[r]!);
        for (let h = 0; h < nHeads; h++) {
          const head = (r * nHeads + h) * headDim;
          for (let i = 0; i < pairs; i++) {
            const c = cs[2 * i]!, s = cs[2 * i + 1]!;
            const i0 = head + (style === 'neox' ? i : 2 * i);
            const i1 = style === 'neox' ? i0 + pairs : i0 + 1;
            const v0 = xv[i0]!, v1 = xv[i1]!;
            xv[i0] = f(f(v0 * c) - f(v1 * s));
            xv[i1] = f(f(v0 * s) + f(v1 * c));
          }
        }
      }
    },

    kvWrite(pool, layer, k, v, slots, rows) {
      checkPool(pool, layer);
      checkCount('rows', rows);
      const kvDim = pool.nKvHeads * pool.headDim;
      const kv = [f32(k, rows * kvDim), f32(v, rows * kvDim)] as const;
      const slot = i32(slots, rows);
      const total = pool.numBlocks * pool.blockSize;
      for (let r = 0; r < rows; r++) {
        const s = slot[r]!;
        if (!(s >= 0 && s < total)) throw new RangeError(`kvWrite: slot ${s} out of range [0, ${total})`);
        const block = Math.floor(s / pool.blockSize), t = s % pool.blockSize;
        for (const which of [0, 1] as const) {
          const src = kv[which].subarray(r * kvDim, (r + 1) * kvDim);
          const at = kvOffset(pool, block, layer, which, t);
          if (pool.dtype === 'f32') {
            f32(pool.base + at * 4, kvDim).set(src);
          } else {
            const dst = new Uint16Array(mem.memory.buffer, pool.base + at * 2, kvDim);
            for (let e = 0; e < kvDim; e++) dst[e] = f32ToF16(src[e]!);
          }
        }
      }
    },

    attention(out, q, pool, layer, nHeads, rows, positions, blockTables, scratch) {
      checkPool(pool, layer);
      checkHeads(nHeads, pool.nKvHeads);
      checkCount('rows', rows);
      const hd = pool.headDim;
      const group = nHeads / pool.nKvHeads;
      const qv = f32(q, rows * nHeads * hd);
      const o = f32(out, rows * nHeads * hd);
      const pos = i32(positions, rows);
      const tables = i32(blockTables, rows);
      const sqrtHd = f(Math.sqrt(hd));
      const buf = mem.memory.buffer;
      const elements = kvBlockBytes(pool) / (pool.dtype === 'f16' ? 2 : 4) * pool.numBlocks;
      const poolF32 = pool.dtype === 'f32' ? new Float32Array(buf, pool.base, elements) : undefined;
      const poolF16 = pool.dtype === 'f16' ? new Uint16Array(buf, pool.base, elements) : undefined;
      // element `e` of token `t`'s K (kv=0) or V (kv=1), through the sequence's block table
      const read = (table: Int32Array, kv: 0 | 1, t: number, e: number): number => {
        const at = kvOffset(pool, table[Math.floor(t / pool.blockSize)]!, layer, kv, t % pool.blockSize) + e;
        return poolF32 ? poolF32[at]! : half[poolF16![at]!]!;
      };
      for (let r = 0; r < rows; r++) {
        checkPosition(pos[r]!);
        const n = pos[r]! + 1;
        const table = new Int32Array(buf, tables[r]!, Math.ceil(n / pool.blockSize));
        const att = f32(scratch, n);
        for (let h = 0; h < nHeads; h++) {
          const qh = (r * nHeads + h) * hd;
          const kvh = Math.floor(h / group) * hd;
          let max = -Infinity;
          for (let t = 0; t < n; t++) {
            let score = 0;
            for (let i = 0; i < hd; i++) score = f(score + f(qv[qh + i]! * read(table, 0, t, kvh + i)));
            att[t] = f(score / sqrtHd);
            if (att[t]! > max) max = att[t]!;
          }
          let sum = 0;
          for (let t = 0; t < n; t++) {
            att[t] = f(Math.exp(f(att[t]! - max)));
            sum = f(sum + att[t]!);
          }
          for (let i = 0; i < hd; i++) o[qh + i] = 0;
          for (let t = 0; t < n; t++) {
            const a = f(att[t]! / sum);
            for (let i = 0; i < hd; i++) o[qh + i] = f(o[qh + i]! + f(a * read(table, 1, t, kvh + i)));
          }
        }
      }
    },

    swiglu(gate, up, n) {
      checkCount('n', n);
      const g = f32(gate, n), u = f32(up, n);
      for (let i = 0; i < n; i++) {
        const x = g[i]!;
        g[i] = f(f(x * f(1 / f(1 + f(Math.exp(-x))))) * u[i]!);
      }
    },

    addInPlace(acc, x, n) {
      checkCount('n', n);
      const a = f32(acc, n), b = f32(x, n);
      for (let i = 0; i < n; i++) a[i] = f(a[i]! + b[i]!);
    },
  };
}
