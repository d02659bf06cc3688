// Request deadlines without a timer per request: every request gets the same timeout, so deadlines
// arrive in order and a FIFO list is already sorted. One coarse interval expires the list's head;
// add and remove are O(1) pointer updates (a setTimeout + clearTimeout pair per request costs far
// more on the hot path). A deadline fires up to one tick late, which is fine for a 504 after minutes.

export interface Deadlined {
  deadline: number;
  prevDeadline: Deadlined | undefined;
  nextDeadline: Deadlined | undefined;
  listed: boolean;
  expired(): void;
}

export class DeadlineList {
  private head: Deadlined | undefined;
  private tail: Deadlined | undefined;
  private timer: NodeJS.Timeout | undefined;

  constructor(readonly tickMs: number) {}

  start(): void {
    this.timer ??= setInterval(() => this.expire(performance.now()), this.tickMs).unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Appends `x` with `deadline` (performance.now() time); deadlines must not decrease between calls. */
  add(x: Deadlined, deadline: number): void {
    x.deadline = deadline;
    x.prevDeadline = this.tail;
    x.nextDeadline = undefined;
    x.listed = true;
    if (this.tail) this.tail.nextDeadline = x;
    else this.head = x;
    this.tail = x;
  }

  remove(x: Deadlined): void {
    if (!x.listed) return;
    x.listed = false;
    const { prevDeadline: p, nextDeadline: n } = x;
    if (p) p.nextDeadline = n;
    else this.head = n;
    if (n) n.prevDeadline = p;
    else this.tail = p;
    x.prevDeadline = x.nextDeadline = undefined;
  }

  /** Every entry, oldest first (a snapshot: `fn` may remove entries). */
  snapshot(): Deadlined[] {
    const out: Deadlined[] = [];
    for (let x = this.head; x; x = x.nextDeadline) out.push(x);
    return out;
  }

  /** Removes and fires every entry whose deadline has passed. */
  expire(now: number): void {
    while (this.head && this.head.deadline <= now) {
      const x = this.head;
      this.remove(x);
      x.expired();
    }
  }
}
