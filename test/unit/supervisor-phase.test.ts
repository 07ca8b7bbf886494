/**
 * The supervisor's phase table: written out here independently of phase.ts, so a change to the
 * table is a visible decision; plus the invariants nextPhase() enforces.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { INITIAL_PHASE, PHASE_TRANSITIONS, SUPERVISOR_PHASES, canStop, nextPhase, type PhaseRecord } from "../../src/supervisor/phase.ts";

const EXPECTED: Record<string, string[]> = {
  booting: ["running", "stopping", "quarantined", "exited"],
  running: ["paused", "stopping", "quarantined", "exited"],
  paused: ["running", "stopping", "quarantined", "exited"],
  stopping: ["stopping", "exited"],
  quarantined: ["stopping", "exited"],
  exited: [],
};

const invariant = (re: RegExp) => (e: Error & { code?: string }) => e.code === "SUPERVISOR_INVARIANT" && re.test(e.message);

test("supervisor phase: the table is exactly the documented one, and every phase has a row", () => {
  assert.deepEqual(Object.keys(PHASE_TRANSITIONS).sort(), [...SUPERVISOR_PHASES].sort());
  for (const [from, to] of Object.entries(EXPECTED)) assert.deepEqual([...PHASE_TRANSITIONS[from as keyof typeof PHASE_TRANSITIONS]].sort(), [...to].sort(), from);
});

test("supervisor phase: a boot, a workload's end and the exit carry their causes and final state", () => {
  let p: PhaseRecord = INITIAL_PHASE;
  p = nextPhase(p, "running", "booted");
  assert.deepEqual(p, { phase: "running", stopCause: undefined, final: undefined, cause: "booted" });
  p = nextPhase(p, "stopping", "workload");
  assert.equal(p.stopCause, "workload");
  p = nextPhase(p, "exited", "exit", { state: "stopped", detail: "workload exited with code 0" });
  assert.deepEqual(p, { phase: "exited", stopCause: "workload", final: { state: "stopped", detail: "workload exited with code 0" }, cause: "exit" });
  assert.throws(() => nextPhase(p, "running", "booted"), invariant(/not in the phase table \(from exited: nothing\)/));
});

test("supervisor phase: pairs outside the table and wrong causes are refused with SUPERVISOR_INVARIANT", () => {
  const running = nextPhase(INITIAL_PHASE, "running", "booted");
  const quarantined = nextPhase(running, "quarantined", "quarantine");
  assert.throws(() => nextPhase(quarantined, "running", "resume"), invariant(/not in the phase table/));
  assert.throws(() => nextPhase(INITIAL_PHASE, "paused", "pause"), invariant(/not in the phase table/));
  assert.throws(() => nextPhase(running, "stopping", "quarantine"), invariant(/needs a stop cause/));
  assert.throws(() => nextPhase(running, "quarantined", "kill"), invariant(/only stopping takes one/));
  assert.throws(() => nextPhase(running, "running", "booted"), invariant(/not in the phase table/));
  assert.throws(() => nextPhase(running, "paused", "resume"), invariant(/paused is entered by pause/));
  assert.throws(() => nextPhase(running, "exited", "exit"), invariant(/needs its final state/));
  assert.throws(() => nextPhase(running, "exited", "exit", { state: "failed", detail: " " }), invariant(/needs a detail/));
  assert.throws(() => nextPhase(quarantined, "stopping", "boot-failed"), invariant(/only a boot can fail/));
  // pause/resume round trip
  const paused = nextPhase(running, "paused", "pause");
  assert.equal(nextPhase(paused, "running", "resume").phase, "running");
  assert.throws(() => nextPhase(paused, "running", "booted"), invariant(/only a booting supervisor boots/));
});

test("supervisor phase: a stop only escalates (halt -> halt-timeout -> kill), never back", () => {
  const running = nextPhase(INITIAL_PHASE, "running", "booted");
  const halting = nextPhase(running, "stopping", "halt");
  assert.ok(canStop(halting, "halt-timeout") && canStop(halting, "kill") && canStop(halting, "stop"));
  const timedOut = nextPhase(halting, "stopping", "halt-timeout");
  assert.equal(timedOut.stopCause, "halt-timeout");
  assert.equal(canStop(timedOut, "halt"), false);
  const killed = nextPhase(timedOut, "stopping", "kill");
  for (const c of ["halt", "stop", "workload", "halt-timeout", "kill", "boot-failed"] as const) assert.equal(canStop(killed, c), false, c);
  assert.throws(() => nextPhase(killed, "stopping", "halt"), invariant(/a kill stop cannot become halt/));
  const workload = nextPhase(running, "stopping", "workload");
  assert.equal(canStop(workload, "halt"), false);
  assert.equal(canStop(workload, "kill"), true);
  const bootFailed = nextPhase(INITIAL_PHASE, "stopping", "boot-failed");
  assert.equal(canStop(bootFailed, "kill"), false);
  const exited = nextPhase(killed, "exited", "exit", { state: "stopped", detail: "killed" });
  assert.equal(canStop(exited, "kill"), false);
});
