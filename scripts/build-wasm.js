#!/usr/bin/env node
// Compiles the AssemblyScript kernels (src/kernels/assembly/*.ts) to build/kernels.wasm.
// Run by `npm install` (prepare) and before `npm test`; skips the compile when the wasm is newer than
// every source and this script. `--force` rebuilds anyway.
//
// The module imports its memory (env.memory, shared, up to 4 GiB) so the JS side creates it, owns the
// allocator and can hand the same memory to worker threads. No static data, no GC: the stub runtime
// and `abort=` keep the module free of imports other than the memory.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, renameSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const srcDir = join(root, 'src', 'kernels', 'assembly');
const entry = join(srcDir, 'kernels.ts');
const out = join(root, 'build', 'kernels.wasm');
const asc = join(root, 'node_modules', '.bin', 'asc');

const sources = [fileURLToPath(import.meta.url), ...readdirSync(srcDir).filter((f) => f.endsWith('.ts')).map((f) => join(srcDir, f))];
const newestSource = Math.max(...sources.map((f) => statSync(f).mtimeMs));
const force = process.argv.includes('--force');
if (!force && existsSync(out) && statSync(out).mtimeMs >= newestSource) {
  process.exit(0);
}
if (!existsSync(asc)) {
  // An install without devDependencies must not fail here; createKernels('wasm') reports the missing
  // module precisely, and the reference kernels still work.
  console.warn(`build-wasm: skipped, ${asc} not found (assemblyscript is a devDependency)`);
  process.exit(0);
}
mkdirSync(dirname(out), { recursive: true });
// Write to a temporary name and rename, so a concurrent reader never sees a half-written module.
const tmp = `${out}.${process.pid}.tmp`;
const args = [
  entry,
  '--outFile', tmp,
  '-O3', '--noAssert',
  '--runtime', 'stub',
  '--use', 'abort=',
  '--enable', 'simd',
  '--enable', 'threads',
  '--importMemory', '--sharedMemory',
  '--initialMemory', '2', // the JS side reserves the first 64 KiB for the module's (empty) static data
  '--maximumMemory', '65536',
];
const started = Date.now();
const r = spawnSync(asc, args, { cwd: root, stdio: 'inherit' });
if (r.status !== 0) {
  console.error(`build-wasm: asc failed (exit ${r.status ?? r.signal})`);
  process.exit(1);
}
renameSync(tmp, out);
console.log(`build-wasm: ${out.slice(root.length + 1)} (${statSync(out).size} bytes, ${Date.now() - started} ms)`);
