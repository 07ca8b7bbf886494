/**
 * A fake VM, guest link and backend for unit tests of the Supervisor (no QEMU, no guest): the VM
 * exits when powered off, terminated, killed or crashed (`end`); the link's workload result and
 * output are driven by the test.
 */
import { PassThrough } from "node:stream";
import { Supervisor, type ResolvedSupervisorConfig, type SupervisorDeps } from "../../src/supervisor/session.ts";
import type { GuestLink } from "../../src/supervisor/guest-link.ts";
import type { Backend, RunningVm, VmExit } from "../../src/backend/types.ts";
import type { WorkloadResult } from "../../src/supervisor/protocol.ts";
import type { SupervisorService } from "../../src/supervisor/service.ts";

/** A fake VM: exits when powered off, killed or crashed. */
export function fakeVm() {
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

export function fakeLink(vm: ReturnType<typeof fakeVm>, opts: { rejectBoot?: boolean; ignoreShutdown?: boolean } = {}) {
  let resolveResult!: (r: WorkloadResult) => void;
  const result = new Promise<WorkloadResult>((r) => (resolveResult = r));
  let outputCb: ((s: "stdout" | "stderr", d: Buffer) => unknown) | undefined;
  let closed = false;
  const link: GuestLink & { sentConfigs: unknown[]; finish(r: WorkloadResult): void; emit(s: string): Promise<unknown> | undefined; isClosed(): boolean } = {
    hello: { protocolVersion: 1 },
    sentConfigs: [],
    sendBootConfig: async (cfg) => {
      link.sentConfigs.push(cfg);
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
      // A frozen guest cannot act on a shutdown request: it would only time out.
      if (!opts.ignoreShutdown && !vm.frozen) setTimeout(() => vm.end({ code: 0, signal: null }), 5);
    },
    close: () => (closed = true),
    closed: new Promise(() => {}),
    finish: (r) => resolveResult(r),
    emit: (s) => outputCb?.("stdout", Buffer.from(s)) as Promise<unknown> | undefined,
    isClosed: () => closed,
  };
  return link;
}

export interface SetupOptions {
  rejectBoot?: boolean;
  ignoreShutdown?: boolean;
  services?: SupervisorService[];
  bootConfig?: unknown;
  /** The backend has no pause capability (no freeze/thaw). */
  noPause?: boolean;
  /** Called by the fake backend's launch with the spec it got. */
  onLaunch?: (spec: Parameters<Backend["lifecycle"]["launch"]>[0]) => void;
}

export function setup(linkOpts: SetupOptions = {}) {
  const vm = fakeVm();
  const link = fakeLink(vm, linkOpts);
  const states: string[] = [];
  const results: WorkloadResult[] = [];
  const logs: string[] = [];
  const backend: Backend = {
    name: "linux-qemu",
    lifecycle: {
      launch: async (spec) => {
        linkOpts.onLaunch?.(spec);
        return vm;
      },
    },
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
    ...(linkOpts.noPause
      ? {}
      : { freeze: async (v) => backend.pause?.pause(v, config.launch), thaw: async (v) => backend.pause?.resume(v, config.launch) }),
    ...(linkOpts.services ? { services: linkOpts.services } : {}),
    log: (m) => void logs.push(m),
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
    bootConfig: linkOpts.bootConfig ?? {},
    bootTimeoutMs: 2000,
    shutdownTimeoutMs: 200,
    lingerMs: 0,
    shell: "/bin/sh",
  };
  return { vm, link, states, results, logs, sup: new Supervisor(config, deps) };
}

