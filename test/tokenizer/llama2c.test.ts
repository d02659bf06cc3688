import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createTokenizer, readLlama2cTokenizer } from '../../src/tokenizer/index.ts';
import { ModelLoadError } from '../../src/model/types.ts';
import { TOK512 } from './helpers.ts';

// From models/stories260K/README.md: the prompt and the 32 greedy tokens Karpathy's sample continues with.
const PROMPT_IDS = [1, 403, 407, 261, 378];
const CONTINUATION = [
  432, 383, 286, 261, 376, 298, 315, 421, 395, 317, 426, 338, 401, 396, 267, 337, 410, 408, 419, 292, 411, 322, 265, 282,
  295, 433, 426, 385, 328, 432, 358, 394,
];
const CONTINUATION_TEXT = ', there was a little girl named Lily. She loved to play outside in the park. One day, she saw';

test('reads tok512.bin: 512 pieces, llama2.c special ids and scores in merge order', () => {
  const spec = readLlama2cTokenizer(TOK512);
  assert.equal(spec.kind, 'spm');
  if (spec.kind !== 'spm') return;
  assert.equal(spec.pieces.length, 512);
  assert.deepEqual(spec.pieces.slice(0, 4), ['<unk>', '\n<s>\n', '\n</s>\n', '<0x00>']);
  assert.equal(spec.pieces[258], '<0xFF>');
  assert.ok(spec.scores[259] === 0); // stored as -0
  assert.equal(spec.scores[511], -252);
  assert.deepEqual(
    { bos: spec.bos, eos: spec.eos, unk: spec.unk, addBos: spec.addBos, spaceChar: spec.spaceChar, dummy: spec.addDummyPrefix },
    { bos: 1, eos: 2, unk: 0, addBos: true, spaceChar: ' ', dummy: true },
  );
});

test('encodes the README prompt and decodes the README continuation', () => {
  const tok = createTokenizer(readLlama2cTokenizer(TOK512));
  assert.equal(tok.vocabSize, 512);
  assert.deepEqual(tok.encode('Once upon a time'), PROMPT_IDS);
  assert.deepEqual(tok.encode('Once upon a time', { addBos: false }), PROMPT_IDS.slice(1));
  assert.equal(tok.decode(CONTINUATION), CONTINUATION_TEXT);
  // After BOS the dummy-prefix space is dropped, so the whole story reads from its first letter.
  assert.equal(tok.decode([...PROMPT_IDS, ...CONTINUATION]), 'Once upon a time' + CONTINUATION_TEXT);
  assert.deepEqual(tok.stopIds, [2]);
  assert.equal(tok.piece(403), tok.decode([403]));
});

test('streaming the continuation after the prompt gives the same text', () => {
  const tok = createTokenizer(readLlama2cTokenizer(TOK512));
  const stream = tok.streamDecoder({ prefix: PROMPT_IDS });
  let text = '';
  for (const id of CONTINUATION) text += stream.push(id);
  text += stream.flush();
  assert.equal(text, CONTINUATION_TEXT);
  // With BOS as the only prefix, the first generated piece loses its dummy-prefix space.
  const fresh = tok.streamDecoder({ prefix: [1] });
  assert.equal(fresh.push(403) + fresh.push(407), tok.decode([1, 403, 407]));
});

function tempFile(name: string, bytes: Uint8Array): string {
  const dir = mkdtempSync(join(tmpdir(), 'tandem-tok-'));
  const p = join(dir, name);
  writeFileSync(p, bytes);
  return p;
}

function record(score: number, piece: string): Buffer {
  const bytes = Buffer.from(piece, 'utf8');
  const b = Buffer.alloc(8 + bytes.length);
  b.writeFloatLE(score, 0);
  b.writeInt32LE(bytes.length, 4);
  bytes.copy(b, 8);
  return b;
}

function header(maxLen: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeInt32LE(maxLen, 0);
  return b;
}

test('rejects unusable tokenizer.bin files with ModelLoadError naming the file', () => {
  const good = readFileSync(TOK512);
  const cases: [string, Uint8Array, RegExp][] = [
    ['empty', new Uint8Array(0), /too short/],
    ['zero max length', Buffer.concat([header(0), record(0, 'a')]), /max_token_length/],
    ['truncated record', good.subarray(0, good.length - 3), /runs past the end|truncated/],
    ['half a record header', Buffer.concat([good, Buffer.from([1, 2, 3])]), /truncated record for token 512/],
    ['piece longer than max', Buffer.concat([header(2), record(0, '<unk>')]), /token 0 has length 5/],
    ['invalid utf-8', Buffer.concat([header(7), record(0, 'a'), record(0, 'b'), Buffer.from([0, 0, 0, 0, 1, 0, 0, 0, 0xff])]), /token 2 is not valid UTF-8/],
    ['too few tokens', Buffer.concat([header(7), record(0, '<unk>')]), /only 1 tokens/],
    ['NaN score', Buffer.concat([header(7), record(NaN, 'a')]), /NaN/],
  ];
  for (const [name, bytes, problem] of cases) {
    const path = tempFile('tokenizer.bin', bytes);
    assert.throws(
      () => readLlama2cTokenizer(path),
      (err: unknown) => err instanceof ModelLoadError && err.file === path && problem.test(err.problem),
      name,
    );
  }
  assert.throws(() => readLlama2cTokenizer('/nonexistent/tok.bin'), (err: unknown) => err instanceof ModelLoadError && /cannot read/.test(err.message));
});
