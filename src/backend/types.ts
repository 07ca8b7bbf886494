/**
 * The Backend interface, split into capability interfaces. Every backend implements `lifecycle`
 * (launch a VM from a kernel + initramfs + disk; the RunningVm it returns terminates, kills and
 * reports its exit). Everything else is an optional object on the backend: present when the backend
 * implements it, absent when not. Nothing keeps a flag table next to them: `capabilitiesOf()`
 * (capabilities.ts) derives the summary that `host`, `doctor` and the CLI report from presence alone.
 *
 * Operations on a launched VM take its `RunningVm` (and, where the VMM needs them, the launch spec's
 * socket paths) as arguments, the way `channel.openChannel(vm, spec)` always did.
 */
import type { Duplex, Readable } from "node:stream";
import type { BackendName, DiskFormat } from "../contract/backend.ts";

export type { DiskFormat } from "../contract/backend.ts";

export type Accel = "kvm" | "tcg";

/**
 * How the guest's NIC reaches the host, when it has one. `stream`: virtio-net frames over a unix
 * stream socket the supervisor listens on first (QEMU's `-netdev stream`, 4-byte length per frame).
 */
export type NetworkAttachmentKind = "stream";

/** A NIC attachment in a launch spec; absent = no NIC at all (isolated). */
export interface NetworkAttachment {
  kind: NetworkAttachmentKind;
  /** Unix socket the host network stack listens on; the VMM connects to it. Under 108 bytes. */
  socketPath: string;
  /** Guest MAC address; default: a stable locally administered one derived from the workspace name. */
  mac?: string;
}

/** Everything needed to boot one VM. Paths are absolute; socket paths must stay under 108 bytes. */
export interface VmLaunchSpec {
  /** Workspace name, used in process titles and error messages. */
  workspace: string;
  kernelPath: string;
  initramfsPath: string;
  /** The disk as the backend's `disk.createDisk` made it (path and format from the manifest). */
  disk: { path: string; format: DiskFormat };
  memoryMib: number;
  cpus: number;
  accel: Accel;
  /**
   * Where the guest's serial console ends up (what `microagent logs` shows). The VMM does not write it:
   * it hands the bytes to `RunningVm.serialOutput`, and the supervisor writes this file, size-capped.
   */
  serialLogPath: string;
  /** Unix socket the VMM listens on for the guest channel (its transport is the backend's `channel.transport`). */
  channelSocketPath: string;
  /** Unix socket of the VMM's control interface (QMP under QEMU). */
  controlSocketPath: string;
  /** Extra kernel command-line words (after the backend's own). */
  kernelArgs?: readonly string[];
  /** The guest's NIC; absent = isolated (no NIC). Only kinds in the backend's `network.attachments`. */
  network?: NetworkAttachment;
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

/** A launched VM: the handle `lifecycle.launch` returns, and the argument of every per-VM capability. */
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

/** Launch; the returned RunningVm carries terminate, kill and the exit. Every backend has it. */
export interface LifecycleCapability {
  launch(spec: VmLaunchSpec): Promise<RunningVm>;
}

/**
 * The byte stream from the host to the guest's channel: `virtio-serial` (a virtio-serial port
 * bridged to a unix socket; QEMU) or `vsock` (AF_VSOCK, bridged to a unix socket with a
 * `CONNECT <port>` handshake; Firecracker). The guest init must open the matching device.
 */
export type ChannelTransport = "virtio-serial" | "vsock";

/** The guest channel: one byte stream to microagent-init that carries exec, console and result. */
export interface ChannelCapability {
  readonly transport: ChannelTransport;
  /** Connect to the guest channel of a launched VM (the guest may not have opened its end yet). */
  openChannel(vm: RunningVm, spec: VmLaunchSpec): Promise<Duplex>;
}

/** What a workspace disk is made from: the shared base rootfs, and where the disk goes. */
export interface DiskRequest {
  /** The base root filesystem (read-only, shared between workspaces). */
  base: string;
  baseFormat: DiskFormat;
  /** Where the workspace's own disk is written (the backend may not move it elsewhere). */
  path: string;
  /** Virtual size in MiB (the caller already raised it to the base's size). */
  sizeMib: number;
}

/** The disk the backend made; the manifest records `format` as the backend chose it. */
export interface CreatedDisk {
  path: string;
  format: DiskFormat;
}

/** Workspace disks in the formats this backend boots from. */
export interface DiskCapability {
  /** Formats the backend can boot from; `createDisk` returns one of them. */
  readonly formats: readonly DiskFormat[];
  createDisk(request: DiskRequest): Promise<CreatedDisk>;
}

/** A NIC for the guest, attached as one of `attachments` (launch spec `network`). */
export interface NetworkCapability {
  readonly attachments: readonly NetworkAttachmentKind[];
}

/** Stop and restart a running VM's vCPUs; memory, devices and disk stay as they are. */
export interface PauseCapability {
  pause(vm: RunningVm, spec: VmLaunchSpec): Promise<void>;
  resume(vm: RunningVm, spec: VmLaunchSpec): Promise<void>;
}

/** The disk layer a freeze left read-only: the snapshot's disk. */
export interface FrozenDisk {
  path: string;
  format: DiskFormat;
  virtualSizeBytes: number;
}

/**
 * Memory + device state of a paused VM to a file and back, and the disk frozen at the same instant.
 * The caller pauses first (PauseCapability) and continues after; these never change the run state.
 */
export interface SnapshotCapability {
  /**
   * Switch the paused VM's root disk onto `newOverlayPath` (created here, 0600, backed by the current
   * disk), so the current disk file keeps the disk as of the pause and is never written again.
   * The current file must not be moved or renamed while the VM lives.
   */
  freezeDisk(vm: RunningVm, spec: VmLaunchSpec, newOverlayPath: string): Promise<FrozenDisk>;
  /** Write the paused VM's memory and device state to `file` (0600, complete or absent). */
  saveState(vm: RunningVm, spec: VmLaunchSpec, file: string, opts?: { timeoutMs?: number }): Promise<{ bytes: number; ms: number }>;
  /** The files of a disk's backing chain, top first: what must stay on disk for it to open. */
  layersOf(path: string): Promise<string[]>;
  /** A disk for a restore or fork: a new overlay at `path` over a frozen layer (no copy). */
  overlayOn(layer: FrozenDisk, path: string): Promise<{ path: string; format: DiskFormat }>;
  /**
   * Launch the machine `spec` describes (it must be the one the state was saved from: memory, CPUs,
   * devices) and load `stateFile` into it instead of booting; resolves with the VM running.
   */
  /**
   * `verify` (when given) runs while the VMM starts and before any state is loaded: a throw kills the
   * VMM and fails the restore (how a warm entry's hashes are checked without adding to the start).
   */
  restore(spec: VmLaunchSpec, stateFile: string, opts?: { timeoutMs?: number; verify?: () => Promise<void> }): Promise<{ vm: RunningVm; loadMs: number }>;
}

export interface Backend {
  readonly name: BackendName;
  readonly lifecycle: LifecycleCapability;
  readonly channel?: ChannelCapability;
  readonly disk?: DiskCapability;
  readonly network?: NetworkCapability;
  readonly pause?: PauseCapability;
  readonly snapshot?: SnapshotCapability;
}
