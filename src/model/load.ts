// loadModel: one entry point for every model reference (built-in name, synthetic:<preset>,
// llama2.c .bin, GGUF file, Hugging Face folder), dispatching on what the path actually is.
import { open } from 'node:fs/promises';
import { basename, dirname, extname } from 'node:path';
import { kindOf } from './files.ts';
import { fingerprintModel } from './fingerprint.ts';
import { GGUF_MAGIC, loadGguf } from './gguf.ts';
import { loadHfDir } from './hf.ts';
import { loadLlama2c, type LoadedParts } from './llama2c.ts';
import { builtinNames, resolveBuiltin } from './registry.ts';
import { generateSynthetic, SYNTHETIC_PRESETS } from './synthetic.ts';
import { readTokenizerOverride } from './tokenizer-files.ts';
import type { LoadedModel } from './types.ts';
import { ModelLoadError } from './types.ts';

export interface LoadOptions {
  /** tokenizer file to use instead of the model's own: tokenizer.json (Hugging Face) or a llama2.c tokenizer.bin */
  tokenizer?: string;
}

async function firstBytes(path: string, n: number): Promise<Uint8Array> {
  const fh = await open(path, 'r');
  try {
    const buf = new Uint8Array(n);
    const { bytesRead } = await fh.read(buf, 0, n, 0);
    return buf.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
}

function stem(path: string): string {
  const base = basename(path.replace(/[/\\]+$/, ''));
  const ext = extname(base);
  return ext ? base.slice(0, -ext.length) : base;
}

async function loadPath(path: string, tokenizer: string | undefined): Promise<{ parts: LoadedParts; name: string }> {
  const kind = await kindOf(path);
  if (kind === undefined) {
    if (!/[/\\.]/.test(path))
      throw new ModelLoadError(
        path,
        `unknown model (built-in: ${builtinNames().join(', ')}; or synthetic:<${Object.keys(SYNTHETIC_PRESETS).join('|')}>, or a path to a .bin, .gguf or Hugging Face folder)`,
      );
    throw new ModelLoadError(path, 'no such file or directory');
  }
  if (kind === 'dir') return { parts: await loadHfDir(path, tokenizer), name: stem(path) };
  if (extname(path).toLowerCase() === '.safetensors') {
    // a bare safetensors file: its folder holds config.json and the tokenizer
    return { parts: await loadHfDir(dirname(path), tokenizer), name: stem(dirname(path)) };
  }
  let head: Uint8Array;
  try {
    head = await firstBytes(path, 4);
  } catch (err) {
    throw new ModelLoadError(path, `cannot read (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  const isGguf = head.length === 4 && new DataView(head.buffer).getUint32(0, true) === GGUF_MAGIC;
  if (isGguf || extname(path).toLowerCase() === '.gguf') return { parts: await loadGguf(path, tokenizer), name: stem(path) };
  return { parts: await loadLlama2c(path, tokenizer), name: stem(path) };
}

/** Load a model: a built-in name (see resolveBuiltin), `synthetic:<preset>`, a llama2.c checkpoint,
 * a GGUF file or a Hugging Face folder. Any unusable input rejects with a one-line ModelLoadError. */
export async function loadModel(ref: string, opts: LoadOptions = {}): Promise<LoadedModel> {
  if (typeof ref !== 'string' || ref.trim() === '') throw new ModelLoadError(String(ref), 'empty model reference');
  try {
    let parts: LoadedParts;
    let name: string;
    if (ref.startsWith('synthetic:')) {
      const preset = ref.slice('synthetic:'.length);
      if (!Object.hasOwn(SYNTHETIC_PRESETS, preset))
        throw new ModelLoadError(ref, `unknown synthetic preset '${preset}' (presets: ${Object.keys(SYNTHETIC_PRESETS).join(', ')})`);
      parts = generateSynthetic(preset);
      name = `synthetic-${preset}`;
      if (opts.tokenizer) {
        const t = await readTokenizerOverride(opts.tokenizer, parts.config.vocabSize);
        parts = { ...parts, tokenizer: t.spec, ...(t.chatTemplate !== undefined ? { chatTemplate: t.chatTemplate } : {}) };
      }
    } else {
      const builtin = resolveBuiltin(ref);
      if (builtin) {
        parts = (await loadPath(builtin.model, opts.tokenizer ?? builtin.tokenizer)).parts;
        name = builtin.name;
      } else ({ parts, name } = await loadPath(ref, opts.tokenizer));
    }
    return { name, source: ref, ...parts, fingerprint: fingerprintModel(parts.config, parts.weights) };
  } catch (err) {
    if (err instanceof ModelLoadError) throw err;
    // last line of defence: a loader bug on a strange file must still read as a model error
    const msg = String((err as Error)?.message ?? err).split('\n')[0];
    throw new ModelLoadError(ref, `cannot load (${(err as Error)?.name ?? 'Error'}: ${msg})`);
  }
}
