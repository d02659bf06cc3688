// A second "engine" for cross-process tests: opens a store from a spec and stores or loads one prompt.
import { existsSync, writeFileSync } from 'node:fs';
import { KvStore } from '../../src/kvstore/index.ts';
import { CHUNK, LAYOUT, payloadFor, prompt } from './helpers.ts';

const a = JSON.parse(process.argv[2]!) as {
  spec: string;
  op: 'store' | 'load' | 'lookup';
  tokens: number;
  seed?: number;
  salt?: string;
  /** store: create <gate>.ready.<pid>, then wait for the file <gate> before writing, so children race. */
  gate?: string;
  repeat?: number;
};
const store = await KvStore.fromSpec(a.spec, {
  modelFingerprint: 'fp-test',
  kvDtype: 'f32',
  chunkTokens: CHUNK,
  layout: LAYOUT,
  log: () => {},
});
const tokens = prompt(a.tokens, a.seed ?? 1);
let result: unknown;
if (a.op === 'store') {
  if (a.gate) {
    writeFileSync(`${a.gate}.ready.${process.pid}`, '');
    while (!existsSync(a.gate)) await new Promise((r) => setTimeout(r, 2));
  }
  let taken = 0;
  for (let r = 0; r < (a.repeat ?? 1); r++) {
    taken += store.store(tokens, a.salt ?? '', 0, (i) => payloadFor(tokens, i));
    await store.flush();
  }
  result = { taken };
} else if (a.op === 'lookup') {
  result = await store.lookup(tokens, a.salt ?? '');
} else {
  const r = await store.load(tokens, a.salt ?? '');
  const ok = r.chunks.every((c, i) => Buffer.from(c).equals(Buffer.from(payloadFor(tokens, i))));
  result = { tokens: r.tokens, tierOfEach: r.tierOfEach, ok };
}
await store.close();
console.log(JSON.stringify(result));
