import { test } from "node:test";
import { liveGroupMembers } from "../helpers/proc.ts";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { stopProcessGroup, StopTimeoutError } from "../../src/backend/process-group.ts";
import type { VmExit } from "../../src/backend/types.ts";


/** A fake child: records signals with a virtual clock; `dieOn` says which signal ends it. */
function fakeChild(dieOn: NodeJS.Signals | "never") {
  let now = 0;
  const timers: { at: number; fn: () => void; cancelled: boolean }[] = [];
  const log: string[] = [];
  let resolveExit!: (e: VmExit) => void;
  const exited = new Promise<VmExit>((r) => (resolveExit = r));
  return {
    log,
    target: { pid: 4242, exited },
    signal: (pid: number, sig: NodeJS.Signals) => {
      log.push(`${now}ms ${sig} -${pid}`);
      if (sig === dieOn) queueMicrotask(() => resolveExit({ code: null, signal: sig }));
    },
    setTimer: (fn: () => void, ms: number) => {
      const t = { at: now + ms, fn, cancelled: false };
      timers.push(t);
      return { cancel: () => (t.cancelled = true) };
    },
    /** Advance the virtual clock to the next pending timer. */
    async tick() {
      await new Promise((r) => setImmediate(r));
      const next = timers.filter((t) => !t.cancelled).sort((a, b) => a.at - b.at)[0];
      if (!next) return false;
      next.cancelled = true;
      now = next.at;
      next.fn();
      return true;
    },
  };
}

test("backend: a child that obeys SIGTERM gets no SIGKILL", async () => {
  const c = fakeChild("SIGTERM");
  const exit = await stopProcessGroup(c.target, { graceMs: 3000, signal: c.signal, setTimer: c.setTimer });
  assert.deepEqual(exit, { code: null, signal: "SIGTERM" });
  assert.deepEqual(c.log, ["0ms SIGTERM -4242"]);
});

test("backend: a child that ignores SIGTERM is SIGKILLed after the grace period", async () => {
  const c = fakeChild("SIGKILL");
  const p = stopProcessGroup(c.target, { graceMs: 3000, hardCapMs: 5000, signal: c.signal, setTimer: c.setTimer });
  await c.tick();
  const exit = await p;
  assert.deepEqual(exit, { code: null, signal: "SIGKILL" });
  assert.deepEqual(c.log, ["0ms SIGTERM -4242", "3000ms SIGKILL -4242"]);
});

test("backend: a child that survives SIGKILL fails after the hard cap", async () => {
  const c = fakeChild("never");
  const p = stopProcessGroup(c.target, { graceMs: 1000, hardCapMs: 2000, signal: c.signal, setTimer: c.setTimer });
  const rejected = assert.rejects(p, StopTimeoutError);
  await c.tick();
  await c.tick();
  await rejected;
  assert.deepEqual(c.log, ["0ms SIGTERM -4242", "1000ms SIGKILL -4242"]);
});

test("backend: immediate stop sends only SIGKILL", async () => {
  const c = fakeChild("SIGKILL");
  await stopProcessGroup(c.target, { immediate: true, signal: c.signal, setTimer: c.setTimer });
  assert.deepEqual(c.log, ["0ms SIGKILL -4242"]);
});

test("backend: a real process group that traps SIGTERM (and its child) is killed", async () => {
  const child = spawn("sh", ["-c", "trap '' TERM; sleep 60 & wait"], { detached: true, stdio: "ignore" });
  const exited = new Promise<VmExit>((r) => child.on("exit", (code, signal) => r({ code, signal })));
  await new Promise((r) => setTimeout(r, 200));
  const started = Date.now();
  const exit = await stopProcessGroup({ pid: child.pid as number, exited }, { graceMs: 300, hardCapMs: 3000 });
  assert.equal(exit.signal, "SIGKILL");
  assert.ok(Date.now() - started >= 290);
  // The grandchild (sleep) was in the same group: nothing of the group survives.
  await new Promise((r) => setTimeout(r, 100));
  assert.deepEqual(liveGroupMembers(child.pid as number), []);
});
