// Compute kernels for the forward pass: `reference` (readable TypeScript, the ground truth) and `wasm`
// (AssemblyScript → WebAssembly SIMD). Both implement the Kernels contract of types.ts over one shared
// WebAssembly.Memory.

import type { MemoryOptions } from './memory.ts';
import { createReferenceKernels } from './reference.ts';
import type { Kernels } from './types.ts';
import { createWasmKernels } from './wasm.ts';

export type { Kernels, KvDtype, KvPoolLayout, PackedMatrix } from './types.ts';
export { kvBlockBytes } from './types.ts';
export { f16ToF32, f32ToF16 } from './f16.ts';
export type KernelsKind = 'wasm' | 'reference';
export type KernelsOptions = MemoryOptions;

export async function createKernels(kind: KernelsKind, opts: KernelsOptions = {}): Promise<Kernels> {
  if (kind === 'wasm') return createWasmKernels(opts);
  if (kind === 'reference') return createReferenceKernels(opts);
  throw new RangeError(`unknown kernels kind ${String(kind)} (expected 'wasm' or 'reference')`);
}
