/**
 * The supervisor's phase machine, as `workspace/state.ts` is the workspace's: `PHASE_TRANSITIONS` is
 * the whole table and `nextPhase()` the only way to a new phase. It checks invariants first (the pair
 * is in the table, a stop says why and only escalates, an exit carries its final state), then returns
 * the new record; `Supervisor` keeps the record and never mutates it field by field. Pure: no I/O,
 * no timers, so the table is unit-tested on its own.
 *
 * Supervisor phases are finer than workspace states and are not recorded: they say what the control
 * handlers accept right now. The workspace state (`running`, `halted`, ...) is what the supervisor
 * records through `deps.record` at the transitions that matter to a reader.
 *
 * The disk-full pause (io-pause.ts) is NOT a phase but a condition the supervisor watches beside
 * it: the VMM stops the vCPUs by itself, in any phase (a boot or a halt can hit a full disk too), and
 * resumes them by itself when space is back. Making it a phase would force every transition to
 * remember the phase to return to; as a flag it simply makes requests fail fast with DISK_FULL
 * whatever the phase is. `paused` is the supervisor's own decision (pause/resume, snapshots).
 */
import { SupervisorErrors } from "./errors.ts";
import type { WorkspaceState } from "../workspace/events.ts";

export const SUPERVISOR_PHASES = ["booting", "running", "paused", "stopping", "quarantined", "exited"] as const;
export type SupervisorPhase = (typeof SUPERVISOR_PHASES)[number];

/**
 * Why the supervisor is stopping the VM. `halt`/`stop`: requested; `workload`: the workload ended,
 * so the VM ends; `kill`: requested or a signal; `halt-timeout`: a halt whose guest did not power off
 * in time (its caller records `failed`); `boot-failed`: the boot failed (its caller records why).
 */
export type StopCause = "halt" | "halt-timeout" | "stop" | "kill" | "workload" | "boot-failed";

/** What moved the supervisor into a phase other than `stopping`. */
export type PhaseCause = "booted" | "pause" | "resume" | "quarantine" | "exit";

/**
 * Allowed transitions, "from -> the phases it may move to".
 * - boot: booting -> running; a boot that fails or is stopped/killed meanwhile -> stopping -> exited.
 * - pause/resume: running <-> paused (vCPUs stopped on request; a snapshot is taken of a paused VM).
 * - halt/stop/kill/the workload's end: running|paused -> stopping -> exited.
 * - quarantine: booting|running|paused -> quarantined; then only stopping (halt/stop/kill) or exited
 *   (the frozen VM died). Never back to running: the host paths stay severed.
 * - stopping -> stopping: the cause escalates (a halt times out, a kill overtakes a halt).
 * - any live phase -> exited: the VM died on its own.
 */
export const PHASE_TRANSITIONS: Readonly<Record<SupervisorPhase, readonly SupervisorPhase[]>> = {
  booting: ["running", "stopping", "quarantined", "exited"],
  running: ["paused", "stopping", "quarantined", "exited"],
  paused: ["running", "stopping", "quarantined", "exited"],
  stopping: ["stopping", "exited"],
  quarantined: ["stopping", "exited"],
  exited: [],
};

/** Phases in which the control handlers may reach the guest. */
export const GUEST_REACHABLE_PHASES: ReadonlySet<SupervisorPhase> = new Set(["running"]);

/** The causes a stop may escalate to from each cause (stopping -> stopping). */
const STOP_ESCALATIONS: Readonly<Record<StopCause, readonly StopCause[]>> = {
  halt: ["halt-timeout", "stop", "kill"],
  stop: ["halt", "kill"],
  workload: ["kill"],
  "halt-timeout": ["kill"],
  "boot-failed": [],
  kill: [],
};

export interface FinalState {
  state: WorkspaceState;
  detail: string;
}

export interface PhaseRecord {
  readonly phase: SupervisorPhase;
  /** Why the supervisor stops (set on entering `stopping`, kept into `exited`). */
  readonly stopCause: StopCause | undefined;
  /** The final workspace state (set on entering `exited`). */
  readonly final: FinalState | undefined;
  /** What caused the latest transition (a stop cause, or a PhaseCause). */
  readonly cause: StopCause | PhaseCause | "start";
}

export const INITIAL_PHASE: PhaseRecord = { phase: "booting", stopCause: undefined, final: undefined, cause: "start" };

export function canTransitionPhase(from: SupervisorPhase, to: SupervisorPhase): boolean {
  return PHASE_TRANSITIONS[from].includes(to);
}

const STOP_CAUSES: ReadonlySet<string> = new Set<StopCause>(["halt", "halt-timeout", "stop", "kill", "workload", "boot-failed"]);

function isStopCause(c: string): c is StopCause {
  return STOP_CAUSES.has(c);
}

/**
 * The record after moving `current` to `to` because of `cause`. Throws SUPERVISOR_INVARIANT when the
 * move breaks the table or an invariant: that is a bug in the supervisor, never the guest's doing.
 */
export function nextPhase(current: PhaseRecord, to: SupervisorPhase, cause: StopCause | PhaseCause, final?: FinalState): PhaseRecord {
  const from = current.phase;
  const refuse = (why: string): never => {
    throw SupervisorErrors.SUPERVISOR_INVARIANT({
      message: `supervisor phase ${from} -> ${to} (${cause}) refused: ${why}`,
      details: { from, to, cause, allowed: PHASE_TRANSITIONS[from] },
    });
  };
  // Invariant 1: the pair is in the table.
  if (!canTransitionPhase(from, to)) refuse(`not in the phase table (from ${from}: ${PHASE_TRANSITIONS[from].join(", ") || "nothing"})`);
  // Invariant 2: entering stopping says why; staying in it only escalates.
  if (to === "stopping") {
    if (!isStopCause(cause)) refuse("a stop needs a stop cause");
    const c = cause as StopCause;
    if (c === "boot-failed" && from !== "booting" && from !== "running") refuse("only a boot can fail");
    if (from === "stopping" && !STOP_ESCALATIONS[current.stopCause as StopCause].includes(c)) refuse(`a ${current.stopCause} stop cannot become ${c}`);
    return { phase: to, stopCause: c, final: undefined, cause: c };
  }
  // Invariant 3: the other phases have their own causes.
  if (isStopCause(cause)) refuse(`${cause} is a stop cause; only stopping takes one`);
  const expected: Record<Exclude<SupervisorPhase, "stopping">, PhaseCause[]> = {
    booting: [],
    running: ["booted", "resume"],
    paused: ["pause"],
    quarantined: ["quarantine"],
    exited: ["exit"],
  };
  if (!expected[to].includes(cause as PhaseCause)) refuse(`${to} is entered by ${expected[to].join(" or ")}`);
  if (to === "running" && cause === "booted" && from !== "booting") refuse("only a booting supervisor boots");
  if (to === "running" && cause === "resume" && from !== "paused") refuse("only a paused VM resumes");
  // Invariant 4: an exit carries its final state, and a failure says why.
  if (to === "exited") {
    if (!final) refuse("an exit needs its final state");
    const f = final as FinalState;
    if (f.detail.trim() === "") refuse(`the final state ${f.state} needs a detail`);
    return { phase: to, stopCause: current.stopCause, final: f, cause: "exit" };
  }
  return { phase: to, stopCause: current.stopCause, final: undefined, cause: cause as PhaseCause };
}

/** Whether `current` may move to `stopping` because of `cause` (a stop from a live phase, or an escalation). */
export function canStop(current: PhaseRecord, cause: StopCause): boolean {
  if (!canTransitionPhase(current.phase, "stopping")) return false;
  if (cause === "boot-failed" && current.phase !== "booting" && current.phase !== "running") return false;
  if (current.phase === "stopping") return STOP_ESCALATIONS[current.stopCause as StopCause].includes(cause);
  return true;
}
