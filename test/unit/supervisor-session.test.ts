import { test } from "node:test";
import assert from "node:assert/strict";
import { PassThrough } from "node:stream";
import { Supervisor, type ResolvedSupervisorConfig, type SupervisorDeps } from "../../src/supervisor/session.ts";
import type { GuestLink } from "../../src/supervisor/guest-link.ts";
import type { Backend, RunningVm, VmExit } from "../../src/backend/types.ts";
import type { WorkloadResult } from "../../src/supervisor/protocol.ts";

/** A fake VM: exits when powered off, killed or crashed. */
function fakeVm() {
  let resolveExit!: (e: VmExit) => void;
  let status: VmExit | undefined;
  const exited = new Promise<VmExit>((r) => (resolveExit = r));
  const end = (e: VmExit) => {
    if (status) return;
    status = e;
    resolveExit(e);
  };
  const vm: RunningVm & { end: typeof end; frozen: boolean } = {
    pid: 999999,
    exited,
    frozen: false,
    end,
    exitStatus: () => status,
    stderrTail: () => "",
    requestPowerdown: async () => end({ code: 0, signal: null }),
    terminate: async () => (end({ code: null, signal: "SIGTERM" }), exited),
    kill: async () => (end({ code: null, signal: "SIGKILL" }), exited),
  };
  return vm;
}

function fakeLink(vm: ReturnType<typeof fakeVm>, opts: { rejectBoot?: boolean; ignoreShutdown?: boolean } = {}) {
  let resolveResult!: (r: WorkloadResult) => void;
  const result = new Promise<WorkloadResult>((r) => (resolveResult = r));
  let outputCb: ((s: "stdout" | "stderr", d: Buffer) => void) | undefined;
  let closed = false;
  const link: GuestLink & { finish(r: WorkloadResult): void; emit(s: string): void; isClosed(): boolean } = {
    hello: { protocolVersion: 1 },
    sendBootConfig: async () => {
      if (opts.rejectBoot) throw new Error("setup step 1 failed: exit 2");
    },
    ping: async () => 0.25,
    exec: async (req, onOutput) => {
      if (req.argv[0] === "hang") return new Promise(() => {});
      onOutput?.("stdout", Buffer.from("out"));
      return { status: "exited", exitCode: 0, stdout: "", stderr: "", stdoutTruncated: false, stderrTruncated: false, startedAt: "", completedAt: "" };
    },
    openConsole: async () => {
      throw new Error("no console in fake");
    },
    onWorkloadOutput: (cb) => (outputCb = cb),
    workloadResult: () => result,
    shutdown: async () => {
      if (!opts.ignoreShutdown) setTimeout(() => vm.end({ code: 0, signal: null }), 5);
    },
    close: () => (closed = true),
    closed: new Promise(() => {}),
    finish: (r) => resolveResult(r),
    emit: (s) => outputCb?.("stdout", Buffer.from(s)),
    isClosed: () => closed,
  };
  return link;
}

function setup(linkOpts: { rejectBoot?: boolean; ignoreShutdown?: boolean } = {}) {
  const vm = fakeVm();
  const link = fakeLink(vm, linkOpts);
  const states: string[] = [];
  const results: WorkloadResult[] = [];
  const backend: Backend = {
    name: "linux-qemu",
    lifecycle: { launch: async () => vm },
    channel: { transport: "virtio-serial", openChannel: async () => new PassThrough() },
    pause: {
      pause: async () => void (vm.frozen = true),
      resume: async () => void (vm.frozen = false),
    },
  };
  const deps: SupervisorDeps = {
    backend,
    connectLink: async () => link,
    record: async (to, detail) => void states.push(`${to}: ${detail}`),
    vmLaunched: async () => {},
    writeResult: async (r) => void results.push(r),
    serialTail: async () => "[serial] last line",
    freeze: async (v) => backend.pause?.pause(v, config.launch),
    log: () => {},
  };
  const config: ResolvedSupervisorConfig = {
    workspace: "ws",
    runtimeId: "r1",
    launch: {
      workspace: "ws",
      kernelPath: "/k",
      initramfsPath: "/i",
      disk: { path: "/d", format: "qcow2" },
      memoryMib: 256,
      cpus: 1,
      accel: "tcg",
      serialLogPath: "/s",
      channelSocketPath: "/c",
      controlSocketPath: "/q",
    },
    bootConfig: {},
    bootTimeoutMs: 2000,
    shutdownTimeoutMs: 200,
    lingerMs: 0,
    shell: "/bin/sh",
  };
  return { vm, link, states, results, sup: new Supervisor(config, deps) };
}

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
