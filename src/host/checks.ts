/**
 * The decisions: which checks a backend needs, which are required, and what each failure tells the
 * user to do. Pure functions over gathered facts (facts.ts) and the kernel status.
 *
 * Required vs optional (a failing optional check makes the verdict "degraded", not "failed"):
 * - linux-qemu requires QEMU with the microvm machine, an accelerator (KVM when a vCPU really runs
 *   guest code, else TCG), mke2fs, the guest init, the console (virtio-serial + guest init) and the
 *   supervisor. KVM itself is optional (TCG is slow but real). The default kernel is optional
 *   because the first `run` installs it; debugfs and user-mode networking (pasta, user namespaces,
 *   /dev/net/tun) are optional because isolated workspaces work without them. /dev/vhost-vsock is
 *   reported in `host` but is not a check: linux-qemu's channel is virtio-serial.
 * - linux-kvm (Firecracker) additionally requires firecracker, usable KVM and /dev/vhost-vsock (its
 *   guest channel); the console needs vsock + guest init.
 * - apple-vf / windows-hyperv on another OS: every required check fails with "wrong host OS".
 */
import type { Arch, BackendName } from "../contract/backend.ts";
import type { Verdict } from "../contract/response.ts";
import type { HostFacts, LinuxFacts } from "./facts.ts";
import type { KernelStatus } from "../kernel/status.ts";
import type { Accel } from "./kvm.ts";

export interface HostCheck {
  /** Stable identifier (e.g. "kvm", "pasta"). */
  name: string;
  /** Human label for text output. */
  label: string;
  ok: boolean;
  /** A failing required check makes doctor fail (exit 1). */
  required: boolean;
  detail: string;
  /** What to do when it fails; "" when ok. */
  remediation: string;
}

const BACKEND_OS: Record<BackendName, { platform: NodeJS.Platform; name: string }> = {
  "linux-kvm": { platform: "linux", name: "Linux" },
  "linux-qemu": { platform: "linux", name: "Linux" },
  "apple-vf": { platform: "darwin", name: "macOS" },
  "windows-hyperv": { platform: "win32", name: "Windows" },
};

export function platformName(p: NodeJS.Platform): string {
  return p === "linux" ? "Linux" : p === "darwin" ? "macOS" : p === "win32" ? "Windows" : p;
}

/** The best usable backend: linux-kvm when firecracker is present AND KVM really runs guests. */
export function detectBackend(facts: HostFacts): BackendName {
  if (facts.platform === "darwin") return "apple-vf";
  if (facts.platform === "win32") return "windows-hyperv";
  const l = facts.linux;
  if (l && l.firecracker.available && l.kvm.usable) return "linux-kvm";
  return "linux-qemu";
}

/** The accelerator linux-qemu would use, and why. */
export function qemuAccel(l: LinuxFacts): { accel: Accel | undefined; reason: string } {
  if (l.kvm.usable && l.qemuFeatures?.accels.includes("kvm")) return { accel: "kvm", reason: l.kvm.reason };
  const why = l.kvm.usable ? "QEMU was built without KVM support" : `KVM unusable: ${l.kvm.reason}`;
  if (!l.qemuFeatures || l.qemuFeatures.accels.includes("tcg")) return { accel: "tcg", reason: `${why}; using TCG software emulation` };
  return { accel: undefined, reason: `${why}, and QEMU has no TCG either` };
}

const FIX = {
  qemu: (arch: Arch) =>
    `Install QEMU (\`apt install ${arch === "arm64" ? "qemu-system-arm" : "qemu-system-x86"}\` on Debian/Ubuntu), or set MICROAGENT_QEMU to its path.`,
  firecracker:
    "Install Firecracker from its releases and put it on PATH, place it at <prefix>/libexec/firecracker, or set MICROAGENT_FIRECRACKER=/path/to/firecracker.",
  vsock: "Load the vhost_vsock module (`sudo modprobe vhost_vsock`) and make /dev/vhost-vsock accessible to your user.",
  tun: "Load the tun module (`sudo modprobe tun`) and make /dev/net/tun readable and writable by your user; or use --network isolated.",
  pasta: "Install passt (`apt install passt` on Debian/Ubuntu, `dnf install passt` on Fedora); or use --network isolated.",
  mke2fs: "Install e2fsprogs (`apt install e2fsprogs`), or pass --mke2fs PATH to `microagent rootfs build`.",
  debugfs: "Install e2fsprogs (`apt install e2fsprogs`); without debugfs, unprivileged rootfs builds cannot keep file ownership.",
  guestInit: "Build the guest init: run scripts/setup (it runs `make -C guest`), or set MICROAGENT_GUEST_INIT to a built microagent-init.",
  supervisorDefault: "Build microagent (`npm run build`, or scripts/setup) so dist/supervisor/main.js exists, or pass --supervisor PATH.",
  supervisorFlag: "Pass --supervisor the path of an existing supervisor, or drop the flag to use the installed one.",
  kernelMissing: "Run `microagent kernel install` (the first `microagent run` also installs the default kernel).",
  kernelError: "Reinstall the kernel with `microagent kernel install`, then check it with `microagent kernel verify`.",
};

function check(name: string, label: string, ok: boolean, required: boolean, detail: string, remediation: string): HostCheck {
  return { name, label, ok, required, detail, remediation: ok ? "" : remediation };
}

function kernelCheck(kernel: KernelStatus): HostCheck {
  const ok = kernel.status === "installed";
  const detail =
    kernel.status === "installed"
      ? `${kernel.path}${kernel.version ? ` (${kernel.version})` : ""}${kernel.sha256 ? ` sha256:${kernel.sha256}` : ""}`
      : kernel.status === "missing"
        ? `not installed (expected at ${kernel.path})`
        : (kernel.error ?? kernel.status);
  return check("kernel", "default kernel", ok, false, detail, kernel.status === "missing" ? FIX.kernelMissing : FIX.kernelError);
}

function supervisorCheck(f: HostFacts): HostCheck {
  const s = f.supervisor;
  return check("supervisor", "supervisor", s.available, true, s.detail, s.source === "flag" ? FIX.supervisorFlag : FIX.supervisorDefault);
}

function guestInitCheck(f: HostFacts): HostCheck {
  return check("guest-init", "guest init", f.guestInit.available, true, f.guestInit.detail, FIX.guestInit);
}

function networkingChecks(l: LinuxFacts): HostCheck[] {
  return [
    check("tun", "/dev/net/tun", l.tun.available, false, l.tun.detail, FIX.tun),
    check("pasta", "pasta", l.pasta.available, false, l.pasta.detail, FIX.pasta),
    check("userns", "unprivileged user namespaces", l.userns.available, false, l.userns.detail, l.userns.remediation),
  ];
}

function e2fsChecks(l: LinuxFacts): HostCheck[] {
  return [
    check("mke2fs", "mke2fs", l.mke2fs.available, true, l.mke2fs.detail, FIX.mke2fs),
    check("debugfs", "debugfs", l.debugfs.available, false, l.debugfs.detail, FIX.debugfs),
  ];
}

function linuxQemuChecks(f: HostFacts, l: LinuxFacts, kernel: KernelStatus): HostCheck[] {
  const q = l.qemu;
  const features = l.qemuFeatures;
  let vmmDetail = q.detail;
  let vmmOk = q.available;
  if (q.available && features) {
    if (features.error) vmmDetail += ` (${features.error})`;
    if (!features.microvm) {
      vmmOk = false;
      vmmDetail += "; this QEMU has no microvm machine";
    }
  }
  const accel = qemuAccel(l);
  const accelOk = q.available && accel.accel !== undefined;
  const consoleOk = q.available && features?.virtserialport === true && f.guestInit.available;
  const consoleDetail = !q.available
    ? "needs QEMU"
    : features?.virtserialport !== true
      ? "QEMU has no virtio-serial virtserialport device"
      : f.guestInit.available
        ? "interactive, over virtio-serial"
        : "the guest init is missing";
  const kvmDetail = l.kvm.usable ? l.kvm.reason : `${l.kvm.reason}; linux-qemu uses TCG software emulation (slower)`;
  return [
    check("vmm", `QEMU (${q.name})`, vmmOk, true, vmmDetail, features && !features.microvm ? "Install a QEMU with the microvm machine (QEMU 4.2 or newer, e.g. Debian's qemu-system-x86)." : FIX.qemu(f.guestArch)),
    check("accel", "accelerator", accelOk, true, accelOk ? (accel.accel === "kvm" ? "kvm" : l.kvm.usable ? `tcg (${accel.reason})` : "tcg (software emulation: KVM is unusable, see the KVM check)") : q.available ? accel.reason : "needs QEMU", q.available ? "Use a QEMU build with TCG, or a host where KVM runs guests." : FIX.qemu(f.guestArch)),
    check("kvm", "KVM", l.kvm.usable, false, kvmDetail, l.kvm.remediation),
    ...e2fsChecks(l),
    kernelCheck(kernel),
    guestInitCheck(f),
    check("console", "interactive console", consoleOk, true, consoleDetail, !q.available ? FIX.qemu(f.guestArch) : features?.virtserialport !== true ? "Install a QEMU with virtio-serial (Debian's qemu-system-x86 has it)." : FIX.guestInit),
    supervisorCheck(f),
    ...networkingChecks(l),
    egressCheck(),
  ];
}

/**
 * Egress mediation (guarded/strict) on linux-qemu runs in the supervisor's userspace stack: it needs
 * no TPROXY kernel modules, nftables rules, root or a user namespace, so the "UDP mediation (TPROXY)
 * unavailable" start failure of seed 001 cannot happen here. Reported so `doctor` answers the
 * question the seed sends users to it with.
 */
function egressCheck(): HostCheck {
  return check(
    "egress",
    "egress mediation",
    true,
    false,
    "userspace mediator in the supervisor (guarded, strict): TCP, UDP and DNS are mediated without TPROXY modules, nftables or root",
    "",
  );
}

function linuxKvmChecks(f: HostFacts, l: LinuxFacts, kernel: KernelStatus): HostCheck[] {
  const consoleOk = l.vsock.available && f.guestInit.available;
  return [
    check("vmm", "firecracker", l.firecracker.available, true, l.firecracker.detail, FIX.firecracker),
    check("kvm", "KVM", l.kvm.usable, true, l.kvm.reason, l.kvm.remediation),
    check("vsock", "/dev/vhost-vsock", l.vsock.available, true, l.vsock.detail, FIX.vsock),
    ...e2fsChecks(l),
    kernelCheck(kernel),
    guestInitCheck(f),
    check("console", "interactive console", consoleOk, true, consoleOk ? "interactive, over vsock" : !l.vsock.available ? "needs /dev/vhost-vsock" : "the guest init is missing", !l.vsock.available ? FIX.vsock : FIX.guestInit),
    supervisorCheck(f),
    ...networkingChecks(l),
  ];
}

/** The checks a backend's native OS would run; used verbatim (all failing) on the wrong OS. */
const FOREIGN_CHECKS: Record<"apple-vf" | "windows-hyperv", Array<[string, string]>> = {
  "apple-vf": [
    ["virtualization-framework", "Virtualization.framework"],
    ["supervisor", "supervisor"],
    ["kernel", "default kernel"],
    ["console", "interactive console"],
  ],
  "windows-hyperv": [
    ["hcs", "Host Compute Service"],
    ["hyperv", "Hyper-V / Windows Hypervisor Platform"],
    ["hcs-access", "HCS access for the current user"],
    ["hcn", "HCN/HNS networking"],
    ["hvsock", "Hyper-V sockets"],
    ["kernel", "default kernel"],
    ["guest-init", "guest init"],
    ["console", "HVSock console"],
  ],
};

function unavailableEverywhere(backend: BackendName, detail: string, remediation: string): HostCheck[] {
  const list: Array<[string, string]> =
    backend === "apple-vf" || backend === "windows-hyperv"
      ? FOREIGN_CHECKS[backend]
      : [
          ["vmm", backend === "linux-kvm" ? "firecracker" : "QEMU"],
          ["kvm", "KVM"],
          ["kernel", "default kernel"],
          ["console", "interactive console"],
        ];
  return list.map(([name, label]) => check(name, label, false, true, detail, remediation));
}

export function buildChecks(backend: BackendName, facts: HostFacts, kernel: KernelStatus): HostCheck[] {
  const os = BACKEND_OS[backend];
  if (facts.platform !== os.platform) {
    return unavailableEverywhere(
      backend,
      `wrong host OS: ${backend} needs ${os.name}, this host runs ${platformName(facts.platform)}`,
      `Run ${backend} on ${os.name}, or pick this host's backend (${facts.platform === "linux" ? "--backend linux-qemu" : "omit --backend"}).`,
    );
  }
  if (backend === "apple-vf" || backend === "windows-hyperv") {
    return unavailableEverywhere(backend, `${backend} is not implemented in this microagent build yet`, "Use a Linux host with the linux-qemu backend.");
  }
  const l = facts.linux;
  if (!l) throw new Error("internal: Linux facts missing on a Linux host");
  return backend === "linux-qemu" ? linuxQemuChecks(facts, l, kernel) : linuxKvmChecks(facts, l, kernel);
}

export function verdictOf(checks: readonly HostCheck[]): Verdict {
  if (checks.some((c) => c.required && !c.ok)) return "failed";
  if (checks.some((c) => !c.ok)) return "degraded";
  return "ok";
}
