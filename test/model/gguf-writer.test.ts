// GGUF export: what is written reads back as the same model, and matches what llama.cpp's own
// converter produced for the shipped models.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, readFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { loadModel, writeGguf, dequantizeQ8_0, f16ToF32, type LoadedModel, type Matrix } from '../../src/model/index.ts';
import { permuteRopeRows, slotTensor, tensorSlots } from '../../src/model/layout.ts';
import { ggufMatrix, parseGguf } from '../../src/model/gguf.ts';
import { f32ToF16, quantizeQ8_0 } from '../../src/model/numeric.ts';

const root = fileURLToPath(new URL('../../', import.meta.url));
let dir: string;
before(() => {
  dir = mkdtempSync(join(tmpdir(), 'tandem-gguf-'));
});
after(() => rmSync(dir, { recursive: true, force: true }));

function raw(t: Matrix | Float32Array): Buffer {
  const d = t instanceof Float32Array ? t : t.data;
  return Buffer.from(d.buffer, d.byteOffset, d.byteLength);
}

function assertSameTensors(a: LoadedModel, b: LoadedModel): void {
  for (const s of tensorSlots(a.config)) assert.ok(raw(slotTensor(a.weights, s.name)).equals(raw(slotTensor(b.weights, s.name))), s.name);
}

test('f16 conversion rounds to nearest even like F16C', () => {
  assert.equal(f32ToF16(1), 0x3c00);
  assert.equal(f32ToF16(-2), 0xc000);
  assert.equal(f32ToF16(65504), 0x7bff);
  assert.equal(f32ToF16(65520), 0x7c00, 'rounds up to infinity');
  assert.equal(f32ToF16(2 ** -24), 0x0001);
  assert.equal(f32ToF16(2 ** -25), 0x0000, 'tie to even (zero)');
  assert.equal(f32ToF16(3 * 2 ** -25), 0x0002, 'tie to even (two)');
  assert.equal(f32ToF16(1 + 2 ** -11), 0x3c00, 'tie to even');
  assert.equal(f32ToF16(1 + 3 * 2 ** -11), 0x3c02);
  for (const h of [0x0001, 0x03ff, 0x0400, 0x3555, 0x7bff, 0xfbff, 0x8001]) assert.equal(f32ToF16(f16ToF32(h)), h);
  // Q8_0 of a ramp: d = 1/127·max, quants span -127..127, round half away from zero
  const x = Float32Array.from({ length: 32 }, (_, i) => (i - 16) / 16);
  const q = quantizeQ8_0(x, 1, 32);
  assert.equal(q.length, 34);
  assert.equal(new Int8Array(q.buffer)[2], -127);
  const back = dequantizeQ8_0(q, 1, 32);
  const step = f16ToF32(q[0]! | (q[1]! << 8));
  x.forEach((v, i) => assert.ok(Math.abs(back[i]! - v) <= step / 2 + 1e-6));
});

test('synthetic:tiny round-trips through an F32 GGUF: same config, bits, tokenizer, fingerprint', async () => {
  const m = await loadModel('synthetic:tiny');
  const path = join(dir, 'tiny.gguf');
  const { tensors } = await writeGguf(m, path);
  assert.equal(tensors, 1 + 2 * 9 + 1);
  const g = parseGguf(path, new Uint8Array(readFileSync(path)));
  assert.equal(g.version, 3);
  assert.equal(g.metadata.get('general.architecture'), 'llama');
  assert.equal(g.metadata.get('general.name'), 'synthetic-tiny');
  assert.equal(g.metadata.get('llama.rope.dimension_count'), 16);
  assert.equal(g.tensors.has('output.weight'), false, 'tied: no output tensor, as llama.cpp expects');
  assert.deepEqual(g.tensors.get('blk.0.attn_k.weight')!.dims, [64, 32], 'fastest dim first');
  for (const t of g.tensors.values()) assert.equal((g.dataOffset + t.offset) % 32, 0, `${t.name} aligned`);

  const r = await loadModel(path);
  assert.equal(r.format, 'gguf');
  assert.equal(r.name, 'tiny');
  assert.deepEqual(r.config, m.config);
  assertSameTensors(m, r);
  assert.equal(r.fingerprint, m.fingerprint);
  assert.equal(r.tokenizer.kind, 'spm');
  assert.equal(m.tokenizer.kind, 'spm');
  if (r.tokenizer.kind === 'spm' && m.tokenizer.kind === 'spm') {
    assert.deepEqual(r.tokenizer.pieces, m.tokenizer.pieces);
    assert.deepEqual([...r.tokenizer.scores], [...m.tokenizer.scores]);
    assert.deepEqual([...r.tokenizer.tokenTypes!], [...m.tokenizer.tokenTypes!]);
    const pick = (t: typeof m.tokenizer & { kind: 'spm' }) => [t.bos, t.eos, t.unk, t.addBos, t.addDummyPrefix, t.spaceChar];
    assert.deepEqual(pick(r.tokenizer), pick(m.tokenizer));
  }
});

test('synthetic:tiny as Q8_0: quantized where rows allow, idempotent on re-export', async () => {
  const m = await loadModel('synthetic:tiny');
  const path = join(dir, 'tiny-q8.gguf');
  await writeGguf(m, path, { type: 'q8_0' });
  const r = await loadModel(path);
  assert.equal(r.weights.tokenEmbedding.type, 'q8_0');
  assert.equal(r.weights.layers[0]!.wq.type, 'q8_0');
  assert.equal(r.weights.layers[0]!.w2.type, 'f32', 'hidden 176 is not a multiple of 32: stays F32');
  assert.ok(raw(r.weights.layers[0]!.w2).equals(raw(m.weights.layers[0]!.w2)));
  const q = r.weights.layers[1]!.w3;
  const f = m.weights.layers[1]!.w3;
  assert.ok(q.type === 'q8_0' && f.type === 'f32');
  const deq = dequantizeQ8_0(q.data, q.rows, q.cols);
  let maxErr = 0;
  deq.forEach((v, i) => (maxErr = Math.max(maxErr, Math.abs(v - f.data[i]!))));
  assert.ok(maxErr > 0 && maxErr < 0.0346 / 127, `max error ${maxErr} within half a step`);
  assert.notEqual(r.fingerprint, m.fingerprint);
  const again = join(dir, 'tiny-q8-again.gguf');
  await writeGguf({ ...r, name: 'synthetic-tiny' }, again, { type: 'q8_0' });
  assert.ok(readFileSync(again).equals(readFileSync(path)), 'Q8_0 blocks are copied, not requantized');
});

test('stories260K .bin exported to GGUF equals the shipped GGUF (tensors, vocab, fingerprint)', async () => {
  const bin = await loadModel('stories260K');
  const path = join(dir, 'stories260K.gguf');
  await writeGguf(bin, path);
  const r = await loadModel(path);
  assert.equal(r.fingerprint, bin.fingerprint);
  const shipped = await loadModel('stories260K-gguf');
  assert.equal(r.fingerprint, shipped.fingerprint);
  assert.ok(r.tokenizer.kind === 'spm' && shipped.tokenizer.kind === 'spm');
  if (r.tokenizer.kind === 'spm' && shipped.tokenizer.kind === 'spm') {
    assert.deepEqual(r.tokenizer.pieces, shipped.tokenizer.pieces);
    assert.deepEqual([...r.tokenizer.scores].map((s) => s + 0), [...shipped.tokenizer.scores].map((s) => s + 0));
    assert.equal(r.tokenizer.spaceChar, '\u2581');
  }
});

test('HF (neox) export permutes Q/K like convert_hf_to_gguf: Q8_0 output is bit-identical to the shipped GGUF', async () => {
  const hf = await loadModel('tinystories-656k-f32');
  const path = join(dir, 'tiny656k-q8.gguf');
  await writeGguf(hf, path, { type: 'q8_0' });
  const mine = parseGguf(path, new Uint8Array(readFileSync(path)));
  const shippedPath = join(root, 'models/tinystories-656k/TinyStories-656K-Q8_0.gguf');
  const shipped = parseGguf(shippedPath, new Uint8Array(readFileSync(shippedPath)));
  assert.equal(mine.tensors.size, shipped.tensors.size);
  for (const [name, t] of shipped.tensors) {
    const u = mine.tensors.get(name);
    assert.ok(u, name);
    assert.equal(u.type, t.type, name);
    assert.deepEqual(u.dims, t.dims, name);
    assert.ok(raw(ggufMatrix(mine, u)).equals(raw(ggufMatrix(shipped, t))), `${name} differs from llama.cpp's`);
  }
  assert.deepEqual(mine.metadata.get('tokenizer.ggml.tokens'), shipped.metadata.get('tokenizer.ggml.tokens'));
  assert.deepEqual(mine.metadata.get('tokenizer.ggml.token_type'), shipped.metadata.get('tokenizer.ggml.token_type'));
  assert.equal(mine.metadata.get('tokenizer.ggml.bos_token_id'), 1);
  assert.equal(mine.metadata.get('tokenizer.ggml.add_space_prefix'), true);
  // merge-rank scores instead of llama.cpp's -1000 placeholders: "e ▁" is merge 0
  const toks = mine.metadata.get('tokenizer.ggml.tokens') as string[];
  const scores = mine.metadata.get('tokenizer.ggml.scores') as Float32Array;
  assert.equal(scores[toks.indexOf('e\u2581')], -1);

  const f32Path = join(dir, 'tiny656k-f32.gguf');
  await writeGguf(hf, f32Path);
  const r = await loadModel(f32Path);
  assert.equal(r.config.ropeStyle, 'interleaved');
  const { ropeStyle: _a, ...restR } = r.config;
  const { ropeStyle: _b, ...restH } = hf.config;
  assert.deepEqual(restR, restH);
  assert.ok(raw(r.weights.layers[1]!.wk).equals(raw(permuteRopeRows(hf.weights.layers[1]!.wk, 4))));
  assert.ok(raw(permuteRopeRows(r.weights.layers[1]!.wq, 8, true)).equals(raw(hf.weights.layers[1]!.wq)), 'inverse permutation');
  assert.ok(raw(r.weights.layers[1]!.wv).equals(raw(hf.weights.layers[1]!.wv)), 'V is not permuted');
});

test('tandem export-gguf writes a loadable file', async () => {
  const out = join(dir, 'cli.gguf');
  const res = spawnSync(process.execPath, ['bin/tandem.js', 'export-gguf', '--model', 'synthetic:tiny', '--out', out, '--type', 'q8_0'], {
    cwd: root,
    encoding: 'utf8',
  });
  assert.equal(res.status, 0, res.stderr);
  assert.match(res.stdout, /wrote .*cli\.gguf: synthetic-tiny, 20 tensors, q8_0/);
  assert.ok(existsSync(out));
  const m = await loadModel(out);
  assert.equal(m.weights.layers[0]!.wq.type, 'q8_0');
});
