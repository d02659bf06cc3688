// A bounded FIFO drained by one background worker. Writes to a tier never run on a request's path;
// when a tier falls behind, `offer` refuses and the caller counts a drop instead of buffering without
// bound (KV is a cache: a dropped write only costs a future recompute).
export class WriteQueue<T> {
  private readonly items: T[] = [];
  private running = false;
  private idleWaiters: (() => void)[] = [];

  constructor(
    readonly limit: number,
    private readonly work: (item: T) => Promise<void>,
  ) {}

  /** Items waiting (not counting the one being written). */
  get pending(): number {
    return this.items.length;
  }

  get full(): boolean {
    return this.items.length >= this.limit;
  }

  offer(item: T): boolean {
    if (this.items.length >= this.limit) return false;
    this.items.push(item);
    if (!this.running) void this.drain();
    return true;
  }

  /** Resolves once everything offered so far has been written (or failed). */
  idle(): Promise<void> {
    if (!this.running && this.items.length === 0) return Promise.resolve();
    return new Promise((r) => this.idleWaiters.push(r));
  }

  clear(): void {
    this.items.length = 0;
  }

  private async drain(): Promise<void> {
    this.running = true;
    // Start on a later turn so `store()` returns before any background work begins.
    await new Promise<void>((r) => setImmediate(r));
    while (this.items.length) {
      const item = this.items.shift()!;
      try {
        await this.work(item);
      } catch {
        // The worker reports its own failures; one bad write must not stop the queue.
      }
    }
    this.running = false;
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const w of waiters) w();
  }
}
