/**
 * The Backend interface, split into capabilities. A backend always implements `lifecycle`
 * (launch a VM from a kernel + initramfs + disk, stop it, kill it); the guest channel (which carries
 * exec and the console) and pause/snapshot are separate capabilities, absent when unsupported, so
 * `host` and the CLI can say "unsupported" instead of failing half-way.
 */
import type { Duplex, Readable } from "node:stream";
import type { BackendName } from "../contract/backend.ts";

export type Accel = "kvm" | "tcg";

/** Everything needed to boot one VM. Paths are absolute; socket paths must stay under 108 bytes. */
export interface VmLaunchSpec {
  /** Workspace name, used in process titles and error messages. */
  workspace: string;
  kernelPath: string;
  initramfsPath: string;
  disk: { path: string; format: "qcow2" | "raw" };
  memoryMib: number;
  cpus: number;
  accel: Accel;
  /**
   * Where the guest's serial console ends up (what `microagent logs` shows). The VMM does not write it:
   * it hands the bytes to `RunningVm.serialOutput`, and the supervisor writes this file, size-capped.
   */
  serialLogPath: string;
  /** Unix socket the VMM listens on for the guest channel (virtio-serial port `microagent`). */
  channelSocketPath: string;
  /** Unix socket of the VMM's control interface (QMP under QEMU). */
  controlSocketPath: string;
  /** Extra kernel command-line words (after the backend's own). */
  kernelArgs?: readonly string[];
}

/** How the VMM process ended. */
export interface VmExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** Something the VMM reported about the VM while it runs. */
export type VmEvent =
  /** A disk write or read failed and the VMM paused the VM (QEMU's `werror=enospc` default on ENOSPC). */
  | { type: "io-error"; device: string; operation: string; nospace: boolean; reason: string }
  /** The vCPUs run again (after `resume`, or a `cont` from elsewhere). */
  | { type: "resumed" };

/** A launched VM. */
export interface RunningVm {
  readonly pid: number;
  /** Resolves once when the VMM process has exited (never rejects). */
  readonly exited: Promise<VmExit>;
  /** Set once the VMM has exited. */
  exitStatus(): VmExit | undefined;
  /** The last lines the VMM printed on stderr (bounded), for death diagnostics. */
  stderrTail(): string;
  /** Ask the guest to power off (ACPI power button); resolves when the request is delivered. */
  requestPowerdown(): Promise<void>;
  /** Stop the guest's vCPUs (memory and disk stay); optional. */
  freeze?(): Promise<void>;
  /**
   * The guest's serial console bytes. The caller must keep reading it: a VMM whose console pipe is
   * full stalls the guest.
   */
  readonly serialOutput?: Readable;
  /** Subscribe to VMM events (I/O errors that paused the VM, resumes); returns an unsubscribe function. */
  onEvent?(listener: (e: VmEvent) => void): () => void;
  /** The VMM's view of the run state: `{status: "running" | "paused" | "io-error" | ..., running}`. */
  runState?(): Promise<{ status: string; running: boolean }>;
  /** Resume vCPUs paused by an I/O error or `freeze` (QMP `cont`). */
  resume?(): Promise<void>;
  /** SIGTERM the VMM's process group, then SIGKILL after `graceMs`; resolves with the exit. */
  terminate(opts?: { graceMs?: number }): Promise<VmExit>;
  /** SIGKILL the VMM's process group at once. */
  kill(): Promise<VmExit>;
}

export interface LifecycleCapability {
  launch(spec: VmLaunchSpec): Promise<RunningVm>;
}

/** The guest channel: one byte stream to microagent-init that carries exec, console and result. */
export interface ChannelCapability {
  /** Connect to the guest channel of a launched VM (the guest may not have opened its end yet). */
  openChannel(vm: RunningVm, spec: VmLaunchSpec): Promise<Duplex>;
}

export interface BackendCapabilities {
  lifecycle: true;
  channel: boolean;
  console: boolean;
  exec: boolean;
  pause: boolean;
  snapshot: boolean;
}

export interface Backend {
  readonly name: BackendName;
  readonly capabilities: BackendCapabilities;
  readonly lifecycle: LifecycleCapability;
  readonly channel?: ChannelCapability;
}
