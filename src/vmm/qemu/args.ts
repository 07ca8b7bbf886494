/**
 * The QEMU command line, as a pure function of a VM spec. Nothing here touches the host: callers
 * resolve the QEMU binary (`findQemu`), the TSC frequency (`tscKhz`) and the socket paths first, so the
 * argv is unit-testable byte for byte.
 *
 * The machine is QEMU's `microvm` with ACPI on: the guest kernel finds the virtio-mmio devices through
 * ACPI tables (Debian's cloud kernel has no VIRTIO_MMIO_CMDLINE_DEVICES), so no `virtio_mmio.device=`
 * parameters are needed. No NIC unless asked for: a VM is isolated by default.
 */
import { MAX_VCPUS } from "../../contract/backend.ts";
import { VmmErrors } from "../errors.ts";

/** Linux `sockaddr_un.sun_path` is 108 bytes including the terminating NUL. */
export const UNIX_SOCKET_PATH_MAX_BYTES = 107;

/** The virtio-serial port name the guest init opens (`/dev/virtio-ports/<name>`). */
export const DEFAULT_CHANNEL_NAME = "microagent";

export type Accel = "kvm" | "tcg";

export interface QemuDisk {
  /** Host path of the disk image. */
  path: string;
  format: "raw" | "qcow2";
  readOnly?: boolean;
  /**
   * Host caching. Default "writeback" (guest flushes reach the disk: a qcow2 overlay survives a killed
   * QEMU). "unsafe" ignores flushes: faster, only for throwaway disks.
   */
  cache?: "writeback" | "unsafe" | "none" | "directsync";
  /** Node/device id; defaults to `disk<N>` (the root disk is `disk0`, so it is /dev/vda in the guest). */
  id?: string;
}

/** Where the guest's serial console (kernel log, init log) goes. */
export type QemuSerial =
  | { kind: "file"; path: string }
  | { kind: "socket"; path: string }
  | { kind: "stdio" }
  | { kind: "none" };

/** Reserved for user-mode networking: virtio-net frames over a unix stream socket (`-netdev stream`). */
export interface QemuNetwork {
  kind: "stream";
  /** Unix socket the host network stack listens on (QEMU connects to it). */
  socketPath: string;
  /** Guest MAC address, e.g. "52:54:00:12:34:56". */
  mac?: string;
}

export interface QemuSpec {
  accel: Accel;
  /**
   * TCG only: the translation cache size in MiB (`-accel tcg,tb-size=N`). QEMU's default lets it grow to
   * 1 GiB per VM as the guest runs more code; a cap bounds host memory per workspace.
   */
  tcgCacheMib?: number;
  /** `-cpu` model; default `host` under KVM and `max` under TCG. */
  cpu?: string;
  memoryMib: number;
  cpus: number;
  kernelPath: string;
  initramfsPath: string;
  /** Extra kernel command-line words appended after microagent's own. */
  kernelArgs?: readonly string[];
  /** Kernel log level on the console (0-8); default 4 (warnings and worse). */
  kernelLogLevel?: number;
  /**
   * TSC frequency in kHz, passed as `tsc_early_khz=`. Under TCG the kernel's PIT calibration
   * sometimes never finishes ("tsc: Unable to calibrate against PIT"); giving the frequency skips it.
   * Callers get it from `tscKhz()`; ignored under KVM.
   */
  tscKhz?: number;
  /** The root disk: the first virtio-blk device, /dev/vda in the guest. */
  rootDisk?: QemuDisk;
  /** More disks after the root disk (/dev/vdb, /dev/vdc, ...). */
  extraDisks?: readonly QemuDisk[];
  /** The host<->guest channel: a unix socket QEMU listens on, bridged to a virtio-serial port. */
  channel?: { socketPath: string; name?: string };
  serial: QemuSerial;
  /** QMP control socket (QEMU listens). */
  qmpSocketPath?: string;
  network?: QemuNetwork;
  /** A virtio-rng device so the guest has entropy early (TLS in the guest needs it). Default true. */
  rng?: boolean;
  /**
   * Start to receive a saved VM state instead of booting: `-incoming defer` (QEMU builds the machine, then
   * waits, vCPUs stopped, for QMP `migrate-incoming`; see `restoreVmState` in snapshot.ts). Every other
   * setting must match the VM the state was saved from.
   */
  incoming?: "defer";
  /** Appended verbatim, last. */
  extraArgs?: readonly string[];
}

/** The argv (without the binary) that boots `spec`. Throws INVALID_VM_SPEC / SOCKET_PATH_TOO_LONG. */
export function buildQemuArgs(spec: QemuSpec): string[] {
  validate(spec);
  const args: string[] = [];
  // microvm: no PCI, no firmware tables beyond ACPI; auto-kernel-cmdline off because ACPI already
  // describes the virtio-mmio devices and the kernel could not parse the cmdline form anyway.
  args.push("-M", "microvm,acpi=on,isa-serial=on,auto-kernel-cmdline=off");
  args.push("-accel", spec.accel === "tcg" && spec.tcgCacheMib !== undefined ? `tcg,tb-size=${spec.tcgCacheMib}` : spec.accel);
  args.push("-cpu", spec.cpu ?? (spec.accel === "kvm" ? "host" : "max"));
  args.push("-m", `${spec.memoryMib}M`);
  args.push("-smp", String(spec.cpus));
  args.push("-nodefaults", "-no-user-config", "-nographic", "-no-reboot");
  args.push("-kernel", spec.kernelPath, "-initrd", spec.initramfsPath, "-append", kernelCmdline(spec));

  const disks = [...(spec.rootDisk ? [spec.rootDisk] : []), ...(spec.extraDisks ?? [])];
  disks.forEach((disk, i) => {
    const id = disk.id ?? `disk${i}`;
    const drive = [`id=${id}`, `file=${optValue(disk.path)}`, `format=${disk.format}`, "if=none", `cache=${disk.cache ?? "writeback"}`, "discard=unmap"];
    if (disk.readOnly) drive.push("read-only=on");
    args.push("-drive", drive.join(","));
    args.push("-device", `virtio-blk-device,drive=${id}`);
  });

  if (spec.channel) {
    const name = spec.channel.name ?? DEFAULT_CHANNEL_NAME;
    args.push("-chardev", `socket,id=channel0,path=${optValue(spec.channel.socketPath)},server=on,wait=off`);
    args.push("-device", "virtio-serial-device,id=vser0,max_ports=2");
    args.push("-device", `virtserialport,bus=vser0.0,chardev=channel0,name=${name}`);
  }

  switch (spec.serial.kind) {
    case "file":
      args.push("-chardev", `file,id=serial0,path=${optValue(spec.serial.path)}`);
      args.push("-serial", "chardev:serial0");
      break;
    case "socket":
      args.push("-chardev", `socket,id=serial0,path=${optValue(spec.serial.path)},server=on,wait=off`);
      args.push("-serial", "chardev:serial0");
      break;
    case "stdio":
      args.push("-serial", "stdio");
      break;
    case "none":
      args.push("-serial", "none");
      break;
  }

  if (spec.qmpSocketPath) {
    args.push("-chardev", `socket,id=qmp0,path=${optValue(spec.qmpSocketPath)},server=on,wait=off`);
    args.push("-mon", "chardev=qmp0,mode=control");
  }

  if (spec.network) {
    args.push("-netdev", `stream,id=net0,server=off,addr.type=unix,addr.path=${optValue(spec.network.socketPath)}`);
    args.push("-device", `virtio-net-device,netdev=net0${spec.network.mac ? `,mac=${spec.network.mac}` : ""}`);
  }

  if (spec.rng ?? true) {
    args.push("-object", "rng-random,id=rng0,filename=/dev/urandom");
    args.push("-device", "virtio-rng-device,rng=rng0");
  }

  if (spec.incoming === "defer") args.push("-incoming", "defer");

  args.push(...(spec.extraArgs ?? []));
  return args;
}

/** The kernel command line microagent boots with (exported for tests and the bench). */
export function kernelCmdline(spec: Pick<QemuSpec, "accel" | "tscKhz" | "kernelArgs" | "kernelLogLevel">): string {
  const words = [
    "console=ttyS0",
    `loglevel=${spec.kernelLogLevel ?? 4}`,
    // A guest panic reboots at once, and -no-reboot turns that reboot into QEMU exiting: a dead
    // guest ends the VM instead of hanging it.
    "panic=-1",
    // Reboot by triple fault: the microvm machine has no keyboard controller or reset register to use.
    "reboot=t",
    // No PS/2 controller on microvm: skip probing for one.
    "i8042.noaux",
    "i8042.nomux",
    "i8042.nopnp",
    "i8042.dumbkbd",
    "random.trust_cpu=on",
    // No BIOS disk services to probe on microvm.
    "edd=off",
  ];
  if (spec.accel === "tcg" && spec.tscKhz !== undefined) words.push(`tsc_early_khz=${spec.tscKhz}`);
  words.push(...(spec.kernelArgs ?? []));
  return words.join(" ");
}

/** QEMU option values are comma separated; a literal comma is written twice. */
function optValue(value: string): string {
  return value.replaceAll(",", ",,");
}

function validate(spec: QemuSpec): void {
  const bad = (message: string) => VmmErrors.INVALID_VM_SPEC({ message });
  if (!Number.isInteger(spec.memoryMib) || spec.memoryMib < 64) throw bad(`memory must be a whole number of MiB, at least 64 (got ${spec.memoryMib})`);
  if (!Number.isInteger(spec.cpus) || spec.cpus < 1 || spec.cpus > MAX_VCPUS) throw bad(`cpus must be between 1 and ${MAX_VCPUS} (got ${spec.cpus})`);
  if (spec.tscKhz !== undefined && (!Number.isInteger(spec.tscKhz) || spec.tscKhz <= 0)) throw bad(`tscKhz must be a positive integer (got ${spec.tscKhz})`);
  if (spec.kernelLogLevel !== undefined && (!Number.isInteger(spec.kernelLogLevel) || spec.kernelLogLevel < 0 || spec.kernelLogLevel > 8)) {
    throw bad(`kernelLogLevel must be 0-8 (got ${spec.kernelLogLevel})`);
  }
  if (!spec.kernelPath) throw bad("kernelPath is required");
  if (!spec.initramfsPath) throw bad("initramfsPath is required");
  for (const word of spec.kernelArgs ?? []) {
    if (/\s/.test(word) || word === "") throw bad(`kernel argument ${JSON.stringify(word)} must be one non-empty word without spaces`);
  }
  if (spec.channel?.name !== undefined && !/^[A-Za-z0-9._-]+$/.test(spec.channel.name)) throw bad(`channel name ${JSON.stringify(spec.channel.name)} may only use letters, digits, '.', '_' and '-'`);
  if (spec.network?.mac !== undefined && !/^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$/.test(spec.network.mac)) throw bad(`invalid MAC address ${JSON.stringify(spec.network.mac)}`);
  const ids = new Set<string>();
  for (const d of [...(spec.rootDisk ? [spec.rootDisk] : []), ...(spec.extraDisks ?? [])]) {
    if (!d.path) throw bad("every disk needs a path");
    if (d.id !== undefined) {
      if (!/^[A-Za-z][A-Za-z0-9_-]*$/.test(d.id)) throw bad(`disk id ${JSON.stringify(d.id)} must start with a letter and use letters, digits, '_' or '-'`);
      if (ids.has(d.id)) throw bad(`disk id ${d.id} is used twice`);
      ids.add(d.id);
    }
  }
  const sockets: Array<[string, string | undefined]> = [
    ["channel socket", spec.channel?.socketPath],
    ["QMP socket", spec.qmpSocketPath],
    ["serial socket", spec.serial.kind === "socket" ? spec.serial.path : undefined],
    ["network socket", spec.network?.socketPath],
  ];
  for (const [what, path] of sockets) if (path !== undefined) assertSocketPath(path, what);
}

/** Throw SOCKET_PATH_TOO_LONG when `path` cannot be bound as a unix socket. */
export function assertSocketPath(path: string, what = "unix socket"): void {
  const bytes = Buffer.byteLength(path);
  if (bytes === 0) throw VmmErrors.INVALID_VM_SPEC({ message: `${what} path is empty` });
  if (bytes > UNIX_SOCKET_PATH_MAX_BYTES) {
    throw VmmErrors.SOCKET_PATH_TOO_LONG({
      message: `${what} path is ${bytes} bytes, over the ${UNIX_SOCKET_PATH_MAX_BYTES}-byte unix socket limit: ${path}`,
      details: { path, bytes, limit: UNIX_SOCKET_PATH_MAX_BYTES },
    });
  }
}
