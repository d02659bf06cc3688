// max-score-picker: highest total score first, ties broken at random; the rest follow in score
// order as fallbacks (capped by maxNumOfEndpoints).
import { pickerPlugin } from './picker.ts';

export const maxScorePicker = pickerPlugin('max-score-picker', (scored) => {
  if (scored.length === 1) return [scored[0]!.endpoint];
  const keyed = scored.map((s) => ({ s, r: Math.random() }));
  keyed.sort((a, b) => b.s.score - a.s.score || a.r - b.r);
  return keyed.map((k) => k.s.endpoint);
});
