/** Host tools: where each one is and which version it reports. */
import { join } from "node:path";
import type { Arch } from "../contract/backend.ts";
import { firstLine, runTool, type ToolRun } from "./exec.ts";
import { SBIN_DIRS, findOnPath, isExecutableFile, packageRoot } from "../util/exec-path.ts";

export interface ToolInfo {
  name: string;
  available: boolean;
  path?: string;
  /** How it was found: an explicit variable, PATH, or the package's libexec. */
  source?: "env" | "path" | "libexec";
  version?: string;
  /** Why it is unavailable (or how it was found). */
  detail: string;
}

export type ToolRunFacts = Pick<ToolRun, "code" | "stdout" | "stderr" | "timedOut" | "spawnErrno">;

/** "QEMU emulator version 7.2.22 (Debian ...)" -> "7.2.22"; "pasta unknown version" -> "unknown". */
export function parseVersion(text: string): string | undefined {
  const line = firstLine(text);
  if (line === "") return undefined;
  // pasta's own builds print a date-based version ("pasta 2024_09_06.6b38f07"); Debian's prints "unknown version".
  const pasta = /^pasta\s+(\S+)/.exec(line);
  if (pasta?.[1]) return pasta[1] === "unknown" ? "unknown" : pasta[1];
  const m = /v?(\d+\.\d+(?:\.\d+)?(?:[-+~][0-9A-Za-z.+~-]+)?)/.exec(line);
  if (m?.[1]) return m[1];
  return undefined;
}

/** A tool is usable when it ran and printed a version (or at least exited 0). */
export function decideTool(name: string, path: string | undefined, source: ToolInfo["source"], run: ToolRunFacts | undefined, notFound: string): ToolInfo {
  if (!path) return { name, available: false, detail: notFound };
  const where = source === "env" ? " (from environment)" : source === "libexec" ? " (package libexec)" : "";
  if (!run) return { name, available: true, path, ...(source ? { source } : {}), detail: `${path}${where}` };
  if (run.spawnErrno) return { name, available: false, path, detail: `${path} could not run (${run.spawnErrno})` };
  if (run.timedOut) return { name, available: false, path, detail: `${path} did not answer its version query in time` };
  const version = parseVersion(`${run.stdout}\n${run.stderr}`);
  if (version === undefined && run.code !== 0) {
    return { name, available: false, path, detail: `${path} failed its version query (exit ${run.code}): ${firstLine(run.stderr || run.stdout)}` };
  }
  return { name, available: true, path, ...(source ? { source } : {}), ...(version ? { version } : {}), detail: `${path}${version ? (version === "unknown" ? " (version unknown)" : ` ${version}`) : ""}${where}` };
}

async function versionOf(path: string, args: readonly string[]): Promise<ToolRunFacts> {
  const r = await runTool(path, args, { timeoutMs: 5000 });
  return { code: r.code, stdout: r.stdout, stderr: r.stderr, timedOut: r.timedOut, ...(r.spawnErrno ? { spawnErrno: r.spawnErrno } : {}) };
}

export function qemuBinaryName(arch: Arch): string {
  return arch === "arm64" ? "qemu-system-aarch64" : "qemu-system-x86_64";
}

/** QEMU: MICROAGENT_QEMU, else qemu-system-<arch> on PATH. */
export async function probeQemu(arch: Arch, env: NodeJS.ProcessEnv): Promise<ToolInfo> {
  const name = qemuBinaryName(arch);
  const explicit = env.MICROAGENT_QEMU;
  if (explicit) {
    if (!isExecutableFile(explicit)) return { name, available: false, detail: `MICROAGENT_QEMU=${explicit} is not an executable file` };
    return decideTool(name, explicit, "env", await versionOf(explicit, ["--version"]), "");
  }
  const path = findOnPath(name, env);
  return decideTool(name, path, "path", path ? await versionOf(path, ["--version"]) : undefined, `${name} not found on PATH`);
}

/** Firecracker: MICROAGENT_FIRECRACKER, else on PATH, else `<prefix>/libexec/firecracker`. */
export async function probeFirecracker(env: NodeJS.ProcessEnv, root: string = packageRoot()): Promise<ToolInfo> {
  const name = "firecracker";
  const explicit = env.MICROAGENT_FIRECRACKER;
  if (explicit) {
    if (!isExecutableFile(explicit)) return { name, available: false, detail: `MICROAGENT_FIRECRACKER=${explicit} is not an executable file` };
    return decideTool(name, explicit, "env", await versionOf(explicit, ["--version"]), "");
  }
  const onPath = findOnPath(name, env);
  const libexec = join(root, "libexec", "firecracker");
  const path = onPath ?? (isExecutableFile(libexec) ? libexec : undefined);
  const source = onPath ? "path" : "libexec";
  return decideTool(name, path, source, path ? await versionOf(path, ["--version"]) : undefined, `firecracker not found on PATH, in MICROAGENT_FIRECRACKER, or at ${libexec}`);
}

export async function probePasta(env: NodeJS.ProcessEnv): Promise<ToolInfo> {
  const path = findOnPath("pasta", env, SBIN_DIRS);
  return decideTool("pasta", path, "path", path ? await versionOf(path, ["--version"]) : undefined, "pasta not found on PATH");
}

/** e2fsprogs tools print their version on stderr with -V; they live in /usr/sbin, often off PATH. */
export async function probeE2fs(name: "mke2fs" | "debugfs", env: NodeJS.ProcessEnv): Promise<ToolInfo> {
  const path = findOnPath(name, env, SBIN_DIRS);
  return decideTool(name, path, "path", path ? await versionOf(path, ["-V"]) : undefined, `${name} not found on PATH or in /usr/sbin`);
}

/** What a QEMU binary supports, from its own help listings. */
export interface QemuFeatures {
  accels: string[];
  virtserialport: boolean;
  microvm: boolean;
  /** A help query failed (the lists above are then incomplete). */
  error?: string;
}

export function parseQemuAccelHelp(text: string): string[] {
  return text
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => /^[a-z0-9_-]+$/.test(l));
}

export async function probeQemuFeatures(qemuPath: string): Promise<QemuFeatures> {
  const base = ["-nodefaults", "-display", "none"];
  const [accel, device, machine] = await Promise.all([
    runTool(qemuPath, [...base, "-accel", "help"], { timeoutMs: 5000 }),
    runTool(qemuPath, [...base, "-device", "help"], { timeoutMs: 5000 }),
    runTool(qemuPath, [...base, "-machine", "help"], { timeoutMs: 5000 }),
  ]);
  const failed = [accel, device, machine].find((r) => r.code !== 0);
  return {
    accels: parseQemuAccelHelp(accel.stdout),
    virtserialport: /name "virtserialport"/.test(device.stdout),
    microvm: /^microvm\b/m.test(machine.stdout),
    ...(failed ? { error: `qemu help query failed: ${firstLine(failed.stderr) || (failed.spawnErrno ?? `exit ${failed.code}`)}` } : {}),
  };
}
