/**
 * The one mapping from how a guest command ended to the exit code the CLI and the library report:
 * exited -> its code (0-255; a negative one is 1), timed_out 124, failed_to_start 127, signaled
 * 128+n. `exec` and `run` (both its workload and its command forms) use it, so they cannot drift.
 */
import type { ExecResult, WorkloadResult } from "../supervisor/protocol.ts";
import { signalNumber } from "../util/signals.ts";

/** An ended command's status; a signal is a name ("SIGTERM", "TERM") or a number ("9"). */
export type ExitOutcome = Pick<ExecResult, "status" | "exitCode" | "signal">;

export function exitCodeFor(r: ExitOutcome): number {
  switch (r.status) {
    case "exited": {
      const c = r.exitCode ?? 1;
      return c < 0 ? 1 : Math.min(c, 255);
    }
    case "timed_out":
      return 124;
    case "failed_to_start":
      return 127;
    case "signaled":
      return 128 + signalOf(r.signal);
  }
}

/** A workspace's workload result as the same outcome (it has no status field of its own). */
export function workloadExitCode(r: WorkloadResult): number {
  if (r.startError) return exitCodeFor({ status: "failed_to_start" });
  if (r.signal) return exitCodeFor({ status: "signaled", signal: r.signal });
  return exitCodeFor({ status: "exited", ...(r.exitCode !== undefined ? { exitCode: r.exitCode } : {}) });
}

// A signal the table does not know is reported as SIGKILL's (the guest's own fallback).
function signalOf(sig: string | undefined): number {
  if (!sig) return 9;
  if (/^\d+$/.test(sig)) return Number(sig);
  return signalNumber(sig) ?? 9;
}
