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
import { processAlive, processStartTime } from "../../src/util/process.ts";

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
