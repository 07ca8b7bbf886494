/**
 * Reconcile on read: the recorded state must never claim a VM that no longer exists. A workspace
 * recorded as starting/running/paused/stopping whose supervisor process is gone is recorded `failed`
 * (or `stopped` when the workload had already exited 0), with the reason and the serial log's last
 * line, and an orphaned VMM left by a SIGKILLed supervisor is killed so nothing runs unrecorded.
 *
 * A live supervisor is trusted: it owns the VM and records the VMM's end itself (it holds the state
 * API too). Second-guessing it here would race with its own transition (e.g. halt: the VMM exits,
 * then the supervisor records `halted`).
 *
 * `quarantined` is left as it is even when its processes are gone: the state is a custody marker;
 * halt/stop/kill move it on.
 */
import { WorkspaceErrors } from "./errors.ts";
import { type LockHandle, acquireLock } from "./lock.ts";
import { stopRecordedProcesses } from "../util/kill.ts";
import { isZombie, pidExists } from "../util/process.ts";
import { isCleanResult, readResult } from "./result.ts";
import { readRuntime, runtimeLiveness, runtimeMarker, type RuntimeRecord } from "./runtime.ts";
import { lastLines, readTail } from "./serial.ts";
import { readState, transition, type StateRecord } from "./state.ts";
import type { WorkspaceState } from "./events.ts";
import type { WorkspacePaths } from "./paths.ts";

/** States that claim a supervisor is at work. */
const CLAIMS_SUPERVISOR: ReadonlySet<WorkspaceState> = new Set(["starting", "running", "paused", "stopping"]);

export interface ReconcileOptions {
  /** A lock the caller holds; otherwise one is taken only when a change must be written. */
  lock?: LockHandle;
  /**
   * How long `starting` may go without a runtime record before it counts as abandoned: the start
   * command records `starting` a moment before the supervisor it spawns writes runtime.json.
   * Default 60000.
   */
  startingGraceMs?: number;
  now?: Date;
}

export interface ReconcileOutcome {
  /** The state after reconciling (undefined: the workspace has no state). */
  state: StateRecord | undefined;
  /** True when this call recorded a change. */
  changed: boolean;
  /** The recorded runtime, when there is one. */
  runtime: RuntimeRecord | undefined;
}

/** What reconcile would decide, without writing: the target state and why, or undefined. */
export async function diagnose(
  paths: WorkspacePaths,
  current: StateRecord,
  runtime: RuntimeRecord | undefined,
  options: ReconcileOptions = {},
): Promise<{ to: WorkspaceState; detail: string; orphanVmm?: RuntimeRecord } | undefined> {
  if (!CLAIMS_SUPERVISOR.has(current.state)) return undefined;
  const now = (options.now ?? new Date()).getTime();
  if (!runtime) {
    const graceMs = options.startingGraceMs ?? 60000;
    if (current.state === "starting" && now - Date.parse(current.observedAt) < graceMs) return undefined;
    return { to: "failed", detail: `recorded ${current.state} but no supervisor was ever recorded (runtime.json missing)` };
  }
  const live = runtimeLiveness(runtime);
  if (live.supervisorAlive) return undefined;
  const result = await readResult(paths);
  const resultOfThisBoot = result && (result.runtimeId === undefined || result.runtimeId === runtime.runtimeId) ? result : undefined;
  const tail = lastLines(await readTail(paths.serialLog, 2048), 1)[0];
  const vmm =
    runtime.vmmPid === undefined
      ? ""
      : live.vmmAlive
        ? `; its VMM pid ${runtime.vmmPid} was still running and was killed`
        : isZombie(runtime.vmmPid)
          ? `; VMM pid ${runtime.vmmPid} has exited (not yet reaped)`
          : pidExists(runtime.vmmPid)
            ? `; VMM pid ${runtime.vmmPid} now belongs to another process (not signalled)`
            : `; VMM pid ${runtime.vmmPid} is gone too`;
  const serial = tail ? `; last serial line: ${JSON.stringify(tail.slice(0, 160))}` : "";
  const orphan = live.vmmAlive ? { orphanVmm: runtime } : {};
  if (isCleanResult(resultOfThisBoot)) {
    return { to: "stopped", detail: `supervisor pid ${runtime.supervisorPid} is gone after the workload exited 0${vmm}`, ...orphan };
  }
  const workload = resultOfThisBoot
    ? `; the workload had ended (${resultOfThisBoot.status}${resultOfThisBoot.exitCode !== null ? ` with code ${resultOfThisBoot.exitCode}` : ""})`
    : "";
  return { to: "failed", detail: `supervisor pid ${runtime.supervisorPid} died while the workspace was ${current.state}${workload}${vmm}${serial}`, ...orphan };
}

/**
 * Bring the recorded state in line with the processes that actually exist. Cheap when nothing is
 * wrong (reads state.json and runtime.json, probes two pids); takes the lock only to write.
 */
export async function reconcile(paths: WorkspacePaths, options: ReconcileOptions = {}): Promise<ReconcileOutcome> {
  let current = await readState(paths);
  let runtime = await readRuntime(paths);
  if (!current) return { state: undefined, changed: false, runtime };
  if (!(await diagnose(paths, current, runtime, options))) return { state: current, changed: false, runtime };

  const lock = options.lock ?? (await acquireLock(paths.lock, { purpose: "reconcile" }));
  try {
    // Decide again under the lock: the supervisor may have recorded the end meanwhile.
    current = await readState(paths);
    runtime = await readRuntime(paths);
    if (!current) return { state: undefined, changed: false, runtime };
    const verdict = await diagnose(paths, current, runtime, options);
    if (!verdict) return { state: current, changed: false, runtime };
    if (verdict.orphanVmm) await killOrphanVmm(verdict.orphanVmm);
    const record = await transition(paths, verdict.to, {
      lock,
      detail: verdict.detail,
      expectFrom: current.state,
      identity: { runtimeId: runtime?.runtimeId, requestId: "reconcile" },
    });
    return { state: record, changed: true, runtime };
  } finally {
    if (!options.lock) await lock.release();
  }
}

/** SIGKILL a VMM whose supervisor died, and its group (only if the pid is verifiably still that same process). */
async function killOrphanVmm(runtime: RuntimeRecord): Promise<void> {
  if (runtime.vmmPid === undefined) return;
  const { refused } = await stopRecordedProcesses([{ pid: runtime.vmmPid, startTime: runtime.vmmStartTime, group: true }], { marker: runtimeMarker(runtime), waitMs: 1000 });
  if (refused.length > 0) {
    throw WorkspaceErrors.WORKSPACE_RUNNING({
      message: `the VMM pid ${runtime.vmmPid} of a dead supervisor could not be killed (${refused[0]?.code})`,
      remediation: `Kill process ${runtime.vmmPid} by hand, then retry.`,
    });
  }
}
