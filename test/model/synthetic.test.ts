// Synthetic presets: deterministic bits, right shapes, a reachable SentencePiece vocabulary.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { loadModel, SYNTHETIC_PRESETS, type Matrix } from '../../src/model/index.ts';
import { slotTensor, tensorSlots } from '../../src/model/layout.ts';

function hashAll(m: Awaited<ReturnType<typeof loadModel>>): string {
  const h = createHash('sha256');
  for (const s of tensorSlots(m.config)) {
    const t = slotTensor(m.weights, s.name);
    const d = t instanceof Float32Array ? t : t.data;
    h.update(new Uint8Array(d.buffer, d.byteOffset, d.byteLength));
  }
  return h.digest('hex');
}

test('synthetic:tiny is bit-identical across loads and pinned to the generator', async () => {
  const a = await loadModel('synthetic:tiny');
  const b = await loadModel('synthetic:tiny');
  assert.equal(a.name, 'synthetic-tiny');
  assert.equal(a.source, 'synthetic:tiny');
  assert.equal(a.format, 'synthetic');
  assert.notEqual(a.weights.tokenEmbedding, b.weights.tokenEmbedding, 'fresh arrays per load');
  assert.equal(hashAll(a), hashAll(b));
  assert.equal(a.fingerprint, b.fingerprint);
  // pinned: a change of PRNG, seeding, scale or tensor order must show up here
  const e = a.weights.tokenEmbedding as Extract<Matrix, { type: 'f32' }>;
  assert.deepEqual(
    [...new Uint32Array(e.data.buffer, e.data.byteOffset, 4)],
    [0xba38d569, 0x3ca57916, 0x3c887f83, 0xbce14de1],
  );
  assert.equal(a.fingerprint, 'e2dc5fb365838982cb5fee5e3439bcb623b206643d2759723b72b2fa08d394a3');
  assert.equal(a.tokenizer.kind, 'spm');
  if (a.tokenizer.kind === 'spm')
    assert.equal(
      createHash('sha256').update(a.tokenizer.pieces.join('\n')).digest('hex'),
      '1bb33a49fedc1c8cd84c7e2f3a887a6f6ead99edc809901d37c210cfa3bcedae',
    );
});

test('synthetic:tiny shapes, scale and norms', async () => {
  const m = await loadModel('synthetic:tiny');
  assert.deepEqual(m.config, {
    architecture: 'llama',
    dim: 64,
    hiddenDim: 176,
    nLayers: 2,
    nHeads: 4,
    nKvHeads: 2,
    headDim: 16,
    vocabSize: 512,
    contextLength: 512,
    ropeTheta: 10000,
    rmsEps: 1e-5,
    ropeStyle: 'interleaved',
    tiedEmbeddings: true,
  });
  assert.equal(m.weights.output, m.weights.tokenEmbedding);
  const l = m.weights.layers[1]!;
  assert.deepEqual([l.wq.rows, l.wq.cols, l.wk.rows, l.wk.cols, l.wo.rows, l.wo.cols], [64, 64, 32, 64, 64, 64]);
  assert.deepEqual([l.w1.rows, l.w1.cols, l.w2.rows, l.w2.cols, l.w3.rows, l.w3.cols], [176, 64, 64, 176, 176, 64]);
  assert.ok(l.attnNorm.every((x) => x === 1) && m.weights.finalNorm.every((x) => x === 1));
  const w = l.w1 as Extract<Matrix, { type: 'f32' }>;
  let sum = 0;
  let sq = 0;
  for (const x of w.data) {
    sum += x;
    sq += x * x;
  }
  const std = Math.sqrt(sq / w.data.length);
  assert.ok(Math.abs(sum / w.data.length) < 0.002, 'mean ≈ 0');
  assert.ok(std > 0.018 && std < 0.022, `std ${std} ≈ 0.02`);
  // layers differ (independent streams per tensor)
  assert.notDeepEqual([...m.weights.layers[0]!.w1.data.slice(0, 8)], [...l.w1.data.slice(0, 8)]);
});

test('synthetic vocab: exact size, unique, byte tokens, every merge reachable from two earlier pieces', async () => {
  const m = await loadModel('synthetic:15m');
  assert.equal(m.config.vocabSize, 32000);
  assert.equal(m.config.dim, 288);
  assert.equal(m.weights.layers.length, 6);
  const t = m.tokenizer;
  assert.equal(t.kind, 'spm');
  if (t.kind !== 'spm') return;
  assert.equal(t.pieces.length, 32000);
  assert.equal(new Set(t.pieces).size, 32000);
  assert.deepEqual(t.pieces.slice(0, 3), ['<unk>', '<s>', '</s>']);
  for (let b = 0; b < 256; b++) {
    assert.equal(t.pieces[3 + b], `<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`);
    assert.equal(t.tokenTypes?.[3 + b], 6);
  }
  assert.deepEqual(
    { bos: t.bos, eos: t.eos, unk: t.unk, addBos: t.addBos, sp: t.spaceChar, dummy: t.addDummyPrefix },
    { bos: 1, eos: 2, unk: 0, addBos: true, sp: '\u2581', dummy: true },
  );
  for (let i = 260; i < t.pieces.length; i++) assert.ok(t.scores[i]! < t.scores[i - 1]!, 'scores decrease');
  const earlier = new Set<string>();
  let merges = 0;
  for (let i = 259; i < t.pieces.length; i++) {
    const p = [...t.pieces[i]!];
    if (p.length > 1) {
      let ok = false;
      for (let k = 1; k < p.length && !ok; k++) ok = earlier.has(p.slice(0, k).join('')) && earlier.has(p.slice(k).join(''));
      assert.ok(ok, `piece ${i} ${t.pieces[i]} is not a merge of two earlier pieces`);
      merges++;
    }
    earlier.add(t.pieces[i]!);
  }
  assert.ok(merges > 31000);
  for (const w of ['\u2581the', '\u2581Once', '\u2581upon', 'ing']) assert.ok(t.pieces.includes(w), w);
});

test('presets and unknown preset', async () => {
  assert.deepEqual(Object.keys(SYNTHETIC_PRESETS), ['tiny', '15m', '100m']);
  assert.deepEqual(
    { ...SYNTHETIC_PRESETS['100m'] },
    { dim: 768, hiddenDim: 2048, nLayers: 12, nHeads: 12, nKvHeads: 12, vocabSize: 32000, contextLength: 8192 },
  );
  await assert.rejects(loadModel('synthetic:1b'), (e: Error) => e.name === 'ModelLoadError' && /unknown synthetic preset '1b'.*tiny, 15m, 100m/.test(e.message));
  await assert.rejects(loadModel('synthetic:toString'), { name: 'ModelLoadError' });
});
