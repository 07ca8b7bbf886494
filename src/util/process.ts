/**
 * Process identity for locks and reconcile. A pid alone is not an identity: pids are reused, so a
 * lock or runtime record also keeps the process's start time (field 22 of /proc/<pid>/stat, in
 * clock ticks since boot). A recorded process is alive only when a process with that pid exists
 * AND it started at the recorded time.
 *
 * Before a signal the bar is higher (`isRecordedProcess`): a record without a start time (hand-edited,
 * or written by another tool) names only a pid, which may by now belong to anyone. Where procfs
 * exists such a pid is trusted only when its command line names the workspace; nothing is ever
 * signalled on the strength of a bare pid.
 */
import { readFileSync } from "node:fs";

/** Start time of `pid` in clock ticks since boot, or undefined (no such process / no procfs). */
export function processStartTime(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // The command name (field 2) is in parentheses and may itself contain spaces or ')':
    // split after the LAST ')'.
    const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    // rest[0] is field 3 (state); starttime is field 22 -> rest[19].
    const value = Number(rest[19]);
    return Number.isFinite(value) ? value : undefined;
  } catch {
    return undefined;
  }
}

/** True when a process with this pid exists (signal 0 probe; EPERM still means it exists). */
export function pidExists(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** True when a zombie: the process exited but its parent has not reaped it yet. */
export function isZombie(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2).startsWith("Z");
  } catch {
    return false;
  }
}

/**
 * Is the process recorded as (pid, startTime) still the same live process? When no start time
 * was recorded (or procfs is unavailable) fall back to pid existence.
 */
export function processAlive(pid: number, startTime?: number): boolean {
  if (!pidExists(pid)) return false;
  if (isZombie(pid)) return false;
  if (startTime === undefined) return true;
  const now = processStartTime(pid);
  return now === undefined ? true : now === startTime;
}

/** This process's own identity, for lock files and runtime records. */
export function selfIdentity(): { pid: number; startTime: number | undefined } {
  return { pid: process.pid, startTime: processStartTime(process.pid) };
}

let procfs: boolean | undefined;

/** True where /proc/<pid>/stat can be read (Linux): there, identities can be and are verified. */
export function procfsAvailable(): boolean {
  procfs ??= processStartTime(process.pid) !== undefined;
  return procfs;
}

/** The argv of `pid` (from /proc/<pid>/cmdline), or undefined. */
export function processArgv(pid: number): string[] | undefined {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").filter((a) => a !== "");
  } catch {
    return undefined;
  }
}

/**
 * May the live process `pid` be treated as the one a record names (and so be signalled)? With a
 * recorded start time, it must match. Without one, on a host with procfs, one of the process's
 * arguments must be the path `marker` or contain a path below it (the workspace directory: the
 * supervisor gets it as its argument, QEMU its disk inside it; `.../workspaces/a` does not match
 * `.../workspaces/ab`); with no marker an unverifiable pid is not ours. Without procfs (no way to verify),
 * pid existence is all there is.
 */
export function isRecordedProcess(pid: number, startTime: number | undefined, marker?: string): boolean {
  if (!processAlive(pid, startTime)) return false;
  if (startTime !== undefined || !procfsAvailable()) return true;
  if (!marker) return false;
  const below = `${marker.replace(/\/+$/, "")}/`;
  return processArgv(pid)?.some((a) => a === marker || a.includes(below)) ?? false;
}
