/**
 * Stopping processes named by a record (a workspace's runtime.json: supervisor and VMM). A recorded
 * pid may by now belong to anyone, so every signal is preceded by the identity check of
 * `isRecordedProcess` (start time, or the command line naming the workspace); a process that fails
 * it is never signalled. One function for delete --force, reconcile's orphan VMM and `kill`.
 */
import { setTimeout as sleep } from "node:timers/promises";
import { isRecordedProcess } from "./process.ts";

export interface RecordedProcess {
  pid: number;
  /** Start time as recorded (clock ticks since boot); without it the marker must match. */
  startTime?: number | undefined;
  /** Also signal the process group it leads (a VMM spawned detached leads its own). */
  group?: boolean;
}

export interface StopOptions {
  /** The path a recorded process's command line must name when its start time is missing. */
  marker?: string | undefined;
  /** SIGTERM first and wait this long before SIGKILL; 0 (the default): SIGKILL at once. */
  graceMs?: number;
  /** How long to wait for the processes to be gone after SIGKILL (default 2000). */
  waitMs?: number;
}

export interface StopOutcome {
  /** Pids that passed the identity check and were signalled. */
  signalled: number[];
  /** Pids still alive (and still the recorded process) when the wait ran out. */
  survivors: number[];
  /** Signals refused for a reason other than the process being gone (EPERM: not ours to signal). */
  refused: Array<{ pid: number; code: string }>;
}

const POLL_MS = 25;

/** Signal each target that is still the recorded process, in order; then wait for all to be gone. */
export async function stopRecordedProcesses(targets: readonly RecordedProcess[], options: StopOptions = {}): Promise<StopOutcome> {
  const ours = (t: RecordedProcess) => isRecordedProcess(t.pid, t.startTime, options.marker);
  const refused: StopOutcome["refused"] = [];
  const signal = (t: RecordedProcess, sig: NodeJS.Signals) => {
    // Checked again right before each signal: the process may have exited and its pid been reused.
    if (!ours(t)) return false;
    // While the verified process holds pid P the kernel hands out no group id P to anyone else, so
    // a group P, if it exists, is the one that process leads.
    for (const target of t.group ? [-t.pid, t.pid] : [t.pid]) {
      try {
        process.kill(target, sig);
      } catch (e) {
        // ESRCH: no such group (not a leader), or already gone
        const code = (e as NodeJS.ErrnoException).code ?? "EUNKNOWN";
        if (code !== "ESRCH" && target > 0 && !refused.some((r) => r.pid === t.pid)) refused.push({ pid: t.pid, code });
      }
    }
    return true;
  };
  const signalled = targets.filter((t) => ours(t)).map((t) => t.pid);
  const graceMs = options.graceMs ?? 0;
  if (graceMs > 0) {
    for (const t of targets) signal(t, "SIGTERM");
    await waitGone(targets, ours, graceMs);
  }
  for (const t of targets) signal(t, "SIGKILL");
  await waitGone(targets, ours, options.waitMs ?? 2000);
  return { signalled, survivors: targets.filter((t) => ours(t)).map((t) => t.pid), refused };
}

async function waitGone(targets: readonly RecordedProcess[], ours: (t: RecordedProcess) => boolean, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (targets.some(ours) && Date.now() < deadline) await sleep(POLL_MS);
}
