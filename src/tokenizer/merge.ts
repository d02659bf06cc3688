// The merge loop shared by SentencePiece-BPE (best score first) and Hugging Face BPE (lowest rank
// first): a doubly linked list of symbols plus a binary heap of candidate pairs. A heap entry
// remembers the ids it was made from; when either side has since merged with something else the
// entry is stale and skipped, which keeps the whole loop O(n log n) instead of llama2.c's O(n²)
// rescan after every merge.

/** Adjacent-pair merges: (left id, right id) → merged id, with a priority (lower merges first).
 * An open-addressing hash over the two ids in typed arrays: the merge loop does a few lookups per
 * symbol, and a Map keyed by left·V + right would hash heap numbers once V² leaves the small-integer
 * range (vocabularies beyond ~32K pieces). */
export class PairTable {
  private keysLeft = new Int32Array(1024).fill(-1);
  private keysRight = new Int32Array(1024);
  private rules = new Int32Array(1024);
  private mask = 1023;
  private readonly merged: number[] = [];
  private readonly priority: number[] = [];

  get size(): number {
    return this.merged.length;
  }

  private slot(left: number, right: number): number {
    let h = Math.imul(left ^ Math.imul(right, 0x85ebca6b), 0x9e3779b1);
    h = (h ^ (h >>> 15)) & this.mask;
    while (this.keysLeft[h] !== -1 && (this.keysLeft[h] !== left || this.keysRight[h] !== right)) h = (h + 1) & this.mask;
    return h;
  }

  private grow(): void {
    const { keysLeft, keysRight, rules } = this;
    const cap = keysLeft.length * 2;
    this.keysLeft = new Int32Array(cap).fill(-1);
    this.keysRight = new Int32Array(cap);
    this.rules = new Int32Array(cap);
    this.mask = cap - 1;
    for (let i = 0; i < keysLeft.length; i++) {
      if (keysLeft[i] === -1) continue;
      const h = this.slot(keysLeft[i]!, keysRight[i]!);
      this.keysLeft[h] = keysLeft[i]!;
      this.keysRight[h] = keysRight[i]!;
      this.rules[h] = rules[i]!;
    }
  }

  /** A later rule for the same pair replaces the earlier one (as a HashMap built from the list does). */
  set(left: number, right: number, merged: number, priority: number): void {
    if (!(left >= 0 && right >= 0)) throw new RangeError(`bad merge pair (${left}, ${right})`);
    if (2 * (this.merged.length + 1) > this.keysLeft.length) this.grow();
    const h = this.slot(left, right);
    if (this.keysLeft[h] !== -1) {
      this.merged[this.rules[h]!] = merged;
      this.priority[this.rules[h]!] = priority;
      return;
    }
    this.keysLeft[h] = left;
    this.keysRight[h] = right;
    this.rules[h] = this.merged.length;
    this.merged.push(merged);
    this.priority.push(priority);
  }

  /** The rule index for a pair, or -1. */
  lookup(left: number, right: number): number {
    const h = this.slot(left, right);
    return this.keysLeft[h] === -1 ? -1 : this.rules[h]!;
  }

  mergedId(rule: number): number {
    return this.merged[rule]!;
  }

  rulePriority(rule: number): number {
    return this.priority[rule]!;
  }
}

/** Merge adjacent symbols by the table until no pair has a rule; ties go to the leftmost pair. */
export function applyMerges(symbols: readonly number[], table: PairTable): number[] {
  const n = symbols.length;
  if (n < 2 || table.size === 0) return symbols.slice();
  const id = Int32Array.from(symbols);
  const prev = new Int32Array(n);
  const next = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    prev[i] = i - 1;
    next[i] = i + 1;
  }

  // Candidates live in flat typed arrays (n - 1 initial pairs plus at most two per merge, so 3n
  // slots suffice); the heap orders candidate slots by (priority, left position).
  const cap = 3 * n;
  const cPriority = new Float64Array(cap);
  const cLeft = new Int32Array(cap);
  const cRight = new Int32Array(cap);
  const cLeftId = new Int32Array(cap);
  const cRightId = new Int32Array(cap);
  const cMerged = new Int32Array(cap);
  let slots = 0;
  const heap = new Int32Array(cap);
  let size = 0;
  const before = (a: number, b: number): boolean =>
    cPriority[a]! < cPriority[b]! || (cPriority[a] === cPriority[b] && cLeft[a]! < cLeft[b]!);

  const consider = (left: number, right: number): void => {
    const rule = table.lookup(id[left]!, id[right]!);
    if (rule < 0) return;
    const c = slots++;
    cPriority[c] = table.rulePriority(rule);
    cLeft[c] = left;
    cRight[c] = right;
    cLeftId[c] = id[left]!;
    cRightId[c] = id[right]!;
    cMerged[c] = table.mergedId(rule);
    let i = size++;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!before(c, heap[parent]!)) break;
      heap[i] = heap[parent]!;
      i = parent;
    }
    heap[i] = c;
  };
  const pop = (): number => {
    const top = heap[0]!;
    const last = heap[--size]!;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= size) break;
      const r = l + 1;
      const child = r < size && before(heap[r]!, heap[l]!) ? r : l;
      if (!before(heap[child]!, last)) break;
      heap[i] = heap[child]!;
      i = child;
    }
    heap[i] = last;
    return top;
  };

  for (let i = 0; i + 1 < n; i++) consider(i, i + 1);
  while (size > 0) {
    const c = pop();
    const left = cLeft[c]!;
    const right = cRight[c]!;
    // Stale: one side was merged away or grew since this entry was made. A symbol's id only ever
    // grows into a longer piece, so unchanged ids at both ends mean the pair is still exactly this one.
    if (id[left] !== cLeftId[c] || id[right] !== cRightId[c] || next[left] !== right) continue;
    id[left] = cMerged[c]!;
    id[right] = -1;
    const after = next[right]!;
    next[left] = after;
    if (after < n) prev[after] = left;
    if (prev[left]! >= 0) consider(prev[left]!, left);
    if (after < n) consider(left, after);
  }

  const out: number[] = [];
  for (let i = 0; i < n; i = next[i]!) out.push(id[i]!);
  return out;
}
