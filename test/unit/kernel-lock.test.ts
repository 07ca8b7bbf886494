import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { acquireLock } from "../../src/kernel/lock.ts";
import { isMicroagentError } from "../../src/contract/errors.ts";

test("kernel lock: exclusive, waits for the holder, takes over a dead owner's lock, times out typed", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "kernel-lock-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, "sub", ".lock-linux-qemu-amd64");

  const release = await acquireLock(path);
  assert.equal((JSON.parse(readFileSync(path, "utf8")) as { pid: number }).pid, process.pid);
  // A second taker waits until the first releases.
  let waitedFor: number | undefined;
  const order: string[] = [];
  const second = acquireLock(path, { onWait: (pid) => (waitedFor = pid) }).then((r) => (order.push("second"), r));
  await new Promise((r) => setTimeout(r, 300));
  order.push("first-release");
  await release();
  const release2 = await second;
  assert.deepEqual(order, ["first-release", "second"]);
  assert.equal(waitedFor, process.pid);
  await assert.rejects(acquireLock(path, { timeoutMs: 250 }), (e: unknown) => isMicroagentError(e) && e.code === "KERNEL_INSTALL_LOCKED" && e.retryable);
  await release2();
  assert.ok(!existsSync(path));

  // A lock left by a process that died is stale.
  const dead = spawnSync(process.execPath, ["-e", "process.stdout.write(String(process.pid))"]).stdout.toString();
  writeFileSync(path, `${dead}\n`);
  const release3 = await acquireLock(path, { timeoutMs: 2000 });
  assert.equal((JSON.parse(readFileSync(path, "utf8")) as { pid: number }).pid, process.pid);
  await release3();
});
