/**
 * doctor(options) and hostReport(options): the library functions behind `microagent doctor` and
 * `microagent host`. Both run the same live probes (facts.ts), decide per backend (checks.ts) and
 * return the contract's Response with `host` and `kernel` filled in. What each backend can do comes
 * from the backends themselves (the registry, `capabilitiesOf`), never from a table kept here; a
 * backend the contract names but this build does not implement is reported as not implemented.
 *
 * Layer order: host sits above backend (it reports on backends); nothing in src/backend imports
 * src/host, so this import adds no cycle (`npm run lint` checks both).
 */
import { homedir } from "node:os";
import { join } from "node:path";
import { hostArch as detectHostArch, type Arch, type BackendName } from "../contract/backend.ts";
import type { Response, Verdict } from "../contract/response.ts";
import { buildChecks, detectBackend, qemuAccel, verdictOf, type HostCheck } from "./checks.ts";
import { HostErrors } from "./errors.ts";
import { gatherHostFacts, type HostFacts } from "./facts.ts";
import { kernelStatus, type KernelStatus } from "../kernel/status.ts";
import type { Accel } from "./kvm.ts";
import { isMicroagentError, type MicroagentError } from "../contract/errors.ts";
import { capabilityTable, type BackendCapabilityRow } from "../backend/capabilities.ts";
import { listBackends } from "../backend/registry.ts";
import type { Backend } from "../backend/types.ts";

export interface DoctorOptions {
  /** Backend to check; default: the best usable one on this host. */
  backend?: BackendName;
  /** Guest architecture; default: the host's. */
  arch?: Arch;
  /** Supervisor override; default `<package root>/dist/supervisor/main.js`. */
  supervisor?: string;
  /** State directory; default `~/.microagent`. */
  stateDir?: string;
  env?: NodeJS.ProcessEnv;
}

export interface ResolvedDoctorOptions {
  backend: BackendName | undefined;
  arch: Arch;
  supervisor: string | undefined;
  stateDir: string;
  env: NodeJS.ProcessEnv;
  /** @internal test seam: pretend to run on another OS. */
  platform: NodeJS.Platform;
  hostArch: Arch;
  /** @internal test seam: the implemented backends (default: the registry's). */
  backends?: readonly Backend[];
}

export function resolveDoctorOptions(o: DoctorOptions = {}): ResolvedDoctorOptions {
  const env = o.env ?? process.env;
  const hostArch = detectHostArch();
  return {
    backend: o.backend,
    arch: o.arch ?? hostArch,
    supervisor: o.supervisor,
    stateDir: o.stateDir ?? (env.MICROAGENT_STATE_DIR || join(homedir(), ".microagent")),
    env,
    platform: process.platform,
    hostArch,
  };
}

/** What `host` adds: what the backend can do, and whether this host is ready for it. */
export interface CapabilityReport {
  supported: boolean;
  /** Supported by the backend AND its prerequisites are met here. */
  ready: boolean;
  detail: string;
}

export interface HostCapabilities {
  console: CapabilityReport;
  exec: CapabilityReport;
  pauseResume: CapabilityReport;
  snapshots: CapabilityReport;
  networking: { isolated: CapabilityReport; user: CapabilityReport };
}

/** The `host` field: one field per check plus the check list. */
export interface HostSupport {
  backend: BackendName;
  /** Guest architecture checked. */
  architecture: Arch;
  hostArchitecture: Arch;
  hostOs: string;
  virtualizationSupported: boolean;
  /** QEMU accelerator linux-qemu would use (linux-qemu only). */
  accel?: Accel;
  accelReason?: string;
  binaryPath?: string;
  binaryVersion?: string;
  kvmAvailable: boolean;
  kvmReason?: string;
  /** Guest instructions per CPU-second measured by the KVM probe. */
  kvmGuestIps?: number;
  vsockAvailable: boolean;
  tunAvailable: boolean;
  userNetworkingAvailable: boolean;
  userNetworkingBinary?: string;
  userNetworkingVersion?: string;
  userNamespacesAvailable: boolean;
  mke2fsAvailable: boolean;
  mke2fsPath?: string;
  debugfsAvailable: boolean;
  debugfsPath?: string;
  supervisorPath: string;
  supervisorAvailable: boolean;
  guestInitPath: string;
  guestInitAvailable: boolean;
  consoleAvailable: boolean;
  consoleMode?: "interactive";
  isolatedNetworkReady: boolean;
  userNetworkReady: boolean;
  pauseResumeAvailable: boolean;
  snapshotAvailable: boolean;
  capabilities?: HostCapabilities;
  checks: HostCheck[];
}

export interface HostResponse extends Response {
  ok: boolean;
  verdict: Verdict;
  backend: BackendName;
  host: HostSupport;
  kernel: KernelStatus;
  /** Every backend the contract names, in its order: what the implemented ones can do (from their capability objects), the rest `implemented: false`. */
  backends: BackendCapabilityRow[];
}

/** What the backend implements in this build (independent of the host), from its capability row. */
interface BackendFeatures {
  console: boolean;
  exec: boolean;
  pauseResume: boolean;
  snapshots: boolean;
  isolated: boolean;
  user: boolean;
  note: string;
}

/** @internal exported for tests: the features `host` reports, read off the backend's capability row. */
export function featuresOf(row: BackendCapabilityRow): BackendFeatures {
  if (!row.implemented) {
    const note = `${row.backend} is not implemented in this build`;
    return { console: false, exec: false, pauseResume: false, snapshots: false, isolated: false, user: false, note };
  }
  return {
    console: row.console,
    exec: row.exec,
    pauseResume: row.pause,
    snapshots: row.snapshot,
    isolated: row.isolated,
    // User-mode networking needs a NIC attachment; the network stack behind it lives in the supervisor.
    user: row.networkAttachments.length > 0,
    note: "",
  };
}

function rowOf(table: readonly BackendCapabilityRow[], backend: BackendName): BackendCapabilityRow {
  return table.find((r) => r.backend === backend) ?? { backend, implemented: false };
}

/** @internal exported for tests. */
export function summarize(backend: BackendName, facts: HostFacts, checks: HostCheck[], row: BackendCapabilityRow): HostSupport {
  const l = facts.linux;
  const okOf = (name: string) => checks.find((c) => c.name === name)?.ok ?? false;
  const onOs = checks.every((c) => !c.detail.startsWith("wrong host OS"));
  const requiredCore = ["vmm", "accel", "kvm"].filter((n) => checks.find((c) => c.name === n)?.required);
  const virtualizationSupported = onOs && requiredCore.length > 0 && requiredCore.every(okOf);
  // `user` mode's datapath is the supervisor's userspace stack behind a -netdev stream socket: it
  // needs the VMM and nothing else (no root, no tap, no nftables, no pasta or user namespaces).
  const userReady = Boolean(l && onOs);
  const vmmOk = okOf("vmm");
  const features = featuresOf(row);
  const h: HostSupport = {
    backend,
    architecture: facts.guestArch,
    hostArchitecture: facts.hostArch,
    hostOs: facts.platform,
    virtualizationSupported,
    kvmAvailable: l?.kvm.usable ?? false,
    vsockAvailable: l?.vsock.available ?? false,
    tunAvailable: l?.tun.available ?? false,
    userNetworkingAvailable: l?.pasta.available ?? false,
    userNamespacesAvailable: l?.userns.available ?? false,
    mke2fsAvailable: l?.mke2fs.available ?? false,
    debugfsAvailable: l?.debugfs.available ?? false,
    supervisorPath: facts.supervisor.path,
    supervisorAvailable: facts.supervisor.available,
    guestInitPath: facts.guestInit.path,
    guestInitAvailable: facts.guestInit.available,
    consoleAvailable: okOf("console"),
    isolatedNetworkReady: features.isolated && vmmOk && virtualizationSupported,
    userNetworkReady: features.user && vmmOk && virtualizationSupported && userReady,
    pauseResumeAvailable: features.pauseResume && virtualizationSupported,
    snapshotAvailable: features.snapshots && virtualizationSupported,
    checks,
  };
  if (h.consoleAvailable) h.consoleMode = "interactive";
  if (l) {
    h.kvmReason = l.kvm.reason;
    if (l.kvm.guestIps !== undefined) h.kvmGuestIps = l.kvm.guestIps;
    const vmm = backend === "linux-kvm" ? l.firecracker : l.qemu;
    if (onOs && vmm.path) h.binaryPath = vmm.path;
    if (onOs && vmm.version) h.binaryVersion = vmm.version;
    if (onOs && backend === "linux-qemu") {
      const a = qemuAccel(l);
      if (a.accel) h.accel = a.accel;
      h.accelReason = a.reason;
    } else if (onOs && backend === "linux-kvm") {
      h.accel = "kvm";
    }
    if (l.pasta.path) h.userNetworkingBinary = l.pasta.path;
    if (l.pasta.version) h.userNetworkingVersion = l.pasta.version;
    if (l.mke2fs.path) h.mke2fsPath = l.mke2fs.path;
    if (l.debugfs.path) h.debugfsPath = l.debugfs.path;
  }
  return h;
}

/** @internal exported for tests. */
export function capabilities(backend: BackendName, h: HostSupport, checks: HostCheck[], row: BackendCapabilityRow): HostCapabilities {
  const f = featuresOf(row);
  const blockers = (names: string[]) =>
    checks
      .filter((c) => !c.ok && names.includes(c.name))
      .map((c) => `${c.label}: ${c.detail}`)
      .join("; ");
  const core = ["vmm", "accel", "kvm", "guest-init", "supervisor"].filter((n) => checks.find((c) => c.name === n)?.required);
  const cap = (supported: boolean, needs: string[], ready: boolean, what: string): CapabilityReport => {
    if (!supported) return { supported, ready: false, detail: f.note || `${backend} does not support ${what} yet` };
    const why = blockers(needs);
    return { supported, ready: ready && why === "", detail: ready && why === "" ? "ready" : why || "not ready" };
  };
  return {
    console: cap(f.console, [...core, "console"], h.consoleAvailable, "an interactive console"),
    exec: cap(f.exec, [...core, "console"], h.consoleAvailable, "exec"),
    pauseResume: note(cap(f.pauseResume, core, h.pauseResumeAvailable, "pause/resume"), "`pause`/`resume` and quarantine freeze the VM with it"),
    snapshots: cap(f.snapshots, core, h.snapshotAvailable, "snapshots"),
    networking: {
      isolated: cap(f.isolated, core, h.isolatedNetworkReady, "isolated networking"),
      user: cap(f.user, core, h.userNetworkReady, "user-mode networking"),
    },
  };
}

interface Probed {
  backend: BackendName;
  checks: HostCheck[];
  host: HostSupport;
  kernel: KernelStatus;
  verdict: Verdict;
  backends: BackendCapabilityRow[];
  row: BackendCapabilityRow;
}

/** A ready capability whose detail says more than "ready". */
function note(c: CapabilityReport, more: string): CapabilityReport {
  return c.ready ? { ...c, detail: more } : c;
}

async function probe(o: ResolvedDoctorOptions): Promise<Probed> {
  let facts: HostFacts;
  try {
    facts = await gatherHostFacts({ platform: o.platform, hostArch: o.hostArch, guestArch: o.arch, env: o.env, ...(o.supervisor !== undefined ? { supervisor: o.supervisor } : {}) });
  } catch (e) {
    if (isMicroagentError(e)) throw e;
    throw HostErrors.HOST_PROBE_FAILED({ message: `host probe failed: ${(e as Error).message}`, cause: e });
  }
  const backend = o.backend ?? detectBackend(facts);
  const kernel = await kernelStatus({ stateDir: o.stateDir, backend, arch: o.arch });
  const checks = buildChecks(backend, facts, kernel);
  const backends = capabilityTable(o.backends ?? listBackends());
  const row = rowOf(backends, backend);
  const host = summarize(backend, facts, checks, row);
  return { backend, checks, host, kernel, verdict: verdictOf(checks), backends, row };
}

/** Run every probe for the backend and return the health verdict; `ok` is false iff a required check fails. */
export async function doctor(options: DoctorOptions = {}): Promise<HostResponse> {
  return doctorResolved(resolveDoctorOptions(options));
}

/** @internal doctor with resolved options (tests use it to pretend another OS). */
export async function doctorResolved(o: ResolvedDoctorOptions): Promise<HostResponse> {
  const r = await probe(o);
  return { ok: r.verdict !== "failed", verdict: r.verdict, backend: r.backend, host: r.host, kernel: r.kernel, backends: r.backends };
}

/**
 * The same probes as a capability report: what the backend supports and whether this host is ready
 * for each. `ok` is true whenever the probes ran (the verdict still says how healthy the host is);
 * only a probe that broke throws.
 */
export async function hostReport(options: DoctorOptions = {}): Promise<HostResponse> {
  return hostReportResolved(resolveDoctorOptions(options));
}

/** @internal */
export async function hostReportResolved(o: ResolvedDoctorOptions): Promise<HostResponse> {
  const r = await probe(o);
  r.host.capabilities = capabilities(r.backend, r.host, r.checks, r.row);
  return { ok: true, verdict: r.verdict, backend: r.backend, host: r.host, kernel: r.kernel, backends: r.backends };
}

/** The error doctor's failure carries (AX mode prints it): the failed required checks in `details`. */
export function doctorFailure(res: HostResponse): MicroagentError {
  const failed = res.host.checks.filter((c) => c.required && !c.ok);
  const first = failed[0];
  return HostErrors.HOST_CHECKS_FAILED({
    message: `${res.backend}: ${failed.length} required check${failed.length === 1 ? "" : "s"} failed${first ? ` (${first.label}: ${first.detail}${failed.length > 1 ? "; ..." : ""})` : ""}`,
    remediation: first?.remediation || undefined,
    details: { backend: res.backend, verdict: res.verdict, failed },
  });
}
