import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createTokenizer, readLlama2cTokenizer, type Tokenizer } from '../../src/tokenizer/index.ts';
import { ModelLoadError } from '../../src/model/types.ts';
import { ASCII_ALPHABET, GGUF260K, GGUF656K, UNICODE_ALPHABET, ggufSpmSpec, hfSpec, randomText, rng, TOK512 } from './helpers.ts';

// A literal U+2581 in the text is a space to a vocabulary that spells spaces with it (as in llama.cpp),
// so texts compared across the two spellings leave it out.
const NO_METASPACE = UNICODE_ALPHABET.filter((c) => c !== '\u2581');

const spec512 = readLlama2cTokenizer(TOK512);
const tok512 = createTokenizer(spec512);
const gguf260 = createTokenizer(ggufSpmSpec(GGUF260K));

/** llama2.c's encode(), transcribed literally (O(n²) rescans), as the reference for the fast merge loop. */
function llama2cEncode(pieces: string[], scores: Float32Array, text: string): number[] {
  const lookup = new Map<string, number>();
  pieces.forEach((p, i) => lookup.set(p, i));
  const tokens = [1];
  if (text.length > 0) tokens.push(lookup.get(' ')!);
  for (const ch of text) {
    const id = lookup.get(ch);
    if (id !== undefined) tokens.push(id);
    else for (const b of new TextEncoder().encode(ch)) tokens.push(b + 3);
  }
  for (;;) {
    let best = -1e10;
    let bestId = -1;
    let bestIdx = -1;
    for (let i = 0; i + 1 < tokens.length; i++) {
      const id = lookup.get(pieces[tokens[i]!]! + pieces[tokens[i + 1]!]!);
      if (id !== undefined && scores[id]! > best) {
        best = scores[id]!;
        bestId = id;
        bestIdx = i;
      }
    }
    if (bestIdx === -1) break;
    tokens.splice(bestIdx, 2, bestId);
  }
  return tokens;
}

function streamAll(tok: Tokenizer, ids: readonly number[], opts?: Parameters<Tokenizer['streamDecoder']>[0]): string {
  const s = tok.streamDecoder(opts);
  let out = '';
  for (const id of ids) out += s.push(id);
  return out + s.flush();
}

test('fast merge loop equals llama2.c encode() on random text (seeded)', () => {
  if (spec512.kind !== 'spm') throw new Error('expected spm');
  const next = rng(7);
  for (let i = 0; i < 300; i++) {
    const text = randomText(next, UNICODE_ALPHABET, 40);
    assert.deepEqual(tok512.encode(text), llama2cEncode(spec512.pieces, spec512.scores, text), JSON.stringify(text));
  }
});

test('random text round-trips through tok512 and its GGUF copy, and both agree', () => {
  const next = rng(11);
  for (let i = 0; i < 300; i++) {
    const text = randomText(next, NO_METASPACE, 60);
    const ids = tok512.encode(text);
    assert.equal(tok512.decode(ids), text, JSON.stringify(text));
    // Same vocabulary spelled with U+2581 and GGUF token types: llama.cpp's tokenizer gives the same ids.
    assert.deepEqual(gguf260.encode(text), ids, JSON.stringify(text));
    assert.equal(gguf260.decode(ids), text, JSON.stringify(text));
    assert.equal(streamAll(tok512, ids), text);
    assert.equal(streamAll(gguf260, ids), text);
  }
});

test('leading spaces: llama2.c strips after BOS only; SentencePiece strips the first piece once', () => {
  const ids = tok512.encode('  two  spaces', { addBos: false });
  assert.equal(tok512.decode([1, ...ids]), '  two  spaces');
  assert.equal(tok512.decode(ids), '   two  spaces'); // no BOS, so the dummy prefix stays (llama2.c)
  assert.equal(gguf260.decode(ids), '  two  spaces');
  assert.equal(gguf260.decode([1, ...ids]), '  two  spaces');
  assert.equal(gguf260.decode(ids, { keepSpecial: true }), '  two  spaces');
  assert.equal(gguf260.decode([1, ...ids], { keepSpecial: true }), '<s>   two  spaces');
  assert.deepEqual(tok512.encode(''), [1]);
  assert.deepEqual(tok512.encode('', { addBos: false }), []);
});

test('byte fallback: characters outside the vocabulary become byte pieces that decode and stream back exactly once', () => {
  for (const [ch, bytes] of [['中', [0xe4, 0xb8, 0xad]], ['😀', [0xf0, 0x9f, 0x98, 0x80]]] as const) {
    const ids = tok512.encode(ch, { addBos: false });
    assert.deepEqual(ids.slice(1), bytes.map((b) => b + 3), ch); // after the dummy-prefix space piece
    assert.equal(tok512.piece(ids[1]!), `<0x${bytes[0]!.toString(16).toUpperCase()}>`);
    assert.equal(tok512.decode([1, ...ids]), ch);
    const stream = tok512.streamDecoder({ prefix: [1] });
    const pushes = ids.map((id) => stream.push(id));
    assert.deepEqual(pushes, ['', ...bytes.slice(0, -1).map(() => ''), ch]);
    assert.equal(stream.flush(), '');
  }
});

test('invalid or cut-off byte sequences decode to U+FFFD, the same in batch and stream', () => {
  const A = tok512.encode('A', { addBos: false }).at(-1)!;
  const cases: [number[], string][] = [
    [[0xe2 + 3, A], '\uFFFDA'], // lead byte then ASCII
    [[0x80 + 3], '\uFFFD'], // lone continuation byte
    [[0xf0 + 3, 0x9f + 3], '\uFFFD'], // cut off at the end: flush emits the replacement
  ];
  for (const [ids, want] of cases) {
    assert.equal(tok512.decode(ids), want);
    assert.equal(streamAll(tok512, ids), want);
  }
});

test('stream == batch decode for random id sequences (seeded), with and without special tokens', () => {
  const next = rng(3);
  for (const tok of [tok512, gguf260]) {
    for (let i = 0; i < 300; i++) {
      const ids = Array.from({ length: Math.floor(next() * 30) }, () => Math.floor(next() * tok.vocabSize));
      for (const keepSpecial of [false, true]) {
        assert.equal(streamAll(tok, ids, { keepSpecial }), tok.decode(ids, { keepSpecial }), JSON.stringify(ids));
      }
      // The prompt as prefix: the continuation streams exactly what the joint decode adds.
      const prompt = tok.encode(randomText(next, ASCII_ALPHABET, 20));
      assert.equal(tok.decode(prompt) + streamAll(tok, ids, { prefix: prompt }), tok.decode([...prompt, ...ids]));
    }
  }
});

test('control pieces: only parseSpecial maps their text to ids, merges never produce them', () => {
  const gen = gguf260;
  assert.deepEqual(gen.encode('<s>hi</s>', { parseSpecial: true, addBos: false }), [1, ...gen.encode('hi', { addBos: false }), 2]);
  const plain = gen.encode('<s>hi</s>', { addBos: false });
  assert.ok(!plain.includes(1) && !plain.includes(2) && !plain.includes(0), JSON.stringify(plain));
  assert.equal(gen.decode(plain), '<s>hi</s>');
  // llama2.c's BOS piece is "\n<s>\n"
  const ids = tok512.encode('a\n<s>\nb', { parseSpecial: true, addBos: false });
  assert.ok(ids.includes(1), JSON.stringify(ids));
  assert.ok(!tok512.encode('a\n<s>\nb', { addBos: false }).includes(1));
  assert.equal(tok512.decode([1, 2], { keepSpecial: true }), '\n<s>\n\n</s>\n');
  assert.equal(tok512.decode([1, 2]), '');
});

test('placeholder scores (TinyStories-656K GGUF) rank merges by id: known words match the BPE merges', () => {
  const gguf = ggufSpmSpec(GGUF656K);
  if (gguf.kind !== 'spm') throw new Error('expected spm');
  assert.ok(gguf.scores.every((s) => s === -1000));
  const tok = createTokenizer(gguf);
  const hf = createTokenizer(hfSpec('orig'));
  // By hand from tokenizer.json: "▁ a" is merge 4 (→ 85); "t h" (merge 2 → 83) then "th e" (→ 131);
  // "▁" and "the" never merge, so "▁the" stays two pieces.
  assert.deepEqual(tok.encode('a', { addBos: false }), [85]);
  assert.deepEqual(tok.encode('the', { addBos: false }), [80, 131]);
  assert.equal(tok.piece(131), 'the');
  for (const text of ['Once upon a time', 'the cat sat on the mat', 'She loved to play outside.']) {
    assert.deepEqual(tok.encode(text), hf.encode(text), text);
  }
});

test('encoding stays fast on 40 KB and 200 KB inputs (would hang if quadratic)', () => {
  const next = rng(99);
  let big = '';
  while (big.length < 200_000) big += randomText(next, NO_METASPACE, 50) + '\n';
  const cut = [...big.slice(0, 40_000)].slice(0, -1).join(''); // whole code points only
  for (const text of [cut, big, 'a'.repeat(200_000), ' '.repeat(200_000)]) {
    for (const tok of [tok512, gguf260]) {
      const ids = tok.encode(text);
      assert.ok(tok.decode(ids) === text, `round trip of ${text.length} chars`);
    }
  }
});

test('rejects inconsistent specs and out-of-range ids', () => {
  if (spec512.kind !== 'spm') throw new Error('expected spm');
  assert.throws(() => createTokenizer({ ...spec512, scores: new Float32Array(3) }), ModelLoadError);
  assert.throws(() => createTokenizer({ ...spec512, eos: 512 }), /eos id 512/);
  assert.throws(() => createTokenizer({ ...spec512, pieces: [] }), /empty/);
  assert.throws(() => createTokenizer({ ...spec512, tokenTypes: new Int32Array(2) }), /token types/);
  assert.throws(() => tok512.decode([512]), RangeError);
  assert.throws(() => tok512.decode([-1]), RangeError);
  assert.throws(() => tok512.piece(1.5), RangeError);
  assert.throws(() => tok512.streamDecoder().push(9999), RangeError);
});

test('equal scores merge the leftmost pair first, and merged pieces keep merging (tiny vocabulary)', () => {
  const pieces = ['<unk>', '<s>', '</s>', 'a', 'b', 'aa', 'ab', 'aab', 'aaa', 'c', 'bc'];
  const spec = {
    kind: 'spm' as const,
    pieces,
    scores: Float32Array.from([0, 0, 0, 0, 0, -1, -1, -2, -5, 0, -1]),
    bos: 1,
    eos: 2,
    unk: 0,
    addBos: false,
    spaceChar: ' ',
    addDummyPrefix: false,
  };
  const t = createTokenizer(spec);
  const names = (text: string): string[] => t.encode(text).map((id) => pieces[id]!);
  // "aa" and "ab" tie at -1: the leftmost pair of "aab" is "aa", and "aa"+"b" = "aab" follows.
  assert.deepEqual(names('aab'), ['aab']);
  // "a a a": leftmost "aa" first, then "aa"+"a" is the piece "aaa".
  assert.deepEqual(names('aaa'), ['aaa']);
  assert.deepEqual(names('aaaa'), ['aa', 'aa']); // after the first "aa", the higher-scored "a"+"a" beats "aa"+"a"
  assert.deepEqual(names('abab'), ['ab', 'ab']);
  assert.deepEqual(names('abc'), ['ab', 'c']); // "ab" and "bc" tie: the left one wins
  for (const text of ['aab', 'aaa', 'aaaa', 'aaaaab', 'abaab', 'baaab', 'abc', 'aabcbc', 'cabcab']) {
    const ref = llama2cEncode(pieces, spec.scores, text).slice(2); // drop BOS and the " " lookup llama2.c adds
    assert.deepEqual(
      createTokenizer({ ...spec, pieces: [...pieces, ' '], scores: Float32Array.from([...spec.scores, 0]) }).encode(text),
      ref,
      text,
    );
  }
});
