// Installs node-llama-cpp for the benchmarks on first use, outside tandem's dependencies.
//
// Why not a dependency: its default install pulls every optional platform build (CUDA, Vulkan, arm, …) ≈ 730 MB.
// Only the linux-x64 CPU prebuilt is needed (≈ 83 MB), so it lives in a folder of its own with its own package.json,
// under the git-ignored <repo>/.bench-cache/.
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { workerPath } from './worker-process.ts';

export const NODE_LLAMA_CPP_VERSION = '3.21.1';
const BINARY_PACKAGE = '@node-llama-cpp/linux-x64';

const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
/** Where the benchmarks keep node-llama-cpp: <repo>/.bench-cache/node-llama-cpp. */
export const defaultPackageDir = join(repoRoot, '.bench-cache', 'node-llama-cpp');

export class LlamaCppInstallError extends Error {
  override name = 'LlamaCppInstallError';
  readonly userFacing = true;
}

function installedVersion(dir: string, pkg: string): string | undefined {
  try {
    const json = JSON.parse(readFileSync(join(dir, 'node_modules', pkg, 'package.json'), 'utf8')) as { version?: unknown };
    return typeof json.version === 'string' ? json.version : undefined;
  } catch {
    return undefined;
  }
}

function hasExpectedFiles(dir: string): boolean {
  return (
    installedVersion(dir, 'node-llama-cpp') === NODE_LLAMA_CPP_VERSION &&
    installedVersion(dir, BINARY_PACKAGE) === NODE_LLAMA_CPP_VERSION &&
    existsSync(join(dir, 'node_modules', BINARY_PACKAGE, 'bins', 'linux-x64', 'llama-addon.node'))
  );
}

interface Exit {
  code: number | null;
  stdout: string;
  stderr: string;
}

function run(cmd: string, args: string[], cwd: string): Promise<Exit> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

const tail = (text: string, lines = 15): string => text.trimEnd().split('\n').slice(-lines).join('\n');

/** Loads the CPU prebuilt in a throwaway process: the files being there does not prove the binary runs here. */
async function probeLoad(dir: string): Promise<Exit> {
  return run(process.execPath, [workerPath, JSON.stringify({ mode: 'probe', packageDir: dir })], dir);
}

let ensured: Promise<string> | undefined;

/**
 * Makes sure node-llama-cpp@3.21.1 with only the linux-x64 CPU binary is installed in `dir` and loads, and returns
 * `dir`. Idempotent and cheap when already installed (one probe process per tandem process). Safe against two
 * benchmarks installing at once: each installs into a private temporary folder that is renamed into place.
 */
export function ensureNodeLlamaCpp(options: { dir?: string; log?: (line: string) => void } = {}): Promise<string> {
  const dir = options.dir ?? defaultPackageDir;
  if (dir === defaultPackageDir) return (ensured ??= install(dir, options.log).catch((e: unknown) => {
    ensured = undefined; // let a later call retry, e.g. after the network is back
    throw e;
  }));
  return install(dir, options.log);
}

async function install(dir: string, log: (line: string) => void = (l) => process.stderr.write(l + '\n')): Promise<string> {
  if (process.platform !== 'linux' || process.arch !== 'x64') {
    throw new LlamaCppInstallError(
      `the llama.cpp baseline installs only the linux-x64 CPU build of node-llama-cpp; this is ${process.platform}-${process.arch}`,
    );
  }
  if (hasExpectedFiles(dir) && (await probeLoad(dir)).code === 0) return dir;

  log(`llama.cpp baseline: installing node-llama-cpp@${NODE_LLAMA_CPP_VERSION} (linux-x64 CPU build only) into ${dir}`);
  const staging = `${dir}.staging-${process.pid}-${Date.now()}`;
  mkdirSync(staging, { recursive: true });
  try {
    writeFileSync(
      join(staging, 'package.json'),
      JSON.stringify({ name: 'tandem-bench-node-llama-cpp', private: true, description: 'llama.cpp baseline for tandem benchmarks; installed by src/bench/llamacpp' }, null, 2) + '\n',
    );
    // --omit=optional keeps the GPU/other-platform builds out; the linux-x64 one is named explicitly instead.
    // --ignore-scripts: node-llama-cpp's postinstall may try to download and compile llama.cpp when it dislikes the
    // prebuilt; the benchmark never builds (build: 'never') and checks the prebuilt itself below.
    const res = await run('npm', [
      'install', '-E', `node-llama-cpp@${NODE_LLAMA_CPP_VERSION}`, `${BINARY_PACKAGE}@${NODE_LLAMA_CPP_VERSION}`,
      '--omit=optional', '--no-audit', '--no-fund', '--ignore-scripts',
    ], staging).catch((e: Error) => ({ code: -1, stdout: '', stderr: e.message }));
    if (res.code !== 0) {
      throw new LlamaCppInstallError(`npm install of node-llama-cpp failed (exit ${res.code}):\n${tail(res.stderr)}`);
    }
    if (!hasExpectedFiles(staging)) {
      throw new LlamaCppInstallError(`npm install finished but ${BINARY_PACKAGE}@${NODE_LLAMA_CPP_VERSION} is incomplete in ${staging}`);
    }
    const probe = await probeLoad(staging);
    if (probe.code !== 0) {
      throw new LlamaCppInstallError(`node-llama-cpp installed but its CPU prebuilt does not load:\n${tail(probe.stdout + probe.stderr)}`);
    }
    // A concurrent installer may have finished first; its copy is as good as ours.
    if (hasExpectedFiles(dir) && (await probeLoad(dir)).code === 0) return dir;
    rmSync(dir, { recursive: true, force: true });
    renameSync(staging, dir);
    log(`llama.cpp baseline: node-llama-cpp ready in ${dir}`);
    return dir;
  } finally {
    rmSync(staging, { recursive: true, force: true });
  }
}
