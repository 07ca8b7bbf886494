/**
 * A supervisor that dies under a request (reliability observation): the caller gets the workspace's
 * reconciled state and `retryable: false`, not a retryable SUPERVISOR_UNREACHABLE that can only fail again.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createServer } from "node:net";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { workspacePaths } from "../../src/workspace/paths.ts";
import { acquireLock } from "../../src/workspace/lock.ts";
import { readState, recordInitialState, transition } from "../../src/workspace/state.ts";
import { writeRuntime } from "../../src/workspace/runtime.ts";
import { processStartTime } from "../../src/util/process.ts";
import { supervisorFor } from "../../src/api/lifecycle.ts";

test("lifecycle: a supervisor that dies mid-request is reported as the reconciled state, not retryable", async () => {
  const stateDir = await mkdtemp(join(tmpdir(), "ws-unreach-"));
  // A stand-in supervisor process, and a control socket that kills it when a request arrives.
  const fake = spawn("sleep", ["600"], { stdio: "ignore" });
  const socketPath = join(stateDir, "control.sock");
  const server = createServer((conn) => {
    conn.once("data", () => {
      fake.kill("SIGKILL");
      conn.destroy();
    });
  });
  await new Promise<void>((r) => server.listen(socketPath, r));
  try {
    const paths = workspacePaths(stateDir, "gone");
    await mkdir(paths.dir, { recursive: true });
    await writeFile(paths.manifest, "{}");
    const lock = await acquireLock(paths.lock);
    await recordInitialState(paths, { lock });
    await lock.release();
    await transition(paths, "starting");
    await transition(paths, "running");
    const pid = fake.pid as number;
    await writeRuntime(paths, {
      runtimeId: "rt-1",
      supervisorPid: pid,
      ...(processStartTime(pid) !== undefined ? { supervisorStartTime: processStartTime(pid) } : {}),
      backend: "linux-qemu",
      accel: "tcg",
      sockets: { control: socketPath },
      startedAt: new Date().toISOString(),
    });
    const { client } = await supervisorFor("gone", { stateDir });
    await assert.rejects(client.exec({ argv: ["true"] }), (e: Error & { code?: string; retryable?: boolean }) => {
      assert.equal(e.code, "NOT_RUNNING", e.message);
      assert.equal(e.retryable, false);
      assert.match(e.message, /workspace gone is failed: its supervisor is gone/);
      assert.match(e.message, /supervisor pid \d+ died/);
      return true;
    });
    assert.equal((await readState(paths))?.state, "failed");
  } finally {
    fake.kill("SIGKILL");
    server.close();
    await rm(stateDir, { recursive: true, force: true });
  }
});
