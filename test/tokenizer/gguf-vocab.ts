// Test helper: reads only the tokenizer metadata of a GGUF file (the model loaders own real GGUF
// parsing), so the spm tokenizer can be checked against a vocabulary that spells spaces U+2581.
import { readFileSync } from 'node:fs';

export type GgufValue = number | bigint | boolean | string | GgufValue[];

export function readGgufMetadata(path: string): Map<string, GgufValue> {
  const buf = readFileSync(path);
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  if (buf.toString('latin1', 0, 4) !== 'GGUF') throw new Error(`${path}: not a GGUF file`);
  let at = 8;
  const u64 = (): number => {
    const v = Number(view.getBigUint64(at, true));
    at += 8;
    return v;
  };
  const u32 = (): number => {
    const v = view.getUint32(at, true);
    at += 4;
    return v;
  };
  const string = (): string => {
    const n = u64();
    const s = buf.toString('utf8', at, at + n);
    at += n;
    return s;
  };
  const value = (type: number): GgufValue => {
    switch (type) {
      case 0: return view.getUint8(at++);
      case 1: return view.getInt8(at++);
      case 2: { const v = view.getUint16(at, true); at += 2; return v; }
      case 3: { const v = view.getInt16(at, true); at += 2; return v; }
      case 4: return u32();
      case 5: { const v = view.getInt32(at, true); at += 4; return v; }
      case 6: { const v = view.getFloat32(at, true); at += 4; return v; }
      case 7: return view.getUint8(at++) !== 0;
      case 8: return string();
      case 9: {
        const itemType = u32();
        const n = u64();
        const out: GgufValue[] = new Array(n);
        for (let i = 0; i < n; i++) out[i] = value(itemType);
        return out;
      }
      case 10: { const v = view.getBigUint64(at, true); at += 8; return v; }
      case 11: { const v = view.getBigInt64(at, true); at += 8; return v; }
      case 12: { const v = view.getFloat64(at, true); at += 8; return v; }
      default: throw new Error(`${path}: unknown GGUF value type ${type}`);
    }
  };
  u64(); // tensor count
  const kvCount = u64();
  const meta = new Map<string, GgufValue>();
  for (let i = 0; i < kvCount; i++) {
    const key = string();
    meta.set(key, value(u32()));
  }
  return meta;
}
