/**
 * Host facts the QEMU command line needs: where the QEMU binary is, and the TSC frequency to hand
 * the guest kernel under TCG.
 */
import { readFileSync } from "node:fs";
import { findExecutable, isExecutableFile, pathDirs } from "../../util/exec-path.ts";
import { VmmErrors } from "../errors.ts";

export const QEMU_BINARY = "qemu-system-x86_64";

export interface FindQemuOptions {
  /** An explicit path; wins over everything. */
  path?: string;
  env?: NodeJS.ProcessEnv;
}

/**
 * The QEMU binary: `opts.path`, else `$MICROAGENT_QEMU`, else `qemu-system-x86_64` on PATH.
 * Throws QEMU_NOT_FOUND naming what was searched.
 */
export function findQemu(opts: FindQemuOptions = {}): string {
  const env = opts.env ?? process.env;
  const explicit = opts.path ?? (env.MICROAGENT_QEMU || undefined);
  if (explicit !== undefined) {
    if (isExecutableFile(explicit)) return explicit;
    throw VmmErrors.QEMU_NOT_FOUND({
      message: `QEMU binary ${explicit} ${opts.path !== undefined ? "(given explicitly)" : "(from MICROAGENT_QEMU)"} does not exist or is not executable`,
      details: { path: explicit },
    });
  }
  const dirs = pathDirs(env);
  const found = findExecutable(QEMU_BINARY, dirs);
  if (found !== undefined) return found;
  throw VmmErrors.QEMU_NOT_FOUND({
    message: `${QEMU_BINARY} not found on PATH`,
    details: { searched: dirs },
  });
}

/**
 * The host CPU's TSC frequency in kHz, from the first "cpu MHz" line of /proc/cpuinfo (TCG's
 * virtual TSC runs at the host rate). Undefined when it cannot be read (non-x86 host, no procfs).
 */
export function tscKhz(cpuinfo?: string): number | undefined {
  let text = cpuinfo;
  if (text === undefined) {
    try {
      text = readFileSync("/proc/cpuinfo", "utf8");
    } catch {
      return undefined;
    }
  }
  const m = /^cpu MHz\s*:\s*([0-9]+(?:\.[0-9]+)?)\s*$/m.exec(text);
  if (!m?.[1]) return undefined;
  const khz = Math.round(Number(m[1]) * 1000);
  return Number.isFinite(khz) && khz > 0 ? khz : undefined;
}
