// weighted-random-picker: samples endpoints without replacement with probability proportional to
// their total score (all zero → uniform). Spreads load while still favouring good endpoints.
import type { Endpoint } from '../../types.ts';
import { pickerPlugin } from './picker.ts';

export const weightedRandomPicker = pickerPlugin('weighted-random-picker', (scored, cap) => {
  const pool = scored.map((s) => ({ ep: s.endpoint, w: Math.max(0, s.score) }));
  const out: Endpoint[] = [];
  while (pool.length && out.length < cap) {
    const total = pool.reduce((a, x) => a + x.w, 0);
    let i = 0;
    if (total > 0) {
      let r = Math.random() * total;
      for (i = 0; i < pool.length - 1; i++) {
        r -= pool[i]!.w;
        if (r < 0) break;
      }
    } else i = Math.floor(Math.random() * pool.length);
    out.push(pool[i]!.ep);
    pool.splice(i, 1);
  }
  return out;
});
