// Every unusable input is a one-line ModelLoadError naming the file and the problem: corrupt
// copies of the shipped files and hand-made GGUFs are written to a temp dir and loaded.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { loadModel, ModelLoadError } from '../../src/model/index.ts';
import { ggufParts, serializeGguf, type GgufMetaValue, type GgufTensorOut } from '../../src/model/gguf-writer.ts';

const root = fileURLToPath(new URL('../../', import.meta.url));
const models = join(root, 'models');
let dir: string;
let tinyParts: { metadata: [string, GgufMetaValue][]; tensors: GgufTensorOut[] };

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'tandem-model-errors-'));
  tinyParts = ggufParts(await loadModel('synthetic:tiny'));
});
after(() => rmSync(dir, { recursive: true, force: true }));

let counter = 0;
function file(name: string, bytes: Uint8Array | string): string {
  const d = join(dir, `case${counter++}`);
  mkdirSync(d);
  const p = join(d, name);
  writeFileSync(p, bytes);
  return p;
}

/** Expect loadModel to reject with a one-line ModelLoadError naming `where` and matching `problem`. */
async function rejects(ref: string, where: string, problem: RegExp, opts: { tokenizer?: string } = {}): Promise<void> {
  let err: unknown;
  try {
    await loadModel(ref, opts);
  } catch (e) {
    err = e;
  }
  assert.ok(err instanceof ModelLoadError, `expected a ModelLoadError for ${ref}, got ${String(err)}`);
  assert.equal(err.file, where);
  assert.match(err.problem, problem);
  assert.equal(err.message, `${where}: ${err.problem}`);
  assert.ok(!err.message.includes('\n'), `one line: ${JSON.stringify(err.message)}`);
}

/** A tiny GGUF from synthetic:tiny's parts, after `edit`. */
function gguf(edit: (meta: [string, GgufMetaValue][], tensors: GgufTensorOut[]) => void, name = 'model.gguf'): string {
  const meta = tinyParts.metadata.map(([k, v]) => [k, v] as [string, GgufMetaValue]);
  const tensors = tinyParts.tensors.map((t) => ({ ...t, dims: [...t.dims] }));
  edit(meta, tensors);
  return file(name, serializeGguf(meta, tensors));
}

function setMeta(meta: [string, GgufMetaValue][], key: string, v: GgufMetaValue | undefined): void {
  const i = meta.findIndex(([k]) => k === key);
  if (v === undefined) meta.splice(i, 1);
  else if (i >= 0) meta[i] = [key, v];
  else meta.push([key, v]);
}

test('the crafted baseline GGUF loads (so each failure below is caused by its one change)', async () => {
  const m = await loadModel(gguf(() => {}));
  assert.equal(m.config.dim, 64);
});

test('missing paths and unknown names', async () => {
  await rejects('/nonexistent/model.gguf', '/nonexistent/model.gguf', /^no such file or directory$/);
  await rejects('/nonexistent', '/nonexistent', /no such file or directory/);
  await rejects('stories9000', 'stories9000', /unknown model \(built-in: stories260K, stories260K-gguf, tinystories-656k, tinystories-656k-f32; or synthetic:/);
  const empty = join(dir, 'emptydir');
  mkdirSync(empty);
  await rejects(empty, empty, /not a model folder: no config.json/);
  await rejects('', '', /empty model reference/);
  await rejects('stories260K', join(dir, 'nope.bin'), /no such tokenizer file/, { tokenizer: join(dir, 'nope.bin') });
});

test('llama2.c checkpoints: truncated, oversized, bad header, no tokenizer', async () => {
  const orig = readFileSync(join(models, 'stories260K/stories260K.bin'));
  const tok = join(models, 'stories260K/tok512.bin');
  const cut = file('stories260K.bin', orig.subarray(0, 500_000));
  await rejects(cut, cut, /^truncated: header \(dim=64 hidden_dim=172 n_layers=5 n_heads=8 n_kv_heads=4 vocab_size=512 seq_len=512\) needs 1056540 bytes but the file has 500000$/, { tokenizer: tok });
  const tiny = file('stories260K.bin', orig.subarray(0, 10));
  await rejects(tiny, tiny, /^truncated: header field n_layers needs 4 bytes at offset 8/, { tokenizer: tok });
  const big = file('stories260K.bin', Buffer.concat([orig, Buffer.alloc(12)]));
  await rejects(big, big, /size 1056552 bytes does not match the header .* expected 1056540 \(or 1040156 without freq_cis\)/, { tokenizer: tok });
  const bad = Buffer.from(orig);
  bad.writeInt32LE(7, 12); // n_heads 7 does not divide dim 64
  const badHeads = file('stories260K.bin', bad);
  await rejects(badHeads, badHeads, /dim\/n_heads must be a positive integer/, { tokenizer: tok });
  const noTok = file('stories260K.bin', orig);
  await rejects(noTok, noTok, /no tokenizer: .*pass --tokenizer or put tok512.bin or tokenizer.bin next to the model/);
  // without freq_cis (newer exports) the same weights load
  const noFreq = file('stories260K.bin', orig.subarray(0, 1040156));
  const m = await loadModel(noFreq, { tokenizer: tok });
  assert.equal(m.fingerprint, (await loadModel('stories260K')).fingerprint);
  // a tokenizer found next to the model by name
  copyFileSync(tok, join(noFreq, '..', 'tok512.bin'));
  assert.equal((await loadModel(noFreq)).tokenizer.kind, 'spm');
});

test('bad tokenizer files', async () => {
  const tok = readFileSync(join(models, 'stories260K/tok512.bin'));
  const cut = file('tok512.bin', tok.subarray(0, 3000));
  await rejects('stories260K', cut, /truncated record for token \d+|token \d+ runs past the end/, { tokenizer: cut });
  const extra = file('tok512.bin', Buffer.concat([tok, tok.subarray(4, 40)]));
  await rejects('stories260K', extra, /36 bytes left after 512 tokens/, { tokenizer: extra });
  await rejects('synthetic:15m', join(models, 'stories260K/tok512.bin'), /has 512 tokens but the model's vocab_size is 32000/, {
    tokenizer: join(models, 'stories260K/tok512.bin'),
  });
  const neg = Buffer.from(tok);
  neg.writeInt32LE(-5, 8);
  const negLen = file('tok512.bin', neg);
  await rejects('stories260K', negLen, /token 0 has length -5/, { tokenizer: negLen });
  const json = file('tokenizer.json', '{"model": ');
  await rejects('tinystories-656k', json, /^bad tokenizer file: invalid JSON/, { tokenizer: json });
  const notHf = file('tokenizer.json', '{"hello": 1}');
  await rejects('tinystories-656k', notHf, /bad tokenizer file: no "model" object/, { tokenizer: notHf });
  const outOfRange = file('tokenizer.json', '{"model": {"type": "BPE", "vocab": {"a": 5000}}}');
  await rejects('tinystories-656k', outOfRange, /token "a" has id 5000, outside the model's vocab of 2048/, { tokenizer: outOfRange });
});

test('GGUF: bad magic, version, truncation, tensor types, architecture, missing tensor, shapes', async () => {
  const orig = readFileSync(join(models, 'stories260K-gguf/stories260K.gguf'));
  const magic = Buffer.from(orig);
  magic[0] = 0x47 ^ 0xff;
  const badMagic = file('m.gguf', magic);
  await rejects(badMagic, badMagic, /^bad magic 0x465547b8: not a GGUF file$/);
  const v = Buffer.from(orig);
  v.writeUInt32LE(4, 4);
  const badVersion = file('m.gguf', v);
  await rejects(badVersion, badVersion, /^unsupported GGUF version 4 \(2 and 3 are supported\)$/);
  const cutData = file('m.gguf', orig.subarray(0, 1_000_000));
  await rejects(cutData, cutData, /^truncated: tensor \S+ needs bytes \d+\.\.\d+ but the file has 1000000 bytes$/);
  const cutMeta = file('m.gguf', orig.subarray(0, 5000));
  await rejects(cutMeta, cutMeta, /^truncated: .* at offset \d+ but the file has 5000 bytes$/);
  const cutHeader = file('m.gguf', orig.subarray(0, 6));
  await rejects(cutHeader, cutHeader, /^truncated: version needs 4 bytes/);

  const unknownType = gguf((_, t) => (t.find((x) => x.name === 'blk.0.attn_q.weight')!.type = 99));
  await rejects(unknownType, unknownType, /^tensor blk\.0\.attn_q\.weight has unknown tensor type 99$/);
  const q4 = gguf((_, t) => (t.find((x) => x.name === 'blk.0.attn_q.weight')!.type = 2));
  await rejects(q4, q4, /^tensor blk\.0\.attn_q\.weight has type 2 \(Q4_0\), which is not supported/);
  const arch = gguf((m) => setMeta(m, 'general.architecture', { type: 'string', value: 'gpt2' }));
  await rejects(arch, arch, /^architecture "gpt2" is not supported \(llama only\)$/);
  const noArch = gguf((m) => setMeta(m, 'general.architecture', undefined));
  await rejects(noArch, noArch, /missing metadata general\.architecture/);
  const missing = gguf((_, t) => t.splice(t.findIndex((x) => x.name === 'blk.1.ffn_up.weight'), 1));
  await rejects(missing, missing, /^missing tensor blk\.1\.ffn_up\.weight$/);
  const shape = gguf((_, t) => {
    const k = t.find((x) => x.name === 'blk.0.attn_k.weight')!;
    k.dims = [32, 64]; // same byte size, transposed
  });
  await rejects(shape, shape, /^tensor blk\.0\.attn_k\.weight has shape \[32, 64\], expected \[64, 32\]/);
  const cfg = gguf((m) => setMeta(m, 'llama.feed_forward_length', { type: 'u32', value: 192 }));
  await rejects(cfg, cfg, /^tensor blk\.0\.ffn_gate\.weight has shape \[64, 176\], expected \[64, 192\]/);
  const noDim = gguf((m) => setMeta(m, 'llama.embedding_length', undefined));
  await rejects(noDim, noDim, /^missing metadata llama\.embedding_length$/);
  const heads = gguf((m) => setMeta(m, 'llama.attention.head_count_kv', { type: 'u32', value: 3 }));
  await rejects(heads, heads, /head_count=4 is not a multiple of llama\.attention\.head_count_kv=3/);
  const align = gguf((m) => setMeta(m, 'general.alignment', { type: 'u32', value: 24 }));
  await rejects(align, align, /general\.alignment must be a power of two, got 24/);
  const tok = gguf((m) => setMeta(m, 'tokenizer.ggml.model', { type: 'string', value: 'gpt2' }));
  await rejects(tok, tok, /tokenizer\.ggml\.model "gpt2" is not supported .*pass --tokenizer/);
  const tokCount = gguf((m) => setMeta(m, 'tokenizer.ggml.tokens', { type: 'string[]', value: ['a', 'b'] }));
  await rejects(tokCount, tokCount, /tokenizer\.ggml\.tokens has 2 tokens but token_embd has 512 rows/);
  const ropeFreqs = gguf((_, t) => t.push({ name: 'rope_freqs.weight', dims: [8], type: 0, data: new Uint8Array(32) }));
  await rejects(ropeFreqs, ropeFreqs, /rope_freqs\.weight \(Llama 3 RoPE scaling\)/);
});

test('Hugging Face folders: bad safetensors header, dtype, truncation, config, shapes', async () => {
  const src = join(models, 'tinystories-656k');
  const hfDir = (name: string, edit: (st: Buffer, cfg: Record<string, unknown>) => Buffer | void) => {
    const d = join(dir, `hf-${name}`);
    mkdirSync(d);
    for (const f of ['tokenizer.json', 'tokenizer_config.json', 'generation_config.json']) copyFileSync(join(src, f), join(d, f));
    const st = Buffer.from(readFileSync(join(src, 'model.safetensors')));
    const cfg = JSON.parse(readFileSync(join(src, 'config.json'), 'utf8'));
    const out = edit(st, cfg) ?? st;
    writeFileSync(join(d, 'model.safetensors'), out);
    writeFileSync(join(d, 'config.json'), JSON.stringify(cfg));
    return d;
  };
  const ok = hfDir('ok', () => {});
  assert.equal((await loadModel(ok)).format, 'hf');

  const hugeHeader = hfDir('huge', (st) => void st.writeBigUInt64LE(1n << 40n, 0));
  await rejects(hugeHeader, join(hugeHeader, 'model.safetensors'), /^bad safetensors header: header length 1099511627776 exceeds the file size/);
  const badJson = hfDir('json', (st) => void (st[8] = 0x5b)); // '{' → '['
  await rejects(badJson, join(badJson, 'model.safetensors'), /^bad safetensors header: not valid JSON/);
  const dtype = hfDir('dtype', (st) => {
    const i = st.indexOf('"F32"', 8);
    st.write('"I32"', i); // same length: the header stays well-formed
  });
  await rejects(dtype, join(dtype, 'model.safetensors'), /^unsupported safetensors dtype I32 for tensor lm_head\.weight \(F32, F16, BF16 only\)$/);
  const cut = hfDir('cut', (st) => st.subarray(0, 2_000_000));
  await rejects(cut, join(cut, 'model.safetensors'), /^truncated: tensor \S+ needs bytes \d+\.\.\d+ but the file has 2000000 bytes$/);
  const shape = hfDir('shape', (_, cfg) => void (cfg.intermediate_size = 256));
  await rejects(shape, join(shape, 'model.safetensors'), /^tensor model\.layers\.0\.mlp\.gate_proj\.weight has shape \[384, 128\], expected \[256, 128\]$/);
  const arch = hfDir('arch', (_, cfg) => {
    cfg.architectures = ['MistralForCausalLM'];
    cfg.model_type = 'mistral';
  });
  await rejects(arch, join(arch, 'config.json'), /^architecture "MistralForCausalLM" is not supported \(llama only\)$/);
  const missing = hfDir('missing', (_, cfg) => void (cfg.tie_word_embeddings = false));
  await rejects(missing, join(missing, 'model.safetensors'), /^missing tensor model\.embed_tokens\.weight$/);
  const noField = hfDir('nofield', (_, cfg) => void delete cfg.hidden_size);
  await rejects(noField, join(noField, 'config.json'), /^missing hidden_size$/);
  const scaling = hfDir('scaling', (_, cfg) => void (cfg.rope_scaling = { rope_type: 'llama3', factor: 8 }));
  await rejects(scaling, join(scaling, 'config.json'), /rope_scaling .* is not supported/);
  const notJson = hfDir('cfgjson', () => {});
  writeFileSync(join(notJson, 'config.json'), '{oops');
  await rejects(notJson, join(notJson, 'config.json'), /^bad config\.json: invalid JSON/);
});

/** Deterministic corruption: whatever the damage, the loader answers with a ModelLoadError or a model. */
test('corrupted and truncated files never escape as other errors', async () => {
  const good = serializeGguf(tinyParts.metadata, tinyParts.tensors);
  const bin = readFileSync(join(models, 'stories260K/stories260K.bin'));
  const tok = join(models, 'stories260K/tok512.bin');
  let seed = 12345;
  const rand = (n: number) => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    return seed % n;
  };
  const headerEnd = good.length - tinyParts.tensors.reduce((s, t) => s + t.data.length, 0);
  const cases: [string, Uint8Array][] = [];
  for (let i = 0; i < 60; i++) cases.push(['t.gguf', good.subarray(0, rand(good.length))]);
  for (let i = 0; i < 120; i++) {
    const b = Uint8Array.from(good.subarray(0, headerEnd + 4096));
    for (let k = 0; k < 3; k++) b[rand(headerEnd)] = rand(256);
    cases.push(['f.gguf', b]);
  }
  for (let i = 0; i < 30; i++) {
    const b = Uint8Array.from(bin.subarray(0, 4096));
    b[rand(28)] = rand(256);
    cases.push(['f.bin', b]);
  }
  cases.push(['empty.bin', new Uint8Array(0)], ['empty.gguf', new Uint8Array(0)]);
  let loaded = 0;
  for (const [name, bytes] of cases) {
    const p = file(name, bytes);
    try {
      await loadModel(p, { tokenizer: tok });
      loaded++;
    } catch (e) {
      assert.ok(e instanceof ModelLoadError, `${p}: ${(e as Error).stack}`);
      assert.ok(!e.message.includes('\n'));
      assert.doesNotMatch(e.problem, /^cannot load \(/, `${p}: unexpected internal error: ${e.message}`);
    }
  }
  assert.ok(loaded < cases.length);

  // safetensors headers: flip bytes inside the JSON (numbers, names, brackets)
  const src = join(models, 'tinystories-656k');
  const st = readFileSync(join(src, 'model.safetensors'));
  const headerLen = Number(st.readBigUInt64LE(0));
  for (let i = 0; i < 40; i++) {
    const d = join(dir, `st-fuzz-${i}`);
    mkdirSync(d);
    for (const f of ['config.json', 'tokenizer.json']) copyFileSync(join(src, f), join(d, f));
    const b = Buffer.from(st);
    for (let k = 0; k < 2; k++) b[8 + rand(headerLen)] = 0x20 + rand(0x5f);
    writeFileSync(join(d, 'model.safetensors'), b);
    try {
      await loadModel(d);
    } catch (e) {
      assert.ok(e instanceof ModelLoadError, `${d}: ${(e as Error).stack}`);
      assert.doesNotMatch(e.problem, /^cannot load \(/, `${d}: unexpected internal error: ${e.message}`);
    }
  }
});

test('tandem export-gguf reports load errors on one line without a stack trace', () => {
  const run = (...args: string[]) => spawnSync(process.execPath, ['bin/tandem.js', 'export-gguf', ...args], { cwd: root, encoding: 'utf8' });
  const r = run('--model', '/nonexistent', '--out', join(dir, 'x.gguf'));
  assert.notEqual(r.status, 0);
  const lines = r.stderr.trim().split('\n');
  assert.equal(lines.length, 1, r.stderr);
  assert.match(lines[0]!, /\/nonexistent: no such file or directory/);
  assert.doesNotMatch(r.stderr, /\n\s+at |Error:/);
  const u = run('--model', 'synthetic:tiny');
  assert.notEqual(u.status, 0);
  assert.match(u.stderr, /--out is required/);
  assert.equal(u.stderr.trim().split('\n').length, 1);
  const w = run('--model', 'synthetic:tiny', '--out', join(dir, 'no/such/dir/x.gguf'));
  assert.notEqual(w.status, 0);
  assert.match(w.stderr, /no\/such\/dir\/x\.gguf: cannot write \(ENOENT\)/);
  assert.equal(w.stderr.trim().split('\n').length, 1);
});
