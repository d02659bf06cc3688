// The merge loop shared by SentencePiece-BPE (best score first) and Hugging Face BPE (lowest rank
// first): a doubly linked list of symbols plus a binary heap of candidate pairs. A heap entry
// remembers the ids it was made from; when either side has since merged with something else the
// entry is stale and skipped, which keeps the whole loop O(n log n) instead of llama2.c's O(n²)
// rescan after every merge.

/** Adjacent-pair merges: (left id, right id) → merged id, with a priority (lower merges first). */
export class PairTable {
  private readonly index = new Map<number, number>();
  private readonly merged: number[] = [];
  private readonly priority: number[] = [];

  /** `stride` must exceed every token id so that left·stride + right is a unique key. */
  constructor(private readonly stride: number) {}

  get size(): number {
    return this.merged.length;
  }

  /** A later rule for the same pair replaces the earlier one (as a HashMap built from the list does). */
  set(left: number, right: number, merged: number, priority: number): void {
    const key = left * this.stride + right;
    const at = this.index.get(key);
    if (at !== undefined) {
      this.merged[at] = merged;
      this.priority[at] = priority;
      return;
    }
    this.index.set(key, this.merged.length);
    this.merged.push(merged);
    this.priority.push(priority);
  }

  /** Keep the existing rule when the pair is already known. */
  setIfAbsent(left: number, right: number, merged: number, priority: number): void {
    if (!this.index.has(left * this.stride + right)) this.set(left, right, merged, priority);
  }

  lookup(left: number, right: number): number {
    return this.index.get(left * this.stride + right) ?? -1;
  }

  mergedId(rule: number): number {
    return this.merged[rule]!;
  }

  rulePriority(rule: number): number {
    return this.priority[rule]!;
  }
}

interface Candidate {
  priority: number;
  /** index of the left symbol; symbols keep their first index, so a smaller one is further left */
  left: number;
  right: number;
  leftId: number;
  rightId: number;
  merged: number;
}

function before(a: Candidate, b: Candidate): boolean {
  return a.priority < b.priority || (a.priority === b.priority && a.left < b.left);
}

class CandidateHeap {
  private readonly items: Candidate[] = [];

  get length(): number {
    return this.items.length;
  }

  push(c: Candidate): void {
    const items = this.items;
    let i = items.length;
    items.push(c);
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!before(c, items[parent]!)) break;
      items[i] = items[parent]!;
      i = parent;
    }
    items[i] = c;
  }

  pop(): Candidate {
    const items = this.items;
    const top = items[0]!;
    const last = items.pop()!;
    const n = items.length;
    if (n > 0) {
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        if (l >= n) break;
        const r = l + 1;
        const child = r < n && before(items[r]!, items[l]!) ? r : l;
        if (!before(items[child]!, last)) break;
        items[i] = items[child]!;
        i = child;
      }
      items[i] = last;
    }
    return top;
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
  const heap = new CandidateHeap();
  const consider = (left: number, right: number): void => {
    const rule = table.lookup(id[left]!, id[right]!);
    if (rule < 0) return;
    heap.push({
      priority: table.rulePriority(rule),
      left,
      right,
      leftId: id[left]!,
      rightId: id[right]!,
      merged: table.mergedId(rule),
    });
  };
  for (let i = 0; i + 1 < n; i++) consider(i, i + 1);

  while (heap.length > 0) {
    const c = heap.pop();
    // Stale: one side was merged away or grew since this entry was made. A symbol's id only ever
    // grows into a longer piece, so unchanged ids at both ends mean the pair is still exactly this one.
    if (id[c.left] !== c.leftId || id[c.right] !== c.rightId || next[c.left] !== c.right) continue;
    id[c.left] = c.merged;
    id[c.right] = -1;
    const after = next[c.right]!;
    next[c.left] = after;
    if (after < n) prev[after] = c.left;
    if (prev[c.left]! >= 0) consider(prev[c.left]!, c.left);
    if (after < n) consider(c.left, after);
  }

  const out: number[] = [];
  for (let i = 0; i < n; i = next[i]!) out.push(id[i]!);
  return out;
}
