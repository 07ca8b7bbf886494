/**
 * The stack's single timer source: ordering, cheap re-arming (one host timer, a bounded heap), and
 * late host-side callbacks after a flow or the stack is gone.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { ManualClock, TimerWheel } from "../../src/net/timers.ts";
import { GuestTcp, harness, ip, pump } from "../helpers/net-guest.ts";

test("net-timers: timers fire in deadline order; re-arming later or cancelling is honoured", () => {
  const clock = new ManualClock();
  const w = new TimerWheel(clock);
  const fired: string[] = [];
  const a = w.timer(() => fired.push(`a@${clock.now()}`));
  const b = w.timer(() => fired.push(`b@${clock.now()}`));
  const c = w.timer(() => fired.push(`c@${clock.now()}`));
  a.arm(100);
  b.arm(50);
  c.arm(70);
  a.arm(300); // pushed later
  c.cancel();
  clock.advance(1000);
  assert.deepEqual(fired, ["b@50", "a@300"]);
  b.arm(10);
  b.arm(5); // earlier wins
  clock.advance(5);
  assert.deepEqual(fired.at(-1), "b@1005");
});

test("net-timers: 10^5 re-arms keep the timer heap bounded (stale entries compacted)", () => {
  const clock = new ManualClock();
  let hostTimers = 0;
  const counting = {
    now: () => clock.now(),
    setTimeout: (cb: () => void, ms: number) => {
      hostTimers++;
      return clock.setTimeout(cb, ms);
    },
    clearTimeout: (h: unknown) => clock.clearTimeout(h),
  };
  const w = new TimerWheel(counting);
  const ts = Array.from({ length: 100 }, () => w.timer(() => {}));
  // The common case (an RTO or idle timer pushed out on every ACK): no heap entry, no host timer.
  for (let i = 0; i < 100_000; i++) ts[i % 100]!.arm(200 + i);
  assert.equal(w.size, 100);
  assert.equal(hostTimers, 1);
  for (let i = 0; i < 100_000; i++) ts[i % 100]!.arm(200 + (i % 7));
  assert.ok(w.size <= 1024, `heap ${w.size}`);
  // The worst case: one timer armed ever earlier while time stands still.
  for (let i = 0; i < 100_000; i++) ts[0]!.arm(1e6 - i);
  assert.ok(w.size <= 2048, `heap ${w.size} stays bounded`);
  clock.advance(1e6);
});

test("net-timers: host callbacks after the flow or the stack is gone are harmless", () => {
  const h = harness();
  const g = new GuestTcp(h, { localPort: 40000, remote: ip("93.184.216.34"), remotePort: 80 });
  g.connect();
  pump(h, [g]);
  const host = h.connector.last;
  g.rst();
  assert.equal(h.stack.flows().length, 0);
  host.h.onData(Buffer.from("late"));
  host.h.onDrain();
  host.h.onEnd();
  host.h.onClose(new Error("late"));
  h.stack.close();
  host.h.onData(Buffer.from("later"));
  h.clock.advance(100_000);
  assert.equal(h.out.length, 0);
  assert.equal(h.stack.stats().bufferedBytes, 0);
});
