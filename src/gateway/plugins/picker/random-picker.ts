// random-picker: uniform random order, scores ignored.
import { pickerPlugin } from './picker.ts';

export const randomPicker = pickerPlugin('random-picker', (scored) => {
  const eps = scored.map((s) => s.endpoint);
  for (let i = eps.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [eps[i], eps[j]] = [eps[j]!, eps[i]!];
  }
  return eps;
});
