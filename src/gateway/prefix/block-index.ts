// Which endpoint holds which prefix block: one bounded LRU set of block keys per endpoint.
// Shared by the approximate producer (keys learned from routing decisions) and the precise
// producer (keys recomputed from KV events).

export class BlockIndex {
  /** key → insertion stamp; Map insertion order is the LRU order */
  private readonly perEndpoint = new Map<string, Map<number, number>>();
  private stamp = 0;

  constructor(private readonly capacityPerEndpoint: number) {}

  add(endpointId: string, keys: readonly number[]): void {
    let set = this.perEndpoint.get(endpointId);
    if (!set) this.perEndpoint.set(endpointId, (set = new Map()));
    // approximate LRU: a key refreshed within the last half capacity of insertions is young enough,
    // so hot prefixes (the common case) cost one lookup per block instead of a delete + insert
    const young = this.capacityPerEndpoint / 2;
    for (const k of keys) {
      const s = set.get(k);
      if (s !== undefined) {
        if (this.stamp - s < young) continue;
        set.delete(k);
      }
      set.set(k, ++this.stamp);
    }
    if (set.size > this.capacityPerEndpoint) {
      let excess = set.size - this.capacityPerEndpoint;
      for (const k of set.keys()) {
        set.delete(k);
        if (--excess === 0) break;
      }
    }
  }

  remove(endpointId: string, keys: readonly number[]): void {
    const set = this.perEndpoint.get(endpointId);
    if (!set) return;
    for (const k of keys) set.delete(k);
  }

  clear(endpointId: string): void {
    this.perEndpoint.delete(endpointId);
  }

  has(endpointId: string, key: number): boolean {
    return this.perEndpoint.get(endpointId)?.has(key) ?? false;
  }

  size(endpointId: string): number {
    return this.perEndpoint.get(endpointId)?.size ?? 0;
  }

  /** Number of consecutive blocks from block 0 that the endpoint holds. */
  longestPrefix(endpointId: string, keys: readonly number[]): number {
    const set = this.perEndpoint.get(endpointId);
    if (!set) return 0;
    let n = 0;
    while (n < keys.length && set.has(keys[n]!)) n++;
    return n;
  }
}
