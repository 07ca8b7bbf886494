/**
 * D12: a runtime.json that names pids without their start times (hand-edited, or from another tool)
 * must never get an unrelated process signalled: not by `list`/`status` reconciling a dead
 * supervisor's "VMM", and not by `start` waiting for a "previous supervisor" to go away. Real CLI,
 * real boot, live unrelated `sleep` processes that must survive.
 */
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { tmpdir } from "node:os";
import { workspaceFixture, realProviders, type WorkspaceFixture } from "../helpers/workspace.ts";
import { reapVmProcesses } from "../helpers/global-setup.ts";
import { createWorkspace } from "../../src/workspace/create.ts";
import { deleteWorkspace } from "../../src/workspace/delete.ts";
import { workspacePaths } from "../../src/workspace/paths.ts";
import { readState } from "../../src/workspace/state.ts";
import { stopWorkspace } from "../../src/api/lifecycle.ts";
import { processAlive, processStartTime } from "../../src/util/process.ts";
import { runCli } from "../helpers/cli.ts";

let fx: WorkspaceFixture;
let imageRef: string;
const strangers: ChildProcess[] = [];

before(async () => {
  fx = await workspaceFixture("strangers");
  imageRef = await fx.image("strangers/busybox:1");
  process.env.MICROAGENT_INSECURE_REGISTRIES = fx.registry.host;
  process.env.MICROAGENT_KERNEL_CACHE ??= join(tmpdir(), "microagent-test-kernel-cache");
});

after(async () => {
  for (const s of strangers) s.kill("SIGKILL");
  const left = await reapVmProcesses(fx.stateDir);
  await fx.cleanup();
  assert.deepEqual(left, [], "a qemu or supervisor process survived the suite");
});

function stranger(): number {
  const p = spawn("sleep", ["300"], { stdio: "ignore", detached: true });
  strangers.push(p);
  return p.pid as number;
}
const alive = (pid: number) => processAlive(pid, processStartTime(pid));

/** What an edited runtime.json looks like: pids, no start times. */
function editRuntime(name: string, state: string, supervisorPid: number, vmmPid: number): void {
  const paths = workspacePaths(fx.stateDir, name);
  writeFileSync(
    paths.runtime,
    JSON.stringify({ runtimeId: "r", supervisorPid, vmmPid, backend: "linux-qemu", accel: "tcg", sockets: { control: "/tmp/none.sock" }, startedAt: "2026-01-01T00:00:00Z" }),
  );
  const st: unknown = JSON.parse(readFileSync(paths.state, "utf8"));
  writeFileSync(paths.state, JSON.stringify({ ...(st as object), state }));
}

test("workspace: list, status and start never kill unrelated processes named by an edited runtime.json", { timeout: 600_000 }, async () => {
  const name = "edited";
  await createWorkspace({ name, stateDir: fx.stateDir, image: imageRef, providers: realProviders(), profile: "tiny" });
  try {
    // 1. "running" with a dead supervisor and a stranger as the VMM: list reconciles to failed.
    const vmm = stranger();
    editRuntime(name, "running", 999_999, vmm);
    const listed = await runCli(["--json", "--state-dir", fx.stateDir, "list"]);
    assert.equal(listed.code, 0, listed.err);
    assert.equal(JSON.parse(listed.out).workspaces[0].state, "failed");
    assert.match((await readState(workspacePaths(fx.stateDir, name)))?.detail ?? "", new RegExp(`VMM pid ${vmm} now belongs to another process \\(not signalled\\)`));
    assert.ok(alive(vmm), "list killed an unrelated process");
    editRuntime(name, "running", 999_999, vmm);
    assert.equal((await runCli(["--state-dir", fx.stateDir, "status", name])).code, 0);
    assert.ok(alive(vmm), "status killed an unrelated process");

    // 2. A settled workspace whose runtime.json names strangers as the previous boot's processes:
    // start does not wait 5 s for them and kill them; it boots.
    const sup = stranger();
    editRuntime(name, "failed", sup, vmm);
    const t0 = Date.now();
    const started = await runCli(["--json", "--state-dir", fx.stateDir, "start", name]);
    assert.equal(started.code, 0, started.out + started.err);
    assert.equal(JSON.parse(started.out).state, "running");
    assert.ok(alive(sup) && alive(vmm), "start killed an unrelated process");
    process.stderr.write(`# start with stranger pids recorded: ${Date.now() - t0} ms\n`);

    // 3. The real processes, recorded without start times: still recognised by their command lines
    // (the supervisor's argument is the workspace dir, QEMU's disk is inside it), so the workspace
    // stays running and kill ends exactly them.
    const paths = workspacePaths(fx.stateDir, name);
    const real = JSON.parse(readFileSync(paths.runtime, "utf8")) as Record<string, unknown>;
    delete real.supervisorStartTime;
    delete real.vmmStartTime;
    writeFileSync(paths.runtime, JSON.stringify(real));
    const relisted = await runCli(["--json", "--state-dir", fx.stateDir, "list"]);
    assert.equal(JSON.parse(relisted.out).workspaces[0].state, "running", relisted.out);
    const killed = await runCli(["--json", "--state-dir", fx.stateDir, "kill", name]);
    assert.equal(killed.code, 0, killed.out + killed.err);
    assert.equal(JSON.parse(killed.out).state, "stopped");
    for (const pid of [real.supervisorPid, real.vmmPid] as number[]) {
      for (let i = 0; i < 100 && alive(pid); i++) await new Promise((r) => setTimeout(r, 50));
      assert.equal(alive(pid), false, `pid ${pid} of the workspace survived kill`);
    }
    assert.ok(alive(sup) && alive(vmm));
  } finally {
    await deleteWorkspace(name, { stateDir: fx.stateDir, force: true, kill: async () => void (await stopWorkspace(name, "kill", { stateDir: fx.stateDir })) });
  }
});
