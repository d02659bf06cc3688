// safetensors: u64 little-endian header length, a JSON header {name: {dtype, shape, data_offsets}},
// then the data section. https://github.com/huggingface/safetensors#format
import { isObject } from './files.ts';
import { f32At, widenBf16, widenF16 } from './numeric.ts';
import { ModelLoadError } from './types.ts';

export interface SafetensorsEntry {
  name: string;
  dtype: string;
  shape: number[];
  /** absolute byte range in the file */
  begin: number;
  end: number;
}

export interface SafetensorsFile {
  file: string;
  bytes: Uint8Array;
  tensors: Map<string, SafetensorsEntry>;
  metadata: Record<string, string>;
}

const DTYPE_BYTES: Record<string, number> = {
  F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, U16: 2, U32: 4, U64: 8, BOOL: 1,
  F8_E4M3: 1, F8_E5M2: 1,
};

export function parseSafetensors(file: string, bytes: Uint8Array): SafetensorsFile {
  const bad = (problem: string) => new ModelLoadError(file, `bad safetensors header: ${problem}`);
  if (bytes.length < 8) throw bad(`file is only ${bytes.length} bytes`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const n = view.getBigUint64(0, true);
  if (n > BigInt(bytes.length - 8)) throw bad(`header length ${n} exceeds the file size ${bytes.length} (truncated or not safetensors)`);
  const headerLen = Number(n);
  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(8, 8 + headerLen)));
  } catch (err) {
    throw bad(`not valid JSON (${(err as Error).message.split('\n')[0]})`);
  }
  if (!isObject(header)) throw bad('not a JSON object');
  const dataStart = 8 + headerLen;
  const tensors = new Map<string, SafetensorsEntry>();
  let metadata: Record<string, string> = {};
  for (const [name, v] of Object.entries(header)) {
    if (name === '__metadata__') {
      if (!isObject(v)) throw bad('__metadata__ is not an object');
      metadata = Object.fromEntries(Object.entries(v).map(([k, x]) => [k, String(x)]));
      continue;
    }
    if (!isObject(v)) throw bad(`entry ${name} is not an object`);
    const { dtype, shape, data_offsets: offs } = v;
    if (typeof dtype !== 'string') throw bad(`tensor ${name} has no dtype`);
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) throw bad(`tensor ${name} has a bad shape`);
    if (!Array.isArray(offs) || offs.length !== 2 || !offs.every((d) => Number.isSafeInteger(d) && d >= 0) || offs[0] > offs[1])
      throw bad(`tensor ${name} has bad data_offsets`);
    const numel = (shape as number[]).reduce((a, b) => a * b, 1);
    const eltBytes = DTYPE_BYTES[dtype];
    if (eltBytes !== undefined && numel * eltBytes !== offs[1] - offs[0])
      throw bad(`tensor ${name}: shape ${JSON.stringify(shape)} of ${dtype} needs ${numel * eltBytes} bytes but data_offsets span ${offs[1] - offs[0]}`);
    const begin = dataStart + (offs[0] as number);
    const end = dataStart + (offs[1] as number);
    if (end > bytes.length)
      throw new ModelLoadError(file, `truncated: tensor ${name} needs bytes ${begin}..${end} but the file has ${bytes.length} bytes`);
    tensors.set(name, { name, dtype, shape: shape as number[], begin, end });
  }
  return { file, bytes, tensors, metadata };
}

/** A tensor's values as f32 (F32 as a view when aligned, F16/BF16 widened). */
export function safetensorsF32(f: SafetensorsFile, e: SafetensorsEntry): Float32Array {
  const count = e.shape.reduce((a, b) => a * b, 1);
  switch (e.dtype) {
    case 'F32':
      return f32At(f.bytes, e.begin, count);
    case 'F16':
      return widenF16(f.bytes, e.begin, count);
    case 'BF16':
      return widenBf16(f.bytes, e.begin, count);
    default:
      throw new ModelLoadError(f.file, `unsupported safetensors dtype ${e.dtype} for tensor ${e.name} (F32, F16, BF16 only)`);
  }
}
