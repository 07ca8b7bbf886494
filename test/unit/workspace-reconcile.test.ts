import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { workspacePaths } from "../../src/workspace/paths.ts";
import { acquireLock } from "../../src/workspace/lock.ts";
import { readEventsFile } from "../../src/workspace/events.ts";
import { readState, recordInitialState, transition } from "../../src/workspace/state.ts";
import { writeRuntime, type RuntimeRecord } from "../../src/workspace/runtime.ts";
import { writeResult } from "../../src/workspace/result.ts";
import { reconcile } from "../../src/workspace/reconcile.ts";
import { isRecordedProcess, processAlive, processStartTime } from "../../src/util/process.ts";

/** A pid that existed and is now gone. */
function deadPid(): number {
  const r = spawnSync("sh", ["-c", "echo $$"], { encoding: "utf8" });
  return Number(r.stdout.trim());
}

async function running(stateDir: string, name: string) {
  const paths = workspacePaths(stateDir, name);
  await mkdir(paths.dir, { recursive: true });
  const lock = await acquireLock(paths.lock);
  await recordInitialState(paths, { lock });
  await lock.release();
  await transition(paths, "starting");
  await transition(paths, "running");
  return paths;
}

const runtime = (supervisorPid: number, extra: Partial<RuntimeRecord> = {}): RuntimeRecord => ({
  runtimeId: "rt-1",
  supervisorPid,
  backend: "linux-qemu",
  accel: "tcg",
  sockets: { control: "/tmp/x.sock" },
  startedAt: new Date().toISOString(),
  ...extra,
});

test("workspace: reconcile records failed when the supervisor pid is dead, with the reason and serial tail", async () => {
  const stateDir = await mkdtemp(join(tmpdir(), "ws-rec-"));
  try {
    const paths = await running(stateDir, "dead");
    const pid = deadPid();
    await writeRuntime(paths, runtime(pid));
    await writeFile(paths.serialLog, "boot...\r\n\u001b[0mKernel panic - not syncing: VFS\r\n");
    const out = await reconcile(paths);
    assert.equal(out.changed, true);
    assert.equal(out.state?.state, "failed");
    assert.match(out.state?.detail ?? "", new RegExp(`supervisor pid ${pid} died while the workspace was running`));
    assert.match(out.state?.detail ?? "", /Kernel panic - not syncing: VFS/);
    assert.equal(out.state?.identity.runtimeId, "rt-1");
    // Idempotent: a second read changes nothing.
    assert.equal((await reconcile(paths)).changed, false);
    assert.deepEqual((await readEventsFile(paths.events)).map((e) => e.state), ["prepared", "starting", "running", "failed"]);
  } finally {
    await rm(stateDir, { recursive: true, force: true });
  }
});

test("workspace: reconcile records stopped when the workload of this boot had exited 0", async () => {
  const stateDir = await mkdtemp(join(tmpdir(), "ws-rec-"));
  try {
    const paths = await running(stateDir, "clean");
    await writeRuntime(paths, runtime(deadPid()));
    await writeResult(paths, { runtimeId: "old-boot", status: "exited", exitCode: 0, completedAt: new Date().toISOString() });
    assert.equal((await reconcile(paths)).state?.state, "failed", "a result of an earlier boot does not count");

    const again = await running(stateDir, "clean2");
    await writeRuntime(again, runtime(deadPid()));
    await writeResult(again, { runtimeId: "rt-1", status: "exited", exitCode: 0, completedAt: new Date().toISOString() });
    const out = await reconcile(again);
    assert.equal(out.state?.state, "stopped");
    assert.match(out.state?.detail ?? "", /exited 0/);
  } finally {
    await rm(stateDir, { recursive: true, force: true });
  }
});

test("workspace: a live supervisor is trusted; starting without runtime gets a grace period", async () => {
  const stateDir = await mkdtemp(join(tmpdir(), "ws-rec-"));
  const sup = spawn("sleep", ["30"], { stdio: "ignore" });
  try {
    const paths = await running(stateDir, "live");
    await writeRuntime(paths, runtime(sup.pid as number, { supervisorStartTime: processStartTime(sup.pid as number) }));
    assert.equal((await reconcile(paths)).changed, false);
    assert.equal((await readState(paths))?.state, "running");

    const p2 = workspacePaths(stateDir, "booting");
    await mkdir(p2.dir, { recursive: true });
    const lock = await acquireLock(p2.lock);
    await recordInitialState(p2, { lock });
    await lock.release();
    await transition(p2, "starting");
    assert.equal((await reconcile(p2)).changed, false, "within the grace period");
    const late = await reconcile(p2, { now: new Date(Date.now() + 120_000) });
    assert.equal(late.state?.state, "failed");
    assert.match(late.state?.detail ?? "", /runtime.json missing/);
  } finally {
    sup.kill("SIGKILL");
    await rm(stateDir, { recursive: true, force: true });
  }
});

test("workspace: reconcile kills the orphaned VMM of a dead supervisor", async () => {
  const stateDir = await mkdtemp(join(tmpdir(), "ws-rec-"));
  const vmm = spawn("sleep", ["30"], { stdio: "ignore", detached: true });
  try {
    const paths = await running(stateDir, "orphan");
    const vmmPid = vmm.pid as number;
    await writeRuntime(paths, runtime(deadPid(), { vmmPid, vmmStartTime: processStartTime(vmmPid) }));
    const out = await reconcile(paths);
    assert.equal(out.state?.state, "failed");
    assert.match(out.state?.detail ?? "", new RegExp(`VMM pid ${vmmPid} was still running and was killed`));
    assert.equal(processAlive(vmmPid, processStartTime(vmmPid)), false);
  } finally {
    vmm.kill("SIGKILL");
    await rm(stateDir, { recursive: true, force: true });
  }
});

test("workspace: reconcile never signals a recorded pid it cannot verify (no start time, command line not ours)", async () => {
  const stateDir = await mkdtemp(join(tmpdir(), "ws-rec-"));
  // Strangers: live processes that merely hold the pids a hand-edited runtime.json names.
  const strangerVmm = spawn("sleep", ["30"], { stdio: "ignore", detached: true });
  const strangerSup = spawn("sleep", ["30"], { stdio: "ignore", detached: true });
  try {
    const vmmPid = strangerVmm.pid as number;
    const supPid = strangerSup.pid as number;
    // A dead supervisor and a "VMM" pid without its start time.
    const a = await running(stateDir, "edited-vmm");
    await writeRuntime(a, runtime(deadPid(), { vmmPid }));
    const out = await reconcile(a);
    assert.equal(out.state?.state, "failed");
    assert.match(out.state?.detail ?? "", new RegExp(`VMM pid ${vmmPid} now belongs to another process \\(not signalled\\)`));
    assert.equal(processAlive(vmmPid, processStartTime(vmmPid)), true, "reconcile killed an unrelated process");
    // A "supervisor" pid without a start time is not trusted as alive either (and not signalled).
    const b = await running(stateDir, "edited-sup");
    await writeRuntime(b, runtime(supPid, { vmmPid }));
    assert.equal((await reconcile(b)).state?.state, "failed");
    assert.equal(processAlive(supPid, processStartTime(supPid)), true);
    assert.equal(processAlive(vmmPid, processStartTime(vmmPid)), true);
  } finally {
    strangerVmm.kill("SIGKILL");
    strangerSup.kill("SIGKILL");
    await rm(stateDir, { recursive: true, force: true });
  }
});

test("workspace: a recorded pid without start time whose command line names the workspace is still ours", async () => {
  const stateDir = await mkdtemp(join(tmpdir(), "ws-rec-"));
  const paths = await running(stateDir, "named");
  // Like a real supervisor and QEMU, its argv carries the workspace directory.
  const vmm = spawn("sh", ["-c", "sleep 30; true", paths.dir], { stdio: "ignore", detached: true });
  try {
    const vmmPid = vmm.pid as number;
    await new Promise((r) => setTimeout(r, 50)); // let exec(2) replace the argv
    assert.ok(isRecordedProcess(vmmPid, undefined, paths.dir));
    assert.equal(isRecordedProcess(vmmPid, undefined, join(stateDir, "workspaces", "other")), false);
    assert.equal(isRecordedProcess(vmmPid, undefined, join(stateDir, "workspaces", "name")), false, "a prefix of the name is another workspace");
    assert.equal(isRecordedProcess(vmmPid, undefined), false, "no marker: a bare pid is never trusted");
    await writeRuntime(paths, runtime(deadPid(), { vmmPid }));
    const out = await reconcile(paths);
    assert.match(out.state?.detail ?? "", new RegExp(`VMM pid ${vmmPid} was still running and was killed`));
    for (let i = 0; i < 40 && processAlive(vmmPid); i++) await new Promise((r) => setTimeout(r, 25));
    assert.equal(processAlive(vmmPid), false);
  } finally {
    vmm.kill("SIGKILL");
    await rm(stateDir, { recursive: true, force: true });
  }
});

test("workspace: a paused workspace whose supervisor died is reconciled failed (paused is a live state)", async () => {
  const stateDir = await mkdtemp(join(tmpdir(), "ws-rec-"));
  try {
    const paths = await running(stateDir, "frozen");
    await transition(paths, "paused");
    const pid = deadPid();
    await writeRuntime(paths, runtime(pid));
    const out = await reconcile(paths);
    assert.equal(out.changed, true);
    assert.equal(out.state?.state, "failed");
    assert.match(out.state?.detail ?? "", new RegExp(`supervisor pid ${pid} died while the workspace was paused`));
    assert.deepEqual((await readEventsFile(paths.events)).map((e) => e.state), ["prepared", "starting", "running", "paused", "failed"]);
  } finally {
    await rm(stateDir, { recursive: true, force: true });
  }
});
