/**
 * The linux-qemu backend: QEMU's microvm machine (virtio-mmio via ACPI), KVM when the host probe
 * says a guest can run there, else TCG. Disk = the workspace's qcow2 overlay, guest channel =
 * virtio-serial port over a unix socket, serial console = a file, no NIC (isolated).
 */
import { connect as netConnect } from "node:net";
import type { Duplex } from "node:stream";
import { launchQemu, type QemuHandle } from "../vmm/qemu/launch.ts";
import { findQemu, tscKhz } from "../vmm/qemu/host.ts";
import { existsSync } from "node:fs";
import { writeFileAtomic } from "../util/fs.ts";
import { dirname, join } from "node:path";
import type { QemuSpec } from "../vmm/qemu/args.ts";
import { QmpClient } from "../vmm/qemu/qmp.ts";
import { stopProcessGroup, DEFAULT_GRACE_MS } from "./process-group.ts";
import { BackendErrors } from "./errors.ts";
import type { Backend, RunningVm, VmExit, VmLaunchSpec } from "./types.ts";

/**
 * TCG translation cache per VM, in MiB. An idle busybox guest uses ~46 MiB of it; 64 leaves room for
 * real workloads while bounding what a long-running guest can make QEMU hold (QEMU's own cap is 1 GiB).
 */
export const TCG_CACHE_MIB = 64;

/** The QEMU spec for a launch spec: pure, so the command line is unit-testable. */
export function qemuSpecFor(spec: VmLaunchSpec, hostTscKhz: number | undefined): QemuSpec {
  return {
    accel: spec.accel,
    ...(spec.accel === "tcg" ? { tcgCacheMib: TCG_CACHE_MIB } : {}),
    memoryMib: spec.memoryMib,
    cpus: spec.cpus,
    kernelPath: spec.kernelPath,
    initramfsPath: spec.initramfsPath,
    ...(spec.kernelArgs ? { kernelArgs: spec.kernelArgs } : {}),
    ...(hostTscKhz !== undefined ? { tscKhz: hostTscKhz } : {}),
    rootDisk: { path: spec.disk.path, format: spec.disk.format },
    channel: { socketPath: spec.channelSocketPath },
    serial: { kind: "file", path: spec.serialLogPath },
    qmpSocketPath: spec.controlSocketPath,
  };
}

class QemuVm implements RunningVm {
  readonly #handle: QemuHandle;
  readonly exited: Promise<VmExit>;

  constructor(handle: QemuHandle) {
    this.#handle = handle;
    this.exited = handle.exited;
  }

  get pid(): number {
    return this.#handle.pid;
  }

  exitStatus(): VmExit | undefined {
    return this.#handle.exit();
  }

  stderrTail(): string {
    return this.#handle.stderrTail();
  }

  async #qmp<T>(fn: (c: QmpClient) => Promise<T>): Promise<T> {
    const client = await QmpClient.connect(this.qmpSocket, { timeoutMs: 5000 });
    try {
      return await fn(client);
    } finally {
      client.close();
    }
  }

  /** ACPI power button (the fallback when the guest channel cannot deliver a shutdown). */
  requestPowerdown(): Promise<void> {
    return this.#qmp((c) => c.systemPowerdown());
  }

  /** Stop the vCPUs (quarantine keeps the VM frozen as evidence). */
  freeze(): Promise<void> {
    return this.#qmp((c) => c.stop());
  }

  qmpSocket = "";

  terminate(opts: { graceMs?: number } = {}): Promise<VmExit> {
    const exit = this.#handle.exit();
    if (exit) return Promise.resolve(exit);
    return stopProcessGroup({ pid: this.pid, exited: this.exited }, { graceMs: opts.graceMs ?? DEFAULT_GRACE_MS });
  }

  kill(): Promise<VmExit> {
    const exit = this.#handle.exit();
    if (exit) return Promise.resolve(exit);
    return stopProcessGroup({ pid: this.pid, exited: this.exited }, { immediate: true });
  }
}

/**
 * ...and if it is SIGKILLed (no exit hook runs), the kernel delivers SIGKILL to QEMU through the
 * parent-death signal: a tiny wrapper in the workspace's runtime dir execs QEMU under
 * `setpriv --pdeathsig KILL` (util-linux). Same pid, no extra process. Without setpriv, reconcile
 * still kills an orphaned VMM on the next read.
 */
async function deathBoundQemu(spec: VmLaunchSpec): Promise<string | undefined> {
  const setpriv = ["/usr/bin/setpriv", "/bin/setpriv"].find((p) => existsSync(p));
  if (!setpriv) return undefined;
  const qemu = findQemu();
  const wrapper = join(dirname(spec.controlSocketPath), "qemu");
  const script = `#!/bin/sh\nexec ${setpriv} --pdeathsig KILL -- ${shellQuote(qemu)} "$@"\n`;
  await writeFileAtomic(wrapper, script, 0o700);
  return wrapper;
}

function shellQuote(s: string): string {
  return `'${s.replaceAll("'", "'\\''")}'`;
}

export const linuxQemuBackend: Backend = {
  name: "linux-qemu",
  capabilities: { lifecycle: true, channel: true, console: true, exec: true, pause: false, snapshot: false },
  lifecycle: {
    async launch(spec: VmLaunchSpec): Promise<RunningVm> {
      const qemuPath = await deathBoundQemu(spec);
      const handle = await launchQemu(qemuSpecFor(spec, spec.accel === "tcg" ? tscKhz() : undefined), {
        timeoutMs: 15_000,
        // The supervisor outlives nothing it launched: if it exits, the VM goes with it...
        killOnExit: true,
        ...(qemuPath ? { qemuPath } : {}),
      });
      const vm = new QemuVm(handle);
      vm.qmpSocket = spec.controlSocketPath;
      return vm;
    },
  },
  channel: {
    openChannel(_vm: RunningVm, spec: VmLaunchSpec): Promise<Duplex> {
      return new Promise((resolve, reject) => {
        const s = netConnect(spec.channelSocketPath);
        s.once("connect", () => {
          s.off("error", reject);
          resolve(s);
        });
        s.once("error", (e) =>
          reject(BackendErrors.GUEST_CHANNEL_FAILED({ message: `cannot connect to the guest channel socket ${spec.channelSocketPath}: ${e.message}`, cause: e })),
        );
      });
    },
  },
};
