// File access for loaders: every OS error becomes a one-line ModelLoadError naming the file.
import { readFile, stat } from 'node:fs/promises';
import { ModelLoadError } from './types.ts';

function problemOf(err: unknown): string {
  const code = (err as NodeJS.ErrnoException)?.code;
  switch (code) {
    case 'ENOENT':
      return 'no such file or directory';
    case 'EACCES':
    case 'EPERM':
      return 'permission denied';
    case 'EISDIR':
      return 'is a directory, expected a file';
    case 'ENOTDIR':
      return 'a parent of this path is not a directory';
    case 'ERR_FS_FILE_TOO_LARGE':
      return 'file is too large to load (over 2 GiB)';
    default:
      return `cannot read (${code ?? String((err as Error)?.message ?? err).split('\n')[0]})`;
  }
}

/** The whole file in one read (the loaders slice tensors out of it without further I/O). */
export async function readBytes(path: string): Promise<Uint8Array> {
  try {
    const buf = await readFile(path);
    return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
  } catch (err) {
    throw new ModelLoadError(path, problemOf(err));
  }
}

export async function readText(path: string): Promise<string> {
  return new TextDecoder('utf-8').decode(await readBytes(path));
}

export async function readJson(path: string, what: string): Promise<unknown> {
  const text = await readText(path);
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new ModelLoadError(path, `bad ${what}: invalid JSON (${(err as Error).message.split('\n')[0]})`);
  }
}

export async function kindOf(path: string): Promise<'file' | 'dir' | undefined> {
  try {
    const s = await stat(path);
    return s.isDirectory() ? 'dir' : 'file';
  } catch (err) {
    const code = (err as NodeJS.ErrnoException)?.code;
    if (code === 'ENOENT') return undefined;
    throw new ModelLoadError(path, problemOf(err));
  }
}

export function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
