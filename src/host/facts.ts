/**
 * Gathering: run every live probe once, concurrently, and collect the raw results. Deciding what
 * they mean for a backend is checks.ts's job (pure), so tests can feed recorded facts.
 */
import { join } from "node:path";
import type { Arch } from "../contract/backend.ts";
import { decideDevice, probeDevice, type DeviceResult } from "./devices.ts";
import { probeKvm, type KvmProbeResult } from "./kvm.ts";
import { isExecutableFile, isReadableFile, packageRoot } from "../util/exec-path.ts";
import { probeE2fs, probeFirecracker, probePasta, probeQemu, probeQemuFeatures, type QemuFeatures, type ToolInfo } from "./tools.ts";
import { decideUserns, gatherUsernsFacts, type UsernsResult } from "./userns.ts";

export interface ArtifactInfo {
  path: string;
  available: boolean;
  /** Where the path came from. */
  source: "flag" | "env" | "default";
  detail: string;
}

/** Facts only Linux hosts have. */
export interface LinuxFacts {
  kvm: KvmProbeResult;
  qemu: ToolInfo;
  /** Absent when QEMU itself is missing. */
  qemuFeatures?: QemuFeatures;
  firecracker: ToolInfo;
  vsock: DeviceResult;
  tun: DeviceResult;
  pasta: ToolInfo;
  userns: UsernsResult;
  mke2fs: ToolInfo;
  debugfs: ToolInfo;
}

export interface HostFacts {
  platform: NodeJS.Platform;
  hostArch: Arch;
  guestArch: Arch;
  /** Present on Linux hosts only. */
  linux?: LinuxFacts;
  supervisor: ArtifactInfo;
  guestInit: ArtifactInfo;
}

export interface GatherOptions {
  platform: NodeJS.Platform;
  hostArch: Arch;
  guestArch: Arch;
  env: NodeJS.ProcessEnv;
  /** --supervisor; undefined selects the default. */
  supervisor?: string;
}

/** `--supervisor PATH`, else `<package root>/dist/supervisor/main.js`. */
export function resolveSupervisor(flag: string | undefined, root: string = packageRoot()): ArtifactInfo {
  const path = flag ?? join(root, "dist", "supervisor", "main.js");
  const source = flag !== undefined ? "flag" : "default";
  // A .js supervisor is run by node, so readable is enough; any other file must be executable.
  const ok = path.endsWith(".js") ? isReadableFile(path) : isExecutableFile(path);
  return {
    path,
    source,
    available: ok,
    detail: ok ? `${path}` : `${path} ${source === "flag" ? "(from --supervisor) " : ""}does not exist or is not ${path.endsWith(".js") ? "readable" : "executable"}`,
  };
}

/** MICROAGENT_GUEST_INIT, else `<package root>/guest/build/microagent-init`. */
export function resolveGuestInit(env: NodeJS.ProcessEnv, root: string = packageRoot()): ArtifactInfo {
  const explicit = env.MICROAGENT_GUEST_INIT;
  const path = explicit || join(root, "guest", "build", "microagent-init");
  const source = explicit ? "env" : "default";
  const ok = isExecutableFile(path);
  return { path, source, available: ok, detail: ok ? path : `${path}${explicit ? " (from MICROAGENT_GUEST_INIT)" : ""} does not exist or is not executable` };
}

async function gatherLinux(o: GatherOptions): Promise<LinuxFacts> {
  const [kvm, qemu, firecracker, vsock, tun, pasta, userns, mke2fs, debugfs] = await Promise.all([
    probeKvm({ guestArch: o.guestArch, env: o.env }),
    probeQemu(o.guestArch, o.env),
    probeFirecracker(o.env),
    probeDevice("/dev/vhost-vsock").then(decideDevice),
    probeDevice("/dev/net/tun").then(decideDevice),
    probePasta(o.env),
    gatherUsernsFacts(o.env).then(decideUserns),
    probeE2fs("mke2fs", o.env),
    probeE2fs("debugfs", o.env),
  ]);
  const facts: LinuxFacts = { kvm, qemu, firecracker, vsock, tun, pasta, userns, mke2fs, debugfs };
  if (qemu.available && qemu.path) facts.qemuFeatures = await probeQemuFeatures(qemu.path);
  return facts;
}

export async function gatherHostFacts(o: GatherOptions): Promise<HostFacts> {
  const facts: HostFacts = {
    platform: o.platform,
    hostArch: o.hostArch,
    guestArch: o.guestArch,
    supervisor: resolveSupervisor(o.supervisor),
    guestInit: resolveGuestInit(o.env),
  };
  if (o.platform === "linux") facts.linux = await gatherLinux(o);
  return facts;
}
