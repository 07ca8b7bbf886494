/**
 * "KVM available" means a vCPU ran guest code of the kind a stock kernel needs, fast enough to
 * boot it. A /dev/kvm that opens is not enough: on a paravirtual KVM (the kvm_pvm module, nested
 * virtualization without VMX/SVM) KVM_CREATE_VM and KVM_RUN succeed, real-mode and long-mode code
 * even produce the right exits, but ordinary guest instructions are emulated at ~1.5 million per
 * second (hardware KVM: ~1e9), so a stock kernel boot appears to hang. The native helper
 * native/build/kvm-probe runs real-mode and long-mode snippets and measures guest instructions per
 * CPU-second; `decideKvm` turns what it saw into a verdict with the reason.
 *
 * Nothing is cached across runs: the answer depends on modules, permissions and the device, all of
 * which change without microagent noticing, and the whole probe costs well under a second.
 */
import { constants as osConstants } from "node:os";
import { existsSync, statSync } from "node:fs";
import { join } from "node:path";
import { hostArch, type Arch } from "../contract/backend.ts";
import { runTool, type ToolRun } from "./exec.ts";
import { isExecutableFile, packageRoot } from "../util/exec-path.ts";

export const KVM_DEVICE = "/dev/kvm";
/**
 * Below this many guest instructions per CPU-second KVM is slower than it is worth: hardware KVM
 * runs the probe's loop at ~1e9/s, QEMU's TCG at a few 1e8/s, an emulating KVM at ~1e6/s.
 */
export const MIN_GUEST_IPS = 100_000_000;
/** The helper reports in ~0.3 s; this bound only matters when KVM_RUN never returns. */
export const KVM_PROBE_TIMEOUT_MS = 3000;

export type Accel = "kvm" | "tcg";

/** One line of kvm-probe output. */
export interface KvmProbeStage {
  stage: string;
  ok: boolean;
  errno?: number;
  exit?: number;
  detail?: string;
  ips?: number;
  cpuUs?: number;
  finished?: boolean;
}

/** Everything the KVM decision looks at, gathered by `gatherKvmFacts` (or recorded in a test). */
export interface KvmFacts {
  devicePath: string;
  devicePresent: boolean;
  /** The path exists but is not a character device. */
  deviceNotChar?: boolean;
  hostArch: Arch;
  guestArch: Arch;
  /** Path of the native helper, undefined when it is not built. */
  probePath?: string;
  /** The helper's run (absent when it was not run). */
  probeRun?: Pick<ToolRun, "code" | "signal" | "stdout" | "stderr" | "timedOut" | "spawnErrno">;
  /** Loaded KVM flavour modules seen in /sys/module (kvm_intel, kvm_amd, kvm_pvm). */
  modules: string[];
}

export type KvmVerdictCode =
  | "ok"
  | "arch_mismatch"
  | "absent"
  | "not_char_device"
  | "no_access"
  | "probe_missing"
  | "probe_crashed"
  | "api"
  | "create_failed"
  | "real_mode"
  | "long_mode"
  | "hang"
  | "slow";

export interface KvmProbeResult {
  usable: boolean;
  /** One sentence naming what was observed (and, when unusable, why). */
  reason: string;
  code: KvmVerdictCode;
  /** What to do about it (empty when usable). */
  remediation: string;
  devicePath: string;
  devicePresent: boolean;
  /** Guest instructions per CPU-second measured in long mode, when measured. */
  guestIps?: number;
  /** Paravirtual KVM module detected (kvm_pvm), a likely cause of slowness. */
  paravirtual: boolean;
  stages: KvmProbeStage[];
}

export interface AccelChoice {
  accel: Accel;
  reason: string;
  kvm: KvmProbeResult;
}

/** Parse kvm-probe's `key=value` lines; unknown lines are ignored. */
export function parseKvmProbeOutput(stdout: string): KvmProbeStage[] {
  const out: KvmProbeStage[] = [];
  for (const line of stdout.split("\n")) {
    const fields = new Map<string, string>();
    for (const word of line.trim().split(/\s+/)) {
      const eq = word.indexOf("=");
      if (eq > 0) fields.set(word.slice(0, eq), word.slice(eq + 1));
    }
    const stage = fields.get("stage");
    if (stage === undefined) continue;
    const num = (k: string) => {
      const v = fields.get(k);
      if (v === undefined || !/^[0-9]+$/.test(v)) return undefined;
      return Number(v);
    };
    const s: KvmProbeStage = { stage, ok: fields.get("ok") === "1" };
    const errno = num("errno");
    if (errno !== undefined) s.errno = errno;
    const exit = num("exit");
    if (exit !== undefined) s.exit = exit;
    const detail = fields.get("detail");
    if (detail !== undefined) s.detail = detail.replace(/_/g, " ");
    const ips = num("ips");
    if (ips !== undefined) s.ips = ips;
    const cpuUs = num("cpu_us");
    if (cpuUs !== undefined) s.cpuUs = cpuUs;
    const finished = fields.get("finished");
    if (finished !== undefined) s.finished = finished === "1";
    out.push(s);
  }
  return out;
}

/** errno number -> "EACCES (permission denied)" using the running platform's table. */
export function errnoName(n: number): string {
  for (const [name, value] of Object.entries(osConstants.errno)) if (value === n) return name;
  return `errno ${n}`;
}

const KVM_FIX_NO_VIRT =
  "Move to a host with hardware virtualization (bare metal, or a VM with nested VMX/SVM enabled); linux-qemu keeps working with TCG software emulation meanwhile.";

/** The decision: pure over the gathered facts, so every branch is unit-tested on recorded inputs. */
export function decideKvm(f: KvmFacts): KvmProbeResult {
  const stages = f.probeRun ? parseKvmProbeOutput(f.probeRun.stdout) : [];
  const paravirtual = f.modules.includes("kvm_pvm");
  const base = { devicePath: f.devicePath, devicePresent: f.devicePresent, paravirtual, stages };
  const no = (code: KvmVerdictCode, reason: string, remediation: string, extra: Partial<KvmProbeResult> = {}): KvmProbeResult => ({
    ...base,
    usable: false,
    code,
    reason,
    remediation,
    ...extra,
  });
  if (f.guestArch !== f.hostArch) {
    return no("arch_mismatch", `KVM runs only ${f.hostArch} guests on this ${f.hostArch} host, not ${f.guestArch}`, `${f.guestArch} guests run under TCG with linux-qemu; for KVM speed, run them on an ${f.guestArch} host.`);
  }
  if (!f.devicePresent) {
    return no(
      "absent",
      `${f.devicePath} does not exist`,
      "Load the KVM modules (`sudo modprobe kvm` plus kvm_intel or kvm_amd) on a host with hardware virtualization; in a sandboxed shell, run microagent directly on the host.",
    );
  }
  if (f.deviceNotChar) return no("not_char_device", `${f.devicePath} is not a character device`, KVM_FIX_NO_VIRT);
  if (!f.probePath || !f.probeRun) {
    return no(
      "probe_missing",
      "the KVM probe helper (native/build/kvm-probe) is not built, so KVM could not be verified to run guest code",
      "Build it with `make -C native` (scripts/setup does this), or set MICROAGENT_KVM_PROBE to a built kvm-probe.",
    );
  }
  const run = f.probeRun;
  if (run.spawnErrno) {
    return no("probe_missing", `the KVM probe helper ${f.probePath} could not start (${run.spawnErrno})`, "Rebuild it with `make -C native`.");
  }
  const get = (name: string) => stages.find((s) => s.stage === name);
  const open = get("open");
  if (open && !open.ok) {
    const e = open.errno !== undefined ? errnoName(open.errno) : "unknown error";
    if (open.errno === osConstants.errno.EACCES || open.errno === osConstants.errno.EPERM) {
      return no("no_access", `${f.devicePath} exists but this user cannot open it (${e})`, "Add your user to the kvm group (`sudo usermod -aG kvm $USER`) and log in again.");
    }
    return no("no_access", `${f.devicePath} could not be opened (${e})`, KVM_FIX_NO_VIRT);
  }
  const api = get("api");
  if (api && !api.ok) return no("api", `${f.devicePath} answered with an unexpected KVM API (${api.detail ?? "unknown"})`, KVM_FIX_NO_VIRT);
  const timeout = get("timeout");
  if (run.timedOut || timeout) {
    const where = stages.some((s) => s.stage === "real") ? (stages.some((s) => s.stage === "long") ? "the speed test" : "long mode") : "real mode";
    return no("hang", `a KVM vCPU never returned from guest code in ${where} (KVM_RUN hung)`, KVM_FIX_NO_VIRT);
  }
  for (const [name, code] of [
    ["real", "real_mode"],
    ["long", "long_mode"],
  ] as const) {
    const s = get(name);
    if (!s) continue;
    if (!s.ok) {
      const what = name === "real" ? "16-bit real-mode" : "64-bit long-mode";
      const cause = `${s.detail ?? "failed"}${s.errno !== undefined ? ` (${errnoName(s.errno)})` : ""}`;
      const isCreate = /KVM CREATE|USER MEMORY|mmap/i.test(s.detail ?? "");
      return no(
        isCreate ? "create_failed" : code,
        isCreate ? `KVM could not create a VM: ${cause}` : `KVM could not run ${what} guest code: ${cause}`,
        KVM_FIX_NO_VIRT,
      );
    }
  }
  const speed = get("speed");
  if (!get("real") || !get("long") || !speed) {
    const tail = (run.stderr || run.stdout).trim().split("\n").slice(-2).join(" | ");
    return no("probe_crashed", `the KVM probe ended early (exit ${run.code ?? run.signal ?? "?"})${tail ? `: ${tail}` : ""}`, "Rebuild it with `make -C native`, then rerun doctor.");
  }
  if (!speed.ok) return no("long_mode", `KVM could not run the speed test: ${speed.detail ?? "failed"}`, KVM_FIX_NO_VIRT);
  const ips = speed.ips ?? 0;
  if (ips < MIN_GUEST_IPS) {
    const pv = paravirtual ? "; the paravirtual kvm_pvm module runs only PVM-enabled guest kernels at speed" : "";
    return no(
      "slow",
      `KVM runs guest code at only ${formatIps(ips)} instructions/s (hardware KVM: ~1G/s; needed: ${formatIps(MIN_GUEST_IPS)}/s)${pv}; a stock kernel would appear to hang`,
      KVM_FIX_NO_VIRT,
      { guestIps: ips },
    );
  }
  return { ...base, usable: true, code: "ok", reason: `KVM ran real-mode and long-mode guest code at ${formatIps(ips)} instructions/s`, remediation: "", guestIps: ips };
}

/** 1531198 -> "1.5M", 100000000 -> "100M". */
export function formatIps(ips: number): string {
  const f = (v: number, unit: string) => `${v.toFixed(1).replace(/\.0$/, "")}${unit}`;
  if (ips >= 1e9) return f(ips / 1e9, "G");
  if (ips >= 1e6) return f(ips / 1e6, "M");
  if (ips >= 1e3) return f(ips / 1e3, "k");
  return String(ips);
}

export interface ProbeKvmOptions {
  guestArch?: Arch;
  env?: NodeJS.ProcessEnv;
  /** Override the device (tests). */
  devicePath?: string;
}

/** Where the native helper lives: MICROAGENT_KVM_PROBE, else `<package root>/native/build/kvm-probe`. */
export function kvmProbePath(env: NodeJS.ProcessEnv = process.env): string | undefined {
  const explicit = env.MICROAGENT_KVM_PROBE;
  if (explicit) return isExecutableFile(explicit) ? explicit : undefined;
  const p = join(packageRoot(), "native", "build", "kvm-probe");
  return isExecutableFile(p) ? p : undefined;
}

function loadedKvmModules(): string[] {
  return ["kvm", "kvm_intel", "kvm_amd", "kvm_pvm"].filter((m) => existsSync(`/sys/module/${m}`));
}

export async function gatherKvmFacts(opts: ProbeKvmOptions = {}): Promise<KvmFacts> {
  const devicePath = opts.devicePath ?? KVM_DEVICE;
  const facts: KvmFacts = {
    devicePath,
    devicePresent: false,
    hostArch: hostArch(),
    guestArch: opts.guestArch ?? hostArch(),
    modules: loadedKvmModules(),
  };
  try {
    const st = statSync(devicePath);
    facts.devicePresent = true;
    if (!st.isCharacterDevice()) facts.deviceNotChar = true;
  } catch {
    return facts;
  }
  if (facts.deviceNotChar || facts.guestArch !== facts.hostArch) return facts;
  const probePath = kvmProbePath(opts.env);
  if (!probePath) return facts;
  facts.probePath = probePath;
  const run = await runTool(probePath, [devicePath], { timeoutMs: KVM_PROBE_TIMEOUT_MS });
  facts.probeRun = { code: run.code, signal: run.signal, stdout: run.stdout, stderr: run.stderr, timedOut: run.timedOut, ...(run.spawnErrno ? { spawnErrno: run.spawnErrno } : {}) };
  return facts;
}

/** Can KVM really run a guest here? A live probe; see the module comment. */
export async function probeKvm(opts: ProbeKvmOptions = {}): Promise<KvmProbeResult> {
  return decideKvm(await gatherKvmFacts(opts));
}

/** The accelerator linux-qemu should use, given a KVM probe result. */
export function accelFromKvm(kvm: KvmProbeResult): AccelChoice {
  if (kvm.usable) return { accel: "kvm", reason: kvm.reason, kvm };
  return { accel: "tcg", reason: `KVM unusable: ${kvm.reason}; using TCG software emulation`, kvm };
}

/** Probe KVM and choose QEMU's accelerator ('kvm' when a vCPU really runs guest code, else 'tcg'). */
export async function selectAccel(opts: ProbeKvmOptions = {}): Promise<AccelChoice> {
  return accelFromKvm(await probeKvm(opts));
}
