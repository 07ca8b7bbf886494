/**
 * One timer source for the whole stack. Flows re-arm their timers on almost every segment (RTO, idle),
 * so arming is cheap: a timer keeps its deadline, and the heap holds at most one live entry per timer;
 * a later deadline is noticed when the earlier entry pops. Only one host timer is ever pending, armed
 * for the earliest entry. The clock is injected so tests drive time by hand (`ManualClock`).
 */

export interface NetClock {
  /** Milliseconds, monotonic. */
  now(): number;
  setTimeout(cb: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export const systemClock: NetClock = {
  now: () => performance.now(),
  setTimeout: (cb, ms) => {
    const t = setTimeout(cb, ms);
    t.unref?.();
    return t;
  },
  clearTimeout: (h) => clearTimeout(h as ReturnType<typeof setTimeout>),
};

interface Entry {
  at: number;
  timer: Timer;
}

export class Timer {
  /** When the timer should fire, or undefined when disarmed. */
  deadline: number | undefined;
  /** The `at` of this timer's live heap entry, if any. */
  scheduledAt: number | undefined;
  readonly wheel: TimerWheel;
  readonly fire: () => void;
  constructor(wheel: TimerWheel, fire: () => void) {
    this.wheel = wheel;
    this.fire = fire;
  }

  get armed(): boolean {
    return this.deadline !== undefined;
  }

  arm(delayMs: number): void {
    this.wheel.arm(this, this.wheel.clock.now() + Math.max(0, delayMs));
  }

  /** Arms only if not armed already (keeps an earlier deadline). */
  ensure(delayMs: number): void {
    if (this.deadline === undefined) this.arm(delayMs);
  }

  cancel(): void {
    this.deadline = undefined;
  }
}

export class TimerWheel {
  readonly clock: NetClock;
  #heap: Entry[] = [];
  #hostTimer: unknown;
  #hostAt: number | undefined;
  #closed = false;

  constructor(clock: NetClock) {
    this.clock = clock;
  }

  timer(fire: () => void): Timer {
    return new Timer(this, fire);
  }

  /** Live heap entries (for tests: bounded by the number of timers). */
  get size(): number {
    return this.#heap.length;
  }

  arm(t: Timer, at: number): void {
    if (this.#closed) return;
    t.deadline = at;
    if (t.scheduledAt !== undefined && t.scheduledAt <= at) return;
    t.scheduledAt = at;
    this.#push({ at, timer: t });
    this.#reschedule();
  }

  close(): void {
    this.#closed = true;
    this.#heap = [];
    if (this.#hostTimer !== undefined) this.clock.clearTimeout(this.#hostTimer);
    this.#hostTimer = undefined;
    this.#hostAt = undefined;
  }

  /** Fires every timer due at the clock's current time (the host timer calls this; tests may too). */
  runDue(): void {
    const now = this.clock.now();
    while (this.#heap.length > 0 && this.#heap[0]!.at <= now) {
      const e = this.#pop();
      const t = e.timer;
      if (t.scheduledAt !== e.at) continue; // superseded by an earlier entry
      t.scheduledAt = undefined;
      if (t.deadline === undefined) continue;
      if (t.deadline > now) {
        t.scheduledAt = t.deadline;
        this.#push({ at: t.deadline, timer: t });
        continue;
      }
      t.deadline = undefined;
      t.fire();
      if (this.#closed) return;
    }
    this.#reschedule();
  }

  #reschedule(): void {
    if (this.#closed) return;
    const next = this.#heap[0]?.at;
    if (next === this.#hostAt) return;
    if (this.#hostTimer !== undefined) this.clock.clearTimeout(this.#hostTimer);
    this.#hostTimer = undefined;
    this.#hostAt = next;
    if (next === undefined) return;
    this.#hostTimer = this.clock.setTimeout(() => {
      this.#hostTimer = undefined;
      this.#hostAt = undefined;
      this.runDue();
    }, Math.max(0, next - this.clock.now()));
  }

  #compactAt = 1024;

  #push(e: Entry): void {
    // Arming earlier leaves the old entry behind until it pops; if those pile up (time standing still),
    // drop them all at once. Amortized O(1): the threshold doubles with the live size.
    if (this.#heap.length >= this.#compactAt) {
      const live = this.#heap.filter((x) => x.timer.scheduledAt === x.at);
      this.#heap = [];
      for (const x of live) this.#siftUp(x);
      this.#compactAt = Math.max(1024, 2 * this.#heap.length);
    }
    this.#siftUp(e);
  }

  #siftUp(e: Entry): void {
    const h = this.#heap;
    h.push(e);
    let i = h.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (h[p]!.at <= e.at) break;
      h[i] = h[p]!;
      i = p;
    }
    h[i] = e;
  }

  #pop(): Entry {
    const h = this.#heap;
    const top = h[0]!;
    const last = h.pop()!;
    if (h.length > 0) {
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        if (l >= h.length) break;
        const r = l + 1;
        const c = r < h.length && h[r]!.at < h[l]!.at ? r : l;
        if (h[c]!.at >= last.at) break;
        h[i] = h[c]!;
        i = c;
      }
      h[i] = last;
    }
    return top;
  }
}

/** A clock tests advance by hand; `advance` fires due timers in deadline order. */
export class ManualClock implements NetClock {
  #now = 0;
  #seq = 0;
  #pending = new Map<number, { at: number; cb: () => void }>();

  now(): number {
    return this.#now;
  }

  setTimeout(cb: () => void, ms: number): unknown {
    const id = ++this.#seq;
    this.#pending.set(id, { at: this.#now + ms, cb });
    return id;
  }

  clearTimeout(handle: unknown): void {
    this.#pending.delete(handle as number);
  }

  /** Moves time forward by ms, firing every host timer that comes due on the way. */
  advance(ms: number): void {
    const target = this.#now + ms;
    for (;;) {
      let best: [number, { at: number; cb: () => void }] | undefined;
      for (const e of this.#pending) if (e[1].at <= target && (!best || e[1].at < best[1].at)) best = e;
      if (!best) break;
      this.#pending.delete(best[0]);
      this.#now = Math.max(this.#now, best[1].at);
      best[1].cb();
    }
    this.#now = target;
  }
}
