// The shipped models load from every format with the facts their READMEs state.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { dequantizeQ8_0, f16ToF32, loadModel, resolveBuiltin, type LoadedModel, type Matrix } from '../../src/model/index.ts';
import { permuteRopeRows, slotTensor, tensorSlots } from '../../src/model/layout.ts';
import { f32ToF16 } from '../../src/model/numeric.ts';
import { ggufParts, serializeGguf } from '../../src/model/gguf-writer.ts';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const models = fileURLToPath(new URL('../../models/', import.meta.url));

function bytesOf(t: Matrix | Float32Array): Buffer {
  const d = t instanceof Float32Array ? t : t.data;
  return Buffer.from(d.buffer, d.byteOffset, d.byteLength);
}

function architecture(m: LoadedModel) {
  const { contextLength: _ctx, ...rest } = m.config;
  return rest;
}

test('stories260K: llama2.c .bin and F32 GGUF hold the same model', async () => {
  const bin = await loadModel('stories260K');
  const gguf = await loadModel('stories260K-gguf');
  assert.equal(bin.format, 'llama2c');
  assert.equal(gguf.format, 'gguf');
  assert.equal(bin.name, 'stories260K');
  assert.equal(gguf.name, 'stories260K-gguf');
  const expected = { dim: 64, hiddenDim: 172, nLayers: 5, nHeads: 8, nKvHeads: 4, headDim: 8, vocabSize: 512 };
  for (const m of [bin, gguf]) {
    for (const [k, v] of Object.entries(expected)) assert.equal(m.config[k as keyof typeof expected], v, `${m.name} ${k}`);
    assert.equal(m.config.ropeStyle, 'interleaved');
    assert.equal(m.config.rmsEps, 1e-5);
    assert.equal(m.config.ropeTheta, 10000);
    assert.equal(m.config.tiedEmbeddings, true);
    assert.equal(m.weights.output, m.weights.tokenEmbedding, 'tied classifier is the embedding object');
  }
  // the GGUF converter wrote context_length 2048 (its default); the checkpoint says 512
  assert.equal(bin.config.contextLength, 512);
  assert.equal(gguf.config.contextLength, 2048);
  assert.deepEqual(architecture(bin), architecture(gguf));
  const slots = tensorSlots(bin.config);
  assert.equal(slots.length, 1 + 5 * 9 + 1);
  for (const s of slots) {
    const a = slotTensor(bin.weights, s.name);
    const b = slotTensor(gguf.weights, s.name);
    if (!(a instanceof Float32Array)) assert.equal(a.type, 'f32');
    assert.ok(bytesOf(a).equals(bytesOf(b)), `${s.name} differs`);
  }
  assert.equal(bin.fingerprint, gguf.fingerprint);
  assert.match(bin.fingerprint, /^[0-9a-f]{64}$/);
});

test('stories260K tokenizers: tok512.bin (llama2.c spelling) and the GGUF vocab (U+2581)', async () => {
  const bin = await loadModel('stories260K');
  const gguf = await loadModel('stories260K-gguf');
  assert.equal(bin.tokenizer.kind, 'spm');
  assert.equal(gguf.tokenizer.kind, 'spm');
  if (bin.tokenizer.kind !== 'spm' || gguf.tokenizer.kind !== 'spm') return;
  const a = bin.tokenizer;
  const b = gguf.tokenizer;
  assert.deepEqual(
    { bos: a.bos, eos: a.eos, unk: a.unk, addBos: a.addBos, addDummyPrefix: a.addDummyPrefix, spaceChar: a.spaceChar },
    { bos: 1, eos: 2, unk: 0, addBos: true, addDummyPrefix: true, spaceChar: ' ' },
  );
  assert.deepEqual(
    { bos: b.bos, eos: b.eos, unk: b.unk, addBos: b.addBos, addDummyPrefix: b.addDummyPrefix, spaceChar: b.spaceChar },
    { bos: 1, eos: 2, unk: 0, addBos: true, addDummyPrefix: true, spaceChar: '\u2581' },
  );
  assert.equal(a.pieces.length, 512);
  assert.deepEqual(a.pieces.slice(0, 4), ['<unk>', '\n<s>\n', '\n</s>\n', '<0x00>']);
  assert.equal(a.pieces[258], '<0xFF>');
  assert.deepEqual([a.scores[259]! + 0, a.scores[260], a.scores[511]], [0, -1, -252]); // the file stores -0
  assert.equal(a.tokenTypes?.[3], 6, 'byte tokens typed as bytes');
  // same vocab and scores apart from the spelling of spaces and BOS/EOS
  for (let i = 3; i < 512; i++) assert.equal(b.pieces[i], a.pieces[i]!.replaceAll(' ', '\u2581'), `piece ${i}`);
  assert.deepEqual([...b.scores].slice(3), [...a.scores].slice(3));
  assert.ok(a.pieces.includes(' Once') || a.pieces.includes(' upon'));
});

test('tinystories-656k: Q8_0 GGUF with the HF tokenizer', async () => {
  const m = await loadModel('tinystories-656k');
  assert.equal(m.format, 'gguf');
  const c = m.config;
  assert.deepEqual(
    [c.dim, c.hiddenDim, c.nLayers, c.nHeads, c.nKvHeads, c.headDim, c.vocabSize, c.contextLength],
    [128, 384, 2, 8, 4, 16, 2048, 512],
  );
  assert.equal(c.rmsEps, 1e-6);
  assert.equal(c.ropeStyle, 'interleaved');
  assert.equal(c.tiedEmbeddings, true);
  assert.equal(m.weights.output, m.weights.tokenEmbedding);
  let q8 = 0;
  let f32 = 0;
  for (const s of tensorSlots(c)) {
    const t = slotTensor(m.weights, s.name);
    if (t instanceof Float32Array) f32++;
    else {
      assert.equal(t.type, 'q8_0', s.name);
      assert.equal(t.data.length, (t.rows * t.cols * 34) / 32);
      q8++;
    }
  }
  assert.deepEqual([q8, f32], [15, 5]);
  assert.equal(m.tokenizer.kind, 'hf');
  if (m.tokenizer.kind === 'hf') {
    assert.equal((m.tokenizer.tokenizerJson as { model: { type: string } }).model.type, 'BPE');
    assert.equal((m.tokenizer.tokenizerConfig as { bos_token: string }).bos_token, '<|start_story|>');
    assert.equal(m.tokenizer.bos, 1);
    assert.equal(m.tokenizer.eos, 2);
  }
});

test('tinystories-656k GGUF without --tokenizer uses the embedded SentencePiece vocab', async () => {
  const m = await loadModel(`${models}tinystories-656k/TinyStories-656K-Q8_0.gguf`);
  assert.equal(m.name, 'TinyStories-656K-Q8_0');
  assert.equal(m.tokenizer.kind, 'spm');
  if (m.tokenizer.kind !== 'spm') return;
  assert.equal(m.tokenizer.pieces.length, 2048);
  assert.equal(m.tokenizer.pieces[1], '<|start_story|>');
  assert.equal(m.tokenizer.spaceChar, '\u2581');
  assert.equal(m.tokenizer.scores[100], -1000, 'placeholder scores, as the README says');
  assert.equal(m.tokenizer.tokenTypes?.[1], 3);
});

test('tinystories-656k-f32: HF folder is f32, neox and tied (embedding stored only as lm_head)', async () => {
  const m = await loadModel('tinystories-656k-f32');
  assert.equal(m.format, 'hf');
  assert.equal(m.name, 'tinystories-656k-f32');
  assert.equal(m.config.ropeStyle, 'neox');
  assert.equal(m.config.tiedEmbeddings, true);
  assert.equal(m.weights.output, m.weights.tokenEmbedding);
  for (const s of tensorSlots(m.config)) {
    const t = slotTensor(m.weights, s.name);
    if (!(t instanceof Float32Array)) assert.equal(t.type, 'f32');
  }
  // every value is an exact bf16/f16 upcast: low 16 bits zero
  const w = m.weights.layers[0]!.wq;
  assert.equal(w.type, 'f32');
  const bits = new Uint32Array(w.data.buffer, w.data.byteOffset, w.data.length);
  assert.ok(bits.every((b) => (b & 0xffff) === 0));
  assert.equal(m.tokenizer.kind, 'hf');
  // a bare safetensors path loads the same folder
  const again = await loadModel(`${models}tinystories-656k/model.safetensors`);
  assert.equal(again.fingerprint, m.fingerprint);
  assert.equal(again.name, 'tinystories-656k');
});

test('Q8_0 GGUF dequantizes to within one quantization step of the f32 safetensors (after the Q/K permutation)', async () => {
  const q = await loadModel('tinystories-656k');
  const f = await loadModel('tinystories-656k-f32');
  const c = f.config;
  let checked = 0;
  for (const s of tensorSlots(c)) {
    const a = slotTensor(q.weights, s.name);
    let b = slotTensor(f.weights, s.name);
    if (a instanceof Float32Array || b instanceof Float32Array) {
      assert.ok(bytesOf(a).equals(bytesOf(b)), `${s.name}: norms are stored F32 in both`);
      continue;
    }
    if (s.name.endsWith('attn_q.weight')) b = permuteRopeRows(b, c.nHeads);
    if (s.name.endsWith('attn_k.weight')) b = permuteRopeRows(b, c.nKvHeads);
    assert.equal(a.type, 'q8_0');
    assert.equal(b.type, 'f32');
    if (a.type !== 'q8_0' || b.type !== 'f32') continue;
    // compare a few rows: first, middle, last
    for (const row of [0, a.rows >> 1, a.rows - 1]) {
      const rowBytes = (a.cols / 32) * 34;
      const deq = dequantizeQ8_0(a.data.subarray(row * rowBytes, (row + 1) * rowBytes), 1, a.cols);
      for (let k = 0; k < a.cols; k++) {
        const block = a.data.subarray(row * rowBytes + (k >> 5) * 34);
        const step = f16ToF32(block[0]! | (block[1]! << 8));
        const want = b.data[row * b.cols + k]!;
        assert.ok(Math.abs(deq[k]! - want) <= step, `${s.name}[${row}][${k}]: ${deq[k]} vs ${want} (step ${step})`);
      }
      checked++;
    }
  }
  assert.equal(checked, 15 * 3);
  // without the permutation attn_q rows would not line up: the check above can fail
  const a = q.weights.layers[0]!.wq;
  const b = f.weights.layers[0]!.wq;
  if (a.type === 'q8_0' && b.type === 'f32') {
    const deq = dequantizeQ8_0(a.data, a.rows, a.cols);
    let maxErr = 0;
    for (let i = 0; i < a.cols; i++) maxErr = Math.max(maxErr, Math.abs(deq[a.cols + i]! - b.data[a.cols + i]!));
    assert.ok(maxErr > 0.01, 'GGUF row 1 is HF row 8, not HF row 1');
  }
});

test('built-in registry resolves shipped files', () => {
  const b = resolveBuiltin('stories260K');
  assert.ok(b && b.model.endsWith('models/stories260K/stories260K.bin'));
  assert.ok(b.tokenizer?.endsWith('tok512.bin'));
  assert.ok(resolveBuiltin('tinystories-656k')?.tokenizer?.endsWith('tokenizer.json'));
  assert.equal(resolveBuiltin('nope'), undefined);
});

test('16-bit weights: BF16/F16 safetensors (sharded) and F16/BF16 GGUF tensors widen to f32', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'tandem-16bit-'));
  try {
    const src = `${models}tinystories-656k/`;
    const f32 = await loadModel('tinystories-656k-f32');
    // rewrite the safetensors as two shards: BF16 (lossless here: the low 16 bits are zero) and F16
    const buf = readFileSync(`${src}model.safetensors`);
    const n = Number(buf.readBigUInt64LE(0));
    const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8')) as Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;
    const names = Object.keys(header).filter((k) => k !== '__metadata__');
    const shards: Record<string, string[]> = { 'a.safetensors': [], 'b.safetensors': [] };
    names.forEach((k, i) => shards[i % 2 ? 'b.safetensors' : 'a.safetensors']!.push(k));
    const weightMap: Record<string, string> = {};
    const f16Names = new Set<string>();
    for (const [file, list] of Object.entries(shards)) {
      const dtype = file === 'a.safetensors' ? 'BF16' : 'F16';
      const out: Record<string, unknown> = { __metadata__: header.__metadata__ };
      const parts: Buffer[] = [];
      let off = 0;
      for (const k of list) {
        const e = header[k]!;
        const vals = new Float32Array(buf.buffer.slice(buf.byteOffset + 8 + n + e.data_offsets[0], buf.byteOffset + 8 + n + e.data_offsets[1]));
        const half = new Uint16Array(vals.length);
        const bits = new Uint32Array(vals.buffer);
        for (let i = 0; i < vals.length; i++) half[i] = dtype === 'BF16' ? bits[i]! >>> 16 : f32ToF16(vals[i]!);
        out[k] = { dtype, shape: e.shape, data_offsets: [off, off + half.byteLength] };
        parts.push(Buffer.from(half.buffer));
        off += half.byteLength;
        weightMap[k] = file;
        if (dtype === 'F16') f16Names.add(k);
      }
      const json = Buffer.from(JSON.stringify(out));
      const len = Buffer.alloc(8);
      len.writeBigUInt64LE(BigInt(json.length));
      writeFileSync(join(dir, file), Buffer.concat([len, json, ...parts]));
    }
    writeFileSync(join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: weightMap }));
    for (const f of ['config.json', 'tokenizer.json', 'tokenizer_config.json']) copyFileSync(`${src}${f}`, join(dir, f));
    const m = await loadModel(dir);
    const wBf16 = m.weights.tokenEmbedding; // lm_head.weight, shard a (BF16)
    assert.ok(!f16Names.has('lm_head.weight'));
    assert.ok(bytesOf(wBf16).equals(bytesOf(f32.weights.tokenEmbedding)), 'BF16 of a BF16-exact tensor is lossless');
    const f16Name = [...f16Names].find((k) => k.endsWith('q_proj.weight'))!;
    const layer = Number(/layers\.(\d+)\./.exec(f16Name)![1]);
    const got = m.weights.layers[layer]!.wq;
    const want = f32.weights.layers[layer]!.wq;
    assert.ok(got.type === 'f32' && want.type === 'f32');
    for (let i = 0; i < want.data.length; i += 97) assert.equal(got.data[i], f16ToF32(f32ToF16(want.data[i]!)));

    // GGUF: the same F32 model with F16 and BF16 matrices
    const parts = ggufParts(f32);
    for (const t of parts.tensors) {
      if (t.dims.length !== 2) continue;
      const vals = new Float32Array(t.data.buffer.slice(t.data.byteOffset, t.data.byteOffset + t.data.byteLength));
      const bits = new Uint32Array(vals.buffer);
      const half = new Uint16Array(vals.length);
      const useBf16 = t.name.includes('ffn');
      for (let i = 0; i < vals.length; i++) half[i] = useBf16 ? bits[i]! >>> 16 : f32ToF16(vals[i]!);
      t.type = useBf16 ? 30 : 1;
      t.data = new Uint8Array(half.buffer);
    }
    const p = join(dir, 'half.gguf');
    writeFileSync(p, serializeGguf(parts.metadata, parts.tensors, 2)); // GGUF v2 as well
    const g = await loadModel(p);
    assert.equal(g.weights.layers[0]!.w1.type, 'f32');
    assert.ok(bytesOf(g.weights.layers[1]!.w2).equals(bytesOf(f32.weights.layers[1]!.w2)), 'BF16 ffn_down is lossless here');
    const gq = g.weights.layers[0]!.wk;
    const fq = permuteRopeRows(f32.weights.layers[0]!.wk, 4);
    assert.ok(gq.type === 'f32' && fq.type === 'f32');
    for (let i = 0; i < fq.data.length; i += 7) assert.equal(gq.data[i], f16ToF32(f32ToF16(fq.data[i]!)));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
