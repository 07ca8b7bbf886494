import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, mkdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { isMicroagentError } from "../../src/contract/errors.ts";
import { workspacePaths } from "../../src/workspace/paths.ts";
import { acquireLock } from "../../src/workspace/lock.ts";
import { readEventsFile, WORKSPACE_STATES, type WorkspaceState } from "../../src/workspace/events.ts";
import { TRANSITIONS, assertCanStart, canTransition, readState, recordInitialState, transition } from "../../src/workspace/state.ts";

/** The table the product promises (shared design), written out independently of TRANSITIONS. */
const EXPECTED: Record<WorkspaceState, WorkspaceState[]> = {
  prepared: ["starting"],
  starting: ["running", "stopping", "stopped", "failed", "quarantined"],
  running: ["paused", "stopping", "stopped", "failed", "quarantined"],
  paused: ["running", "stopping", "stopped", "failed", "quarantined"],
  stopping: ["halted", "stopped", "failed"],
  halted: ["starting"],
  stopped: ["starting"],
  failed: ["starting"],
  quarantined: ["stopping", "halted", "stopped"],
};

async function scratch() {
  const stateDir = await mkdtemp(join(tmpdir(), "ws-state-"));
  return stateDir;
}

/** A workspace dir whose current state is `state` (written through the API from prepared). */
async function workspaceIn(stateDir: string, name: string, state: WorkspaceState) {
  const paths = workspacePaths(stateDir, name);
  await mkdir(paths.dir, { recursive: true, mode: 0o700 });
  const lock = await acquireLock(paths.lock);
  try {
    await recordInitialState(paths, { lock, detail: "test" });
  } finally {
    await lock.release();
  }
  const route: Record<WorkspaceState, WorkspaceState[]> = {
    prepared: [],
    starting: ["starting"],
    running: ["starting", "running"],
    paused: ["starting", "running", "paused"],
    stopping: ["starting", "running", "stopping"],
    halted: ["starting", "running", "stopping", "halted"],
    stopped: ["starting", "running", "stopping", "stopped"],
    failed: ["starting", "failed"],
    quarantined: ["starting", "running", "quarantined"],
  };
  for (const s of route[state]) await transition(paths, s, { detail: `to ${s}` });
  return paths;
}

test("workspace: the transition table matches the product's lifecycle", () => {
  assert.deepEqual(Object.keys(TRANSITIONS).sort(), [...WORKSPACE_STATES].sort());
  for (const from of WORKSPACE_STATES) assert.deepEqual([...TRANSITIONS[from]].sort(), [...EXPECTED[from]].sort(), `from ${from}`);
});

test("workspace: every allowed and refused pair through transition()", async () => {
  const stateDir = await scratch();
  try {
    let n = 0;
    for (const from of WORKSPACE_STATES) {
      for (const to of WORKSPACE_STATES) {
        const paths = await workspaceIn(stateDir, `w${n++}`, from);
        const before = (await readEventsFile(paths.events)).length;
        const allowed = EXPECTED[from].includes(to);
        assert.equal(canTransition(from, to), allowed, `${from} -> ${to}`);
        if (allowed) {
          const rec = await transition(paths, to, { detail: "why", identity: { runtimeId: "r1", requestId: "q1" } });
          assert.equal(rec.state, to);
          const events = await readEventsFile(paths.events);
          assert.equal(events.length, before + 1);
          assert.deepEqual(events.at(-1), rec);
          assert.deepEqual(rec.identity, { workspace: paths.name, runtimeId: "r1", requestId: "q1" });
          assert.deepEqual(JSON.parse(await readFile(paths.state, "utf8")), rec);
        } else {
          await assert.rejects(transition(paths, to, { detail: "why" }), (e: unknown) => {
            assert.ok(isMicroagentError(e));
            const expected = from === "quarantined" && to === "starting" ? "WORKSPACE_QUARANTINED" : "WORKSPACE_INVALID_TRANSITION";
            assert.equal(e.code, expected, `${from} -> ${to}`);
            assert.equal(e.kind, "conflict");
            return true;
          });
          assert.equal((await readEventsFile(paths.events)).length, before, "a refused transition appends nothing");
          assert.equal((await readState(paths))?.state, from);
        }
      }
    }
  } finally {
    await rm(stateDir, { recursive: true, force: true });
  }
});

test("workspace: transition invariants (detail, identity, compare-and-set, monotonic time)", async () => {
  const stateDir = await scratch();
  try {
    const paths = await workspaceIn(stateDir, "inv", "running");
    await assert.rejects(transition(paths, "failed", {}), /must carry a detail/);
    await assert.rejects(transition(paths, "failed", { detail: "x", identity: { workspace: "other" } }), /names workspace other/);
    await assert.rejects(transition(paths, "stopping", { expectFrom: "prepared" }), (e: unknown) => isMicroagentError(e) && e.code === "WORKSPACE_STATE_CHANGED");
    const past = new Date(Date.now() - 3600_000);
    const rec = await transition(paths, "stopping", { observedAt: past });
    const events = await readEventsFile(paths.events);
    assert.ok(rec.observedAt > (events.at(-2)?.observedAt ?? ""), "observedAt never goes backwards");
    const other = await workspaceIn(stateDir, "inv2", "running");
    const foreign = await acquireLock(other.lock);
    try {
      await assert.rejects(transition(paths, "halted", { lock: foreign }), /not held on this workspace/);
    } finally {
      await foreign.release();
    }
  } finally {
    await rm(stateDir, { recursive: true, force: true });
  }
});

test("workspace: start of a quarantined workspace is refused with the seed's remedy", () => {
  assert.throws(
    () => assertCanStart("box", "quarantined"),
    (e: unknown) => isMicroagentError(e) && e.code === "WORKSPACE_QUARANTINED" && /halt box/.test(e.remediation) && /then `microagent start box`/.test(e.remediation),
  );
  assert.throws(() => assertCanStart("box", "running"), /already running/);
  assert.throws(
    () => assertCanStart("box", "paused"),
    (e: unknown) => isMicroagentError(e) && e.code === "WORKSPACE_PAUSED" && e.kind === "conflict" && /microagent resume box/.test(e.remediation),
  );
  for (const s of ["prepared", "halted", "stopped", "failed"] as const) assertCanStart("box", s);
});

test("workspace: readState prefers a newer last event over a stale state.json", async () => {
  const stateDir = await scratch();
  try {
    const paths = await workspaceIn(stateDir, "crash", "running");
    const before = await readFile(paths.state, "utf8");
    await transition(paths, "stopping");
    // Simulate a crash between the event append and the state.json rewrite.
    const { writeFile } = await import("node:fs/promises");
    await writeFile(paths.state, before);
    assert.equal((await readState(paths))?.state, "stopping");
  } finally {
    await rm(stateDir, { recursive: true, force: true });
  }
});
