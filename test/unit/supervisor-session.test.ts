import { test } from "node:test";
import assert from "node:assert/strict";
import type { VmEvent } from "../../src/backend/types.ts";
import { setup } from "../helpers/supervisor-fakes.ts";

const signal = new AbortController().signal;

test("supervisor: boot records running, the workload's exit 0 powers off -> stopped", async () => {
  const { sup, link, states, results } = setup();
  await sup.boot();
  assert.equal(sup.phase, "running");
  link.emit("hello ");
  const seen: string[] = [];
  const attached = sup.attach((_s, d) => seen.push(d.toString()), signal);
  link.emit("world");
  link.finish({ ran: true, exitCode: 0 });
  assert.deepEqual(await attached, { ran: true, exitCode: 0 });
  assert.equal(await sup.done, "stopped");
  assert.deepEqual(seen, ["hello ", "world"]);
  assert.equal(results.length, 1);
  assert.match(states[0] as string, /^running: guest ready/);
  assert.equal(states.at(-1), "stopped: workload exited with code 0");
});

test("supervisor: a non-zero workload exit is recorded failed with the code", async () => {
  const { sup, link, states } = setup();
  await sup.boot();
  link.finish({ ran: true, exitCode: 3 });
  assert.equal(await sup.done, "failed");
  assert.equal(states.at(-1), "failed: workload exited with code 3");
});

test("supervisor: a rejected boot config fails the boot with the serial tail", async () => {
  const { sup, vm, states } = setup({ rejectBoot: true });
  await sup.boot();
  assert.equal(await sup.done, "failed");
  await assert.rejects(sup.waitReady(100), (e: Error & { code?: string }) => e.code === "BOOT_FAILED" && /setup step 1 failed/.test(e.message) && /\[serial\] last line/.test(e.message));
  assert.ok(vm.exitStatus(), "the VM was ended");
  assert.match(states.at(-1) as string, /^failed: workspace ws failed to boot: setup step 1 failed/);
});

test("supervisor: a VM crash fails in-flight requests with VM_DIED and records failed", async () => {
  const { sup, vm, states } = setup();
  await sup.boot();
  const inflight = sup.exec({ argv: ["hang"] }, undefined, signal);
  vm.end({ code: 1, signal: null });
  await assert.rejects(inflight, (e: Error & { code?: string }) => e.code === "VM_DIED" && /exit code 1/.test(e.message) && /last line/.test(e.message));
  assert.equal(await sup.done, "failed");
  assert.equal(states.at(-1), "failed: the VM exited unexpectedly (exit code 1)");
});

test("supervisor: halt goes stopping -> halted; stop of a guest that ignores shutdown escalates", async () => {
  {
    const { sup, states } = setup();
    await sup.boot();
    assert.deepEqual(await sup.shutdown("halt", undefined), { state: "halted" });
    assert.deepEqual(states.slice(1).map((s) => s.split(":")[0]), ["stopping", "halted"]);
  }
  {
    const { sup, vm } = setup({ ignoreShutdown: true });
    await sup.boot();
    // requestPowerdown is not used while the link exists; the timeout escalates to terminate.
    assert.deepEqual(await sup.shutdown("stop", 100), { state: "stopped" });
    assert.equal(vm.exitStatus()?.signal, "SIGTERM");
  }
  {
    const { sup } = setup({ ignoreShutdown: true });
    await sup.boot();
    await assert.rejects(sup.shutdown("halt", 100), (e: Error & { code?: string }) => e.code === "SHUTDOWN_TIMEOUT");
    assert.equal(await sup.done, "failed");
  }
});

test("supervisor: quarantine severs the channel and freezes the VM; exec is refused; kill ends it", async () => {
  const { sup, link, vm, states } = setup();
  await sup.boot();
  assert.deepEqual(await sup.quarantine(), { state: "quarantined", frozen: true });
  assert.ok(link.isClosed());
  assert.ok(vm.frozen);
  await assert.rejects(sup.exec({ argv: ["true"] }, undefined, signal), (e: Error & { code?: string }) => e.code === "QUARANTINED");
  await assert.rejects(sup.console({ cols: 80, rows: 24 }), (e: Error & { code?: string }) => e.code === "QUARANTINED");
  assert.deepEqual(await sup.kill(), { state: "stopped" });
  assert.deepEqual(states.map((s) => s.split(":")[0]), ["running", "quarantined", "stopped"]);
});

test("supervisor: readiness probes come from real round trips", async () => {
  const { sup } = setup();
  const before = await sup.readiness(100);
  assert.equal(before.guestReady.ready, false);
  await sup.boot();
  assert.deepEqual(await sup.ping(), { guestMs: 0.25 });
  const r = await sup.readiness(1000);
  assert.equal(r.guestReady.ready, true);
  assert.equal(r.execReady.ready, true);
  assert.equal(r.shellReady.ready, true);
  assert.equal(r.resultReady.ready, false);
});

test("supervisor: a halt that a concurrent kill ends is not reported clean (HALT_NOT_CLEAN), in either order", async () => {
  {
    // kill lands after the halt was accepted (the guest has not powered off yet)
    const { sup, states } = setup({ ignoreShutdown: true });
    await sup.boot();
    const halting = sup.shutdown("halt", 5000);
    await new Promise((r) => setTimeout(r, 20));
    assert.deepEqual(await sup.kill(), { state: "stopped" });
    await assert.rejects(halting, (e: Error & { code?: string }) => {
      assert.equal(e.code, "HALT_NOT_CLEAN");
      assert.match(e.message, /ended stopped \(killed \(VM killed by SIGKILL\)\)/);
      return true;
    });
    assert.equal(states.at(-1), "stopped: killed (VM killed by SIGKILL)");
  }
  {
    // kill first, halt a moment later (the supervisor still answers)
    const { sup } = setup();
    await sup.boot();
    await sup.kill();
    await assert.rejects(sup.shutdown("halt", 5000), (e: Error & { code?: string }) => e.code === "HALT_NOT_CLEAN");
  }
});

test("supervisor: an exec in flight when the workspace is halted on request fails with NOT_RUNNING, not VM_DIED", async () => {
  const { sup } = setup();
  await sup.boot();
  const inflight = sup.exec({ argv: ["hang"] }, undefined, signal);
  assert.deepEqual(await sup.shutdown("halt", 1000), { state: "halted" });
  await assert.rejects(inflight, (e: Error & { code?: string }) => e.code === "NOT_RUNNING" && /halted on request/.test(e.message));
});

test("supervisor: a boot bound names the real bound in its message", async () => {
  const { sup, link } = setup();
  (sup.config as { bootTimeoutMs: number }).bootTimeoutMs = 150;
  link.sendBootConfig = () => new Promise(() => {});
  await sup.boot();
  await assert.rejects(
    sup.waitReady(100),
    (e: Error & { code?: string; remediation?: string; details?: { code?: string } }) =>
      e.code === "BOOT_FAILED" &&
      /timed out after 150 ms waiting for the guest to accept its boot config/.test(e.message) &&
      // An overrun boot is a timeout with its own fix, never "a bug in microagent".
      e.details?.code === "BOOT_TIMEOUT" &&
      /--timeout/.test(e.remediation ?? "") &&
      !/bug/.test(e.remediation ?? ""),
  );
  assert.equal(await sup.done, "failed");
  // and a wait_ready bound names its own
  const other = setup();
  other.link.sendBootConfig = () => new Promise(() => {});
  void other.sup.boot();
  await assert.rejects(other.sup.waitReady(120), (e: Error & { code?: string }) => e.code === "WAIT_TIMEOUT" && /timed out after 120 ms/.test(e.message));
  await other.sup.kill();
});

test("supervisor: a VM paused on a full host disk fails requests with DISK_FULL at once, resumes when space is back, and halts without waiting", async () => {
  const { sup, vm } = setup({ ignoreShutdown: true });
  let free = 0;
  const listeners = new Set<(e: VmEvent) => void>();
  let resumed = 0;
  Object.assign(vm, {
    onEvent: (l: (e: VmEvent) => void) => (listeners.add(l), () => listeners.delete(l)),
    resume: async () => {
      resumed++;
      for (const l of listeners) l({ type: "resumed" });
    },
  });
  (sup.config as { ioPause?: unknown }).ioPause = { resumeFreeBytes: 1000, pollMs: 20, freeBytes: async () => free };
  await sup.boot();
  const pause = () => {
    for (const l of listeners) l({ type: "io-error", device: "disk0", operation: "write", nospace: true, reason: "No space left on device" });
  };
  const inflight = sup.exec({ argv: ["hang"] }, undefined, signal);
  pause();
  await assert.rejects(inflight, (e: Error & { code?: string }) => e.code === "DISK_FULL" && /host disk is full/.test(e.message));
  const started = Date.now();
  await assert.rejects(sup.exec({ argv: ["true"] }, undefined, signal), (e: Error & { code?: string; remediation?: string }) => e.code === "DISK_FULL" && /Free disk space/.test(e.remediation ?? ""));
  assert.ok(Date.now() - started < 100, "failed fast");
  const r = await sup.readiness(100);
  assert.equal(r.execReady.ready, false);
  assert.match(r.execReady.error ?? "", /^DISK_FULL: .*free/i);
  // space comes back: the periodic check resumes the VM and exec works again
  free = 5000;
  for (let i = 0; i < 50 && resumed === 0; i++) await new Promise((res) => setTimeout(res, 20));
  assert.equal(resumed, 1);
  assert.equal((await sup.exec({ argv: ["true"] }, undefined, signal)).status, "exited");
  // paused again with no space: halt ends it at once instead of waiting out its timeout
  free = 0;
  pause();
  const haltStarted = Date.now();
  await assert.rejects(sup.shutdown("halt", 10_000), (e: Error & { code?: string }) => e.code === "DISK_FULL" && /could not be halted cleanly/.test(e.message));
  assert.ok(Date.now() - haltStarted < 2000, `halt took ${Date.now() - haltStarted} ms`);
  assert.equal(await sup.done, "failed");
});

test("supervisor: a boot ended by a kill answers wait_ready with NOT_RUNNING (not a retryable WAIT_TIMEOUT)", async () => {
  const { sup, link } = setup();
  link.sendBootConfig = () => new Promise(() => {});
  void sup.boot();
  const waiting = sup.waitReady(5000);
  await new Promise((r) => setTimeout(r, 20));
  await sup.kill();
  await assert.rejects(waiting, (e: Error & { code?: string; retryable?: boolean }) => e.code === "NOT_RUNNING" && e.retryable === false && /killed while booting/.test(e.message));
});

test("supervisor: a VM paused on a full disk while booting fails the start at once with DISK_FULL, recorded failed", async () => {
  const { sup, vm, link, states } = setup();
  const listeners = new Set<(e: VmEvent) => void>();
  Object.assign(vm, { onEvent: (l: (e: VmEvent) => void) => (listeners.add(l), () => listeners.delete(l)) });
  link.sendBootConfig = () => new Promise(() => {});
  const booting = sup.boot();
  await new Promise((r) => setTimeout(r, 20));
  for (const l of listeners) l({ type: "io-error", device: "disk0", operation: "write", nospace: true, reason: "No space left on device" });
  await booting;
  await assert.rejects(sup.waitReady(100), (e: Error & { code?: string }) => e.code === "DISK_FULL");
  assert.equal(await sup.done, "failed");
  assert.match(states.at(-1) as string, /^failed: workspace ws is paused: the host disk is full/);
});

test("supervisor: a quarantine while booting keeps the VM quarantined: the boot never records running", async () => {
  const { sup, link, states, vm } = setup();
  let accept!: () => void;
  link.sendBootConfig = () => new Promise<void>((r) => (accept = r));
  const booting = sup.boot();
  await new Promise((r) => setTimeout(r, 20));
  assert.deepEqual(await sup.quarantine(), { state: "quarantined", frozen: true });
  accept();
  await booting;
  assert.equal(sup.phase, "quarantined");
  assert.deepEqual(states.map((s) => s.split(":")[0]), ["quarantined"]);
  assert.equal(vm.exitStatus(), undefined, "the frozen VM is kept as evidence");
  await assert.rejects(sup.waitReady(100), (e: Error & { code?: string }) => e.code === "QUARANTINED");
  assert.deepEqual(await sup.kill(), { state: "stopped" });
});

test("supervisor: phase, vm, link and workload are read-only from outside", async () => {
  const { sup } = setup();
  await sup.boot();
  for (const k of ["phase", "vm", "link", "workload"]) {
    assert.throws(() => ((sup as unknown as Record<string, unknown>)[k] = undefined), TypeError, k);
  }
  assert.equal(sup.phase, "running");
  await sup.kill();
});

test("supervisor: pause freezes the VM and refuses exec/console at once; resume thaws it; both are idempotent", async () => {
  const { sup, vm, states } = setup();
  await sup.boot();
  const paused = await sup.pause();
  assert.equal(paused.state, "paused");
  assert.equal(paused.changed, true);
  assert.ok(paused.ms >= 0);
  assert.equal(sup.phase, "paused");
  assert.ok(vm.frozen);
  assert.equal(sup.status().phase, "paused");
  assert.deepEqual(await sup.pause(), { state: "paused", changed: false, ms: 0 });
  const t0 = Date.now();
  await assert.rejects(sup.exec({ argv: ["true"] }, undefined, signal), (e: Error & { code?: string; kind?: string; remediation?: string }) => {
    assert.equal(e.code, "WORKSPACE_PAUSED");
    assert.equal(e.kind, "conflict");
    assert.match(e.remediation ?? "", /microagent resume ws/);
    return true;
  });
  assert.ok(Date.now() - t0 < 500, "refused at once");
  await assert.rejects(sup.console({ cols: 80, rows: 24 }), (e: Error & { code?: string }) => e.code === "WORKSPACE_PAUSED");
  await assert.rejects(sup.ping(), (e: Error & { code?: string }) => e.code === "WORKSPACE_PAUSED");
  const r = await sup.readiness(100);
  assert.equal(r.execReady.ready, false);
  const resumed = await sup.resume();
  assert.equal(resumed.state, "running");
  assert.equal(resumed.changed, true);
  assert.equal(vm.frozen, false);
  assert.deepEqual(await sup.resume(), { state: "running", changed: false, ms: 0 });
  assert.equal((await sup.exec({ argv: ["true"] }, undefined, signal)).exitCode, 0);
  assert.deepEqual(states.map((s) => s.split(":")[0]), ["running", "paused", "running"]);
});

test("supervisor: halt of a paused VM thaws it first and halts cleanly", async () => {
  const { sup, vm, states } = setup();
  await sup.boot();
  await sup.pause();
  // The fake guest ignores shutdown while frozen: a halt that forgot to thaw would time out.
  assert.deepEqual(await sup.shutdown("halt", 1000), { state: "halted" });
  assert.equal(vm.frozen, false);
  assert.deepEqual(states.map((s) => s.split(":")[0]), ["running", "paused", "stopping", "halted"]);
  assert.match(states[2] as string, /resumed to power off/);
});

test("supervisor: kill and quarantine work from paused; quarantine keeps the VM frozen", async () => {
  {
    const { sup, states } = setup();
    await sup.boot();
    await sup.pause();
    assert.deepEqual(await sup.kill(), { state: "stopped" });
    assert.deepEqual(states.map((s) => s.split(":")[0]), ["running", "paused", "stopped"]);
  }
  {
    const { sup, vm, states } = setup();
    await sup.boot();
    await sup.pause();
    assert.deepEqual(await sup.quarantine(), { state: "quarantined", frozen: true });
    assert.ok(vm.frozen);
    await assert.rejects(sup.resume(), (e: Error & { code?: string }) => e.code === "NOT_RUNNING");
    assert.ok(vm.frozen, "a quarantined VM is never thawed by resume");
    assert.deepEqual(states.map((s) => s.split(":")[0]), ["running", "paused", "quarantined"]);
    await sup.kill();
  }
});

test("supervisor: pause is refused without the capability and outside running; a VM dying while paused is failed", async () => {
  {
    const { sup } = setup({ noPause: true });
    await sup.boot();
    await assert.rejects(sup.pause(), (e: Error & { code?: string; kind?: string }) => e.code === "PAUSE_UNSUPPORTED" && e.kind === "unsupported");
    assert.equal(sup.phase, "running");
    await sup.kill();
  }
  {
    const { sup } = setup();
    await assert.rejects(sup.pause(), (e: Error & { code?: string }) => e.code === "NOT_RUNNING");
    await assert.rejects(sup.resume(), (e: Error & { code?: string }) => e.code === "NOT_RUNNING");
  }
  {
    const { sup, vm, states } = setup();
    await sup.boot();
    await sup.pause();
    vm.end({ code: 1, signal: null });
    assert.equal(await sup.done, "failed");
    assert.deepEqual(states.map((s) => s.split(":")[0]), ["running", "paused", "failed"]);
  }
});
