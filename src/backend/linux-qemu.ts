/**
 * The linux-qemu backend: QEMU's microvm machine (virtio-mmio via ACPI), KVM when the host probe
 * says a guest can run there, else TCG. Disk = the workspace's qcow2 overlay (qemu-img.ts), guest
 * channel = virtio-serial port over a unix socket, serial console = QEMU's stdout (a pipe the
 * supervisor drains into a size-capped serial.log), QMP kept connected for events (a full host disk
 * pauses the VM) and for pause = stop/cont, a NIC only when the launch spec attaches one
 * (`-netdev stream` to the supervisor's socket).
 */
import { createHash } from "node:crypto";
import { connect as netConnect } from "node:net";
import type { Duplex, Readable } from "node:stream";
import { launchQemu, type QemuHandle } from "../vmm/qemu/launch.ts";
import { findQemu, tscKhz } from "../vmm/qemu/host.ts";
import { existsSync } from "node:fs";
import { writeFileAtomic } from "../util/fs.ts";
import { dirname, join } from "node:path";
import type { QemuSpec } from "../vmm/qemu/args.ts";
import { QmpClient, type QmpEvent } from "../vmm/qemu/qmp.ts";
import { stopProcessGroup, DEFAULT_GRACE_MS } from "./process-group.ts";
import { BackendErrors } from "./errors.ts";
import { createQcow2Overlay, qemuImgBackingChain } from "./qemu-img.ts";
import { createOverlayImage, freezeDisk, restoreVmState, saveVmState } from "../vmm/qemu/snapshot.ts";
import type { Backend, FrozenDisk, RunningVm, VmEvent, VmExit, VmLaunchSpec } from "./types.ts";

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
    // The console goes to QEMU's stdout, not a `file` chardev: a file chardev grows without bound
    // (a guest can fill the host disk through its console); the supervisor writes serial.log capped.
    serial: { kind: "stdio" },
    qmpSocketPath: spec.controlSocketPath,
    ...(spec.network ? { network: { kind: "stream", socketPath: spec.network.socketPath, mac: spec.network.mac ?? macFor(spec.workspace) } } : {}),
  };
}

/**
 * A stable MAC per workspace: QEMU's 52:54:00 prefix (locally administered, unicast) plus three bytes
 * of the name's sha256, so a guest keeps its address (and DHCP lease) across boots.
 */
export function macFor(workspace: string): string {
  const h = createHash("sha256").update(workspace).digest();
  return ["52", "54", "00", ...[...h.subarray(0, 3)].map((b) => b.toString(16).padStart(2, "0"))].join(":");
}

class QemuVm implements RunningVm {
  readonly #handle: QemuHandle;
  readonly exited: Promise<VmExit>;
  readonly serialOutput: Readable | undefined;
  readonly qmpSocket: string;
  /**
   * One QMP connection for the VM's life: QEMU's monitor socket serves one client at a time, and
   * events (BLOCK_IO_ERROR, RESUME) reach only a connected client. Reconnected when it drops.
   */
  #client: Promise<QmpClient> | undefined;
  readonly #listeners = new Set<(e: VmEvent) => void>();

  constructor(handle: QemuHandle, qmpSocket: string) {
    this.#handle = handle;
    this.exited = handle.exited;
    this.serialOutput = handle.stdout ?? undefined;
    this.qmpSocket = qmpSocket;
    void this.exited.then(() => {
      void this.#client?.then((c) => c.close(), () => {});
    });
  }

  /** Connect the long-lived QMP client now, so events from the first moments are seen. */
  watch(): Promise<void> {
    return this.#qmpClient().then(() => undefined);
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

  #qmpClient(): Promise<QmpClient> {
    const cached = this.#client;
    if (cached) return cached;
    const connecting = QmpClient.connect(this.qmpSocket, { timeoutMs: 5000 }).then((c) => {
      c.onEvent((e) => this.#onQmpEvent(e));
      return c;
    });
    this.#client = connecting;
    connecting.catch(() => {
      if (this.#client === connecting) this.#client = undefined;
    });
    return connecting;
  }

  async #qmp<T>(fn: (c: QmpClient) => Promise<T>): Promise<T> {
    let client = await this.#qmpClient();
    if (client.closed) {
      this.#client = undefined;
      client = await this.#qmpClient();
    }
    return fn(client);
  }

  #onQmpEvent(e: QmpEvent): void {
    let event: VmEvent | undefined;
    if (e.event === "BLOCK_IO_ERROR") {
      // data: {device, node-name, operation: "read"|"write", action: "stop"|"report"|"ignore", nospace?, reason}
      const d = (e.data ?? {}) as Record<string, unknown>;
      if (d.action !== "stop") return; // reported to the guest (or ignored): the VM keeps running
      event = {
        type: "io-error",
        device: typeof d["node-name"] === "string" && d["node-name"] ? String(d["node-name"]) : String(d.device ?? ""),
        operation: String(d.operation ?? ""),
        nospace: d.nospace === true,
        reason: String(d.reason ?? ""),
      };
    } else if (e.event === "RESUME") {
      event = { type: "resumed" };
    }
    if (!event) return;
    for (const l of this.#listeners) l(event);
  }

  onEvent(listener: (e: VmEvent) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  runState(): Promise<{ status: string; running: boolean }> {
    return this.#qmp((c) => c.queryStatus());
  }

  resume(): Promise<void> {
    return this.#qmp((c) => c.cont());
  }

  /** ACPI power button (the fallback when the guest channel cannot deliver a shutdown). */
  requestPowerdown(): Promise<void> {
    return this.#qmp((c) => c.systemPowerdown());
  }

  /** Stop the vCPUs (memory, devices and disk stay), over the VM's one QMP connection. */
  pause(): Promise<void> {
    return this.#qmp((c) => c.stop());
  }

  /** Snapshot: move the paused VM's root disk (`disk0`) onto a new overlay; the current file is frozen. */
  async freezeDisk(newOverlayPath: string): Promise<FrozenDisk> {
    const r = await this.#qmp((c) => freezeDisk(c, { device: "disk0", newOverlayPath }));
    return { path: r.frozenPath, format: r.frozenFormat === "raw" ? "raw" : "qcow2", virtualSizeBytes: r.virtualSizeBytes };
  }

  /** Snapshot: the paused VM's memory and device state to `file`, over the VM's one QMP connection. */
  async saveState(file: string, timeoutMs?: number): Promise<{ bytes: number; ms: number }> {
    const r = await this.#qmp((c) => saveVmState(c, file, timeoutMs !== undefined ? { timeoutMs } : {}));
    return { bytes: r.bytes, ms: r.ms };
  }

  /** Restore: load `file` into this QEMU (launched with `-incoming defer`) and run it. */
  async loadState(file: string, timeoutMs?: number): Promise<number> {
    const r = await this.#qmp((c) => restoreVmState(c, file, { ...(timeoutMs !== undefined ? { timeoutMs } : {}), resume: true, stderrTail: () => this.stderrTail() }));
    return r.ms;
  }

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

function qemuVm(vm: RunningVm): QemuVm {
  if (!(vm instanceof QemuVm)) throw new Error("internal: a linux-qemu capability was given a VM this backend did not launch");
  return vm;
}

/** Launch QEMU for `spec`, booting it, or (`incoming`) built the same way and waiting for a saved state. */
async function startQemu(spec: VmLaunchSpec, incoming: boolean): Promise<QemuVm> {
  const qemuPath = await deathBoundQemu(spec);
  const qspec = qemuSpecFor(spec, spec.accel === "tcg" ? tscKhz() : undefined);
  const handle = await launchQemu(incoming ? { ...qspec, incoming: "defer" } : qspec, {
    timeoutMs: 15_000,
    // The supervisor outlives nothing it launched: if it exits, the VM goes with it...
    killOnExit: true,
    stdout: "pipe",
    ...(qemuPath ? { qemuPath } : {}),
  });
  const vm = new QemuVm(handle, spec.controlSocketPath);
  // Without events a full host disk would pause the VM silently; failing to watch is not fatal
  // (every later QMP call reconnects), but it is worth a second try before giving up.
  await vm.watch().catch(() => vm.watch().catch(() => {}));
  return vm;
}

export const linuxQemuBackend: Backend = {
  name: "linux-qemu",
  lifecycle: {
    launch: (spec: VmLaunchSpec): Promise<RunningVm> => startQemu(spec, false),
  },
  channel: {
    transport: "virtio-serial",
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
  disk: {
    // QEMU boots either; it makes a qcow2 overlay over the shared base (a few hundred KiB per
    // workspace instead of a copy).
    formats: ["qcow2", "raw"],
    async createDisk(req) {
      await createQcow2Overlay(req.base, req.baseFormat, req.path, req.sizeMib);
      return { path: req.path, format: "qcow2" };
    },
  },
  network: { attachments: ["stream"] },
  pause: {
    // Quarantine pauses the VM as evidence; memory, devices and disk stay as they are.
    // Through the VM's own long-lived QMP client: QEMU serves one monitor client at a time, so a
    // second connection would wait behind it.
    pause: (vm) => qemuVm(vm).pause(),
    resume: (vm) => qemuVm(vm).resume(),
  },
  snapshot: {
    // State through `exec:` into a file (QEMU 7.2 has no `file:` migration), the disk frozen with
    // blockdev-snapshot-sync onto a new overlay; src/vmm/qemu/snapshot.ts explains the order.
    freezeDisk: (vm, _spec, newOverlayPath) => qemuVm(vm).freezeDisk(newOverlayPath),
    saveState: (vm, _spec, file, opts) => qemuVm(vm).saveState(file, opts?.timeoutMs),
    layersOf: (path) => qemuImgBackingChain(path),
    async overlayOn(layer, path) {
      await createOverlayImage(path, { backingFile: layer.path, backingFormat: layer.format, virtualSizeBytes: layer.virtualSizeBytes });
      return { path, format: "qcow2" };
    },
    async restore(spec, stateFile, opts) {
      // The check runs while QEMU starts (it waits for migrate-incoming, so no guest code runs first).
      const verified = opts?.verify?.();
      verified?.catch(() => {}); // awaited below; not an unhandled rejection meanwhile
      const vm = await startQemu(spec, true).catch(async (e: unknown) => {
        await verified?.catch(() => {});
        throw e;
      });
      try {
        await verified;
        const loadMs = await vm.loadState(stateFile, opts?.timeoutMs);
        return { vm, loadMs };
      } catch (e) {
        await vm.kill().catch(() => {});
        throw e;
      }
    },
  },
};
