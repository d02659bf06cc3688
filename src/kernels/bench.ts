// Kernel microbenchmark (not a test): GFLOP/s of wasm vs reference matmul on the shapes of a
// stories15M-class model, f32 and q8_0, and decode attention against a paged KV pool.
//   node --import tsx src/kernels/bench.ts [--quick]

import { createKernels, kvBlockBytes, type Kernels, type KvDtype } from './index.ts';
import { f32ToF16 } from './f16.ts';

const quick = process.argv.includes('--quick');
const minSeconds = quick ? 0.05 : 0.4;

function rand(n: number, seed: number): Float32Array {
  const a = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    a[i] = s / 2 ** 31 - 1;
  }
  return a;
}

function quantize(data: Float32Array, rows: number, cols: number): Uint8Array {
  const nb = cols / 32;
  const out = new Uint8Array(rows * nb * 34);
  const q = new Int8Array(out.buffer);
  for (let b = 0; b < rows * nb; b++) {
    let amax = 0;
    for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(data[b * 32 + j]!));
    const d = amax / 127;
    const h = f32ToF16(d);
    out[b * 34] = h & 0xff;
    out[b * 34 + 1] = h >> 8;
    for (let j = 0; j < 32; j++) q[b * 34 + 2 + j] = d ? Math.round(data[b * 32 + j]! / d) : 0;
  }
  return out;
}

/** Seconds of CPU time per call (process.cpuUsage, so other load on this shared machine distorts it
 * less than wall time): repeat until `budget` wall seconds have passed, after a warm-up. */
function time(fn: () => void, budget = minSeconds): number {
  // warm-up: let the JIT settle (the reference backend's loops tier up over several calls)
  const w0 = performance.now();
  do fn();
  while (performance.now() - w0 < budget * 200);
  let n = 0;
  const t0 = performance.now();
  const c0 = process.cpuUsage();
  do {
    fn();
    n++;
  } while (performance.now() - t0 < budget * 1000);
  const c = process.cpuUsage(c0);
  return (c.user + c.system) / 1e6 / n;
}

const fmt = (x: number, d = 1) => x.toFixed(d).padStart(7);

async function benchMatmul(kernels: Kernels[]): Promise<void> {
  const shapes: [M: number, K: number, N: number][] = [
    [1, 288, 768],
    [32, 288, 768],
    [1, 768, 2048],
    [512, 288, 768],
  ];
  console.log('matmul  M×K · K×N          type   ' + kernels.map((k) => `${k.name.padStart(9)} GFLOP/s  µs/call`).join('   '));
  for (const type of ['f32', 'q8_0'] as const) {
    for (const [M, K, N] of shapes) {
      const data = rand(N * K, N + K);
      const cells: string[] = [];
      for (const k of kernels) {
        const mark = k.mark();
        const w = k.packMatrix(type === 'f32' ? { type, rows: N, cols: K, data } : { type, rows: N, cols: K, data: quantize(data, N, K) });
        const x = k.alloc(M * K * 4);
        k.f32(x, M * K).set(rand(M * K, 1));
        const out = k.alloc(M * N * 4);
        // the reference backend is ~30× slower: give it less time on the big shapes
        const s = time(() => k.matmul(out, x, w, M), k.name === 'reference' ? minSeconds / 2 : minSeconds);
        cells.push(`${fmt((2 * M * K * N) / s / 1e9, 2)}         ${fmt(s * 1e6, 0)}`);
        k.release(mark);
      }
      console.log(`matmul  ${`${M}×${K} · ${K}×${N}`.padEnd(20)} ${type.padEnd(6)} ${cells.join('     ')}`);
    }
  }
}

async function benchAttention(kernels: Kernels[]): Promise<void> {
  // stories15M: 6 layers, 6 heads of 48; decode = one query row per sequence
  const nLayers = 6, nHeads = 6, nKvHeads = 6, headDim = 48, blockSize = 16;
  console.log('\nattention (decode, 6 heads × 48, block 16)  ' + kernels.map((k) => `${k.name.padStart(9)} GFLOP/s  µs/call`).join('   '));
  for (const dtype of ['f32', 'f16'] as KvDtype[]) {
    for (const [ctx, rows] of [[512, 1], [2048, 1], [512, 16]] as const) {
      const cells: string[] = [];
      for (const k of kernels) {
        const mark = k.mark();
        const layout = { nLayers, nKvHeads, headDim, blockSize, dtype };
        const blocksPerSeq = Math.ceil(ctx / blockSize);
        const numBlocks = blocksPerSeq * rows;
        const pool = { ...layout, base: k.alloc(numBlocks * kvBlockBytes(layout)), numBlocks };
        const kvDim = nKvHeads * headDim;
        // fill layer 0 of every block with random K/V through kvWrite
        const slots = k.alloc(numBlocks * blockSize * 4);
        k.i32(slots, numBlocks * blockSize).set(Array.from({ length: numBlocks * blockSize }, (_, i) => i));
        const kv = k.alloc(numBlocks * blockSize * kvDim * 4);
        k.f32(kv, numBlocks * blockSize * kvDim).set(rand(numBlocks * blockSize * kvDim, 3));
        k.kvWrite(pool, 0, kv, kv, slots, numBlocks * blockSize);
        // block tables: sequence r owns blocks r, r+rows, r+2·rows, … (interleaved, like a busy pool)
        const tables = Array.from({ length: rows }, (_, r) => {
          const t = k.alloc(blocksPerSeq * 4);
          k.i32(t, blocksPerSeq).set(Array.from({ length: blocksPerSeq }, (_, b) => b * rows + r));
          return t;
        });
        const tablePtrs = k.alloc(rows * 4);
        k.i32(tablePtrs, rows).set(tables);
        const positions = k.alloc(rows * 4);
        k.i32(positions, rows).fill(ctx - 1);
        const q = k.alloc(rows * nHeads * headDim * 4);
        k.f32(q, rows * nHeads * headDim).set(rand(rows * nHeads * headDim, 4));
        const out = k.alloc(rows * nHeads * headDim * 4);
        const scratch = k.alloc(ctx * 4);
        const s = time(() => k.attention(out, q, pool, 0, nHeads, rows, positions, tablePtrs, scratch), k.name === 'reference' ? minSeconds / 2 : minSeconds);
        cells.push(`${fmt((4 * rows * ctx * nHeads * headDim) / s / 1e9, 2)}         ${fmt(s * 1e6, 0)}`);
        k.release(mark);
      }
      console.log(`attention ctx ${String(ctx).padEnd(5)} rows ${String(rows).padEnd(3)} ${dtype} KV          ${cells.join('     ')}`);
    }
  }
}

const kernels = [await createKernels('wasm', { initialBytes: 64 << 20 }), await createKernels('reference', { initialBytes: 64 << 20 })];
await benchMatmul(kernels);
await benchAttention(kernels);
