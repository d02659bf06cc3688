// The WebAssembly SIMD backend: a thin wrapper around build/kernels.wasm (compiled from
// assembly/kernels.ts by scripts/build-wasm.js). The wrapper owns the shared memory and the allocator,
// repacks weights into the SIMD layouts once at packMatrix, checks arguments, and makes one wasm call
// per operation per batch.

import { readFile } from 'node:fs/promises';
import type { Matrix, RopeStyle } from '../model/types.ts';
import { f16Table } from './f16.ts';
import { KernelMemory, memoryAccess, type MemoryOptions } from './memory.ts';
import { RopeTables } from './rope.ts';
import type { Kernels, KvPoolLayout, PackedMatrix } from './types.ts';
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

export const WASM_PATH = new URL('../../build/kernels.wasm', import.meta.url);

interface Exports {
  matmul_f32(out: number, x: number, w: number, M: number, N: number, K: number): void;
  matmul_q8(out: number, x: number, w: number, M: number, N: number, K: number, scratch: number): void;
  embed_f32(out: number, table: number, ids: number, M: number, K: number): void;
  embed_q8(out: number, table: number, ids: number, M: number, K: number): void;
  rmsnorm(out: number, x: number, weight: number, M: number, dim: number, eps: number): void;
  rope(x: number, cs: number, M: number, nHeads: number, headDim: number, neox: number): void;
  swiglu(gate: number, up: number, n: number): void;
  add_in_place(acc: number, x: number, n: number): void;
  kv_write(base: number, blockSize: number, nLayers: number, kvDim: number, f16: number, layer: number, k: number, v: number, slots: number, M: number): void;
  attention(
    out: number, q: number, base: number, blockSize: number, nLayers: number, nKvHeads: number, headDim: number, f16: number,
    layer: number, nHeads: number, M: number, positions: number, blockTables: number, scratch: number, attStride: number,
  ): void;
}

/** Bytes of one packed Q8_0 block group: 8 f32 scales + [32][8] int8 (see assembly/kernels.ts). */
const Q8_PANEL_BLOCK_BYTES = 288;
/** Must equal PANEL_GROUP_BYTES in assembly/kernels.ts (sizes the q8_0 matmul's f32 panel scratch). */
const PANEL_GROUP_BYTES = 192 * 1024;

let compiled: Promise<WebAssembly.Module> | undefined;
function loadModule(): Promise<WebAssembly.Module> {
  compiled ??= readFile(WASM_PATH).then(
    (bytes) => WebAssembly.compile(bytes),
    (err: NodeJS.ErrnoException) => {
      compiled = undefined;
      throw err.code === 'ENOENT' ? new Error(`${WASM_PATH.pathname} not found: run \`npm run build:wasm\``) : err;
    },
  );
  return compiled;
}

export async function createWasmKernels(opts: MemoryOptions = {}): Promise<Kernels> {
  const module = await loadModule();
  const mem = new KernelMemory(opts);
  const instance = await WebAssembly.instantiate(module, { env: { memory: mem.memory } });
  const wasm = instance.exports as unknown as Exports;
  const ropeTables = new RopeTables();
  const packed = new WeakSet<PackedMatrix>();
  const f32 = (ptr: number, n: number) => mem.f32(ptr, n);
  const i32 = (ptr: number, n: number) => mem.i32(ptr, n);

  function checkPacked(w: PackedMatrix): void {
    if (!packed.has(w)) throw new TypeError('matrix was not packed by this Kernels instance');
  }

  // f32 → panels of 8 output rows, [ceil(rows/8)][cols][8], zero-padded.
  function packF32(m: Extract<Matrix, { type: 'f32' }>): number {
    const { rows, cols, data } = m;
    const panels = Math.ceil(rows / 8);
    const ptr = mem.alloc(panels * cols * 32);
    const dst = f32(ptr, panels * cols * 8);
    for (let n = 0; n < rows; n++) {
      const base = (n >> 3) * cols * 8 + (n & 7);
      const src = n * cols;
      for (let k = 0; k < cols; k++) dst[base + k * 8] = data[src + k]!;
    }
    return ptr;
  }

  // Q8_0 → per panel of 8 output rows, per 32-column block: 8 f32 scales, then [32][8] int8.
  function packQ8(m: Extract<Matrix, { type: 'q8_0' }>): number {
    const { rows, cols, data } = m;
    const nb = cols / Q8_0_BLOCK;
    const panelBytes = nb * Q8_PANEL_BLOCK_BYTES;
    const panels = Math.ceil(rows / 8);
    const ptr = mem.alloc(panels * panelBytes);
    const dst = mem.u8(ptr, panels * panelBytes);
    const scales = f32(ptr, (panels * panelBytes) / 4);
    const half = f16Table();
    for (let n = 0; n < rows; n++) {
      const lane = n & 7;
      for (let b = 0; b < nb; b++) {
        const src = (n * nb + b) * Q8_0_BLOCK_BYTES;
        const at = (n >> 3) * panelBytes + b * Q8_PANEL_BLOCK_BYTES;
        scales[at / 4 + lane] = half[data[src]! | (data[src + 1]! << 8)]!;
        for (let j = 0; j < Q8_0_BLOCK; j++) dst[at + 32 + j * 8 + lane] = data[src + 2 + j]!;
      }
    }
    return ptr;
  }

  return {
    name: 'wasm',
    ...memoryAccess(mem),

    packMatrix(m: Matrix): PackedMatrix {
      checkMatrix(m);
      const ptr = m.type === 'f32' ? packF32(m) : packQ8(m);
      const w: PackedMatrix = Object.freeze({ type: m.type, rows: m.rows, cols: m.cols, ptr });
      packed.add(w);
      return w;
    },

    matmul(out, x, w, rows) {
      checkPacked(w);
      checkCount('rows', rows);
      if (w.type === 'f32') wasm.matmul_f32(out, x, w.ptr, rows, w.rows, w.cols);
      else if (rows < 16) wasm.matmul_q8(out, x, w.ptr, rows, w.rows, w.cols, 0);
      else {
        // many rows: the kernel widens a group of weight panels to f32 once (see panelGroup there)
        const panelBytes = w.cols * 32;
        const group = Math.max(4, Math.floor(PANEL_GROUP_BYTES / panelBytes) & ~3);
        const mark = mem.mark();
        try {
          const panels = Math.min(group, Math.ceil(w.rows / 8));
          wasm.matmul_q8(out, x, w.ptr, rows, w.rows, w.cols, mem.alloc(panels * panelBytes, false));
        } finally {
          mem.release(mark);
        }
      }
    },

    embed(out, table, ids, rows) {
      checkPacked(table);
      checkCount('rows', rows);
      const id = i32(ids, rows);
      for (let r = 0; r < rows; r++) {
        if (!(id[r]! >= 0 && id[r]! < table.rows)) throw new RangeError(`embed: id ${id[r]} out of range [0, ${table.rows})`);
      }
      if (table.type === 'f32') wasm.embed_f32(out, table.ptr, ids, rows, table.cols);
      else wasm.embed_q8(out, table.ptr, ids, rows, table.cols);
    },

    rmsnorm(out, x, weight, rows, dim, eps) {
      checkCount('rows', rows);
      checkCount('dim', dim);
      wasm.rmsnorm(out, x, weight, rows, dim, eps);
    },

    rope(x, positions, rows, nHeads, headDim, theta, style: RopeStyle) {
      checkCount('rows', rows);
      checkCount('nHeads', nHeads);
      checkHeadDim(headDim);
      checkRopeStyle(style);
      const table = ropeTables.get(theta, headDim);
      const pos = i32(positions, rows);
      const mark = mem.mark();
      try {
        const cs = mem.alloc(rows * headDim * 4, false);
        const csv = f32(cs, rows * headDim);
        for (let r = 0; r < rows; r++) {
          checkPosition(pos[r]!);
          csv.set(table.row(pos[r]!), r * headDim);
        }
        wasm.rope(x, cs, rows, nHeads, headDim, style === 'neox' ? 1 : 0);
      } finally {
        mem.release(mark);
      }
    },

    kvWrite(pool: KvPoolLayout, layer, k, v, slots, rows) {
      checkPool(pool, layer);
      checkCount('rows', rows);
      const slot = i32(slots, rows);
      const total = pool.numBlocks * pool.blockSize;
      for (let r = 0; r < rows; r++) {
        if (!(slot[r]! >= 0 && slot[r]! < total)) throw new RangeError(`kvWrite: slot ${slot[r]} out of range [0, ${total})`);
      }
      const kvDim = pool.nKvHeads * pool.headDim;
      wasm.kv_write(pool.base, pool.blockSize, pool.nLayers, kvDim, pool.dtype === 'f16' ? 1 : 0, layer, k, v, slots, rows);
    },

    attention(out, q, pool, layer, nHeads, rows, positions, blockTables, scratch) {
      checkPool(pool, layer);
      checkHeads(nHeads, pool.nKvHeads);
      checkCount('rows', rows);
      const pos = i32(positions, rows);
      let maxPos = 0;
      for (let r = 0; r < rows; r++) {
        checkPosition(pos[r]!);
        maxPos = Math.max(maxPos, pos[r]!);
      }
      // The kernel tiles up to 4 queries that read the same KV and needs a score row for each: it uses
      // its own scratch from the arena (the caller's `scratch` holds one row, per the interface).
      const attStride = (maxPos + 1 + 15) & ~15;
      const mark = mem.mark();
      try {
        const tile = mem.alloc(128 + 4 * attStride * 4, false);
        wasm.attention(
          out, q, pool.base, pool.blockSize, pool.nLayers, pool.nKvHeads, pool.headDim, pool.dtype === 'f16' ? 1 : 0,
          layer, nHeads, rows, positions, blockTables, tile, attStride,
        );
      } finally {
        mem.release(mark);
      }
    },

    swiglu(gate, up, n) {
      checkCount('n', n);
      wasm.swiglu(gate, up, n);
    },

    addInPlace(acc, x, n) {
      checkCount('n', n);
      wasm.add_in_place(acc, x, n);
    },
  };
}
