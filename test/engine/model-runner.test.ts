// The model runner's scratch space under a batch that grows one row at a time (as continuous
// batching does when requests trickle in): memory must stay proportional to the largest batch.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createRunner } from '../../src/engine/generate.ts';
import { loadModel } from '../../src/model/index.ts';

test('scratch grows geometrically and reuses its space: memory stays bounded as the batch creeps up', async () => {
  const model = await loadModel('stories260K');
  const runner = await createRunner(model, { numBlocks: 64 });
  const mem = () => runner.kernels.memory.buffer.byteLength;
  runner.forward([{ tokens: [1], start: 0, blockTable: [0], wantLogits: true }]);
  const base = mem();
  // one sequence per block, each adding a decode row: 1, 2, … 48 rows with logits
  for (let n = 1; n <= 48; n++) {
    runner.forward(Array.from({ length: n }, (_, i) => ({ tokens: [1 + i], start: 0, blockTable: [i], wantLogits: true })));
  }
  // rows × (activations + 512 logits) for 64 rows is well under 1 MiB; abandoning every old scratch
  // would have cost the sum over all sizes instead
  const grown = mem() - base;
  assert.ok(grown < 4 * 1024 * 1024, `scratch grew memory by ${(grown / 1048576).toFixed(1)} MiB`);
});
