import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { stopRecordedProcesses } from "../../src/util/kill.ts";
import { processAlive, processStartTime } from "../../src/util/process.ts";

/** A detached shell (its own group) with a background child; resolves the two pids. */
async function family(marker: string): Promise<{ leader: number; child: number }> {
  const p = spawn("/bin/sh", ["-c", "sleep 60 & echo $!; wait", marker], { detached: true, stdio: ["ignore", "pipe", "ignore"] });
  p.unref();
  const child = await new Promise<number>((resolve) => p.stdout.once("data", (d: Buffer) => resolve(Number(d.toString().trim()))));
  return { leader: p.pid as number, child };
}

test("util-kill: a recorded group leader is killed with its group; the wait covers both", async () => {
  const { leader, child } = await family("/x");
  const out = await stopRecordedProcesses([{ pid: leader, startTime: processStartTime(leader), group: true }]);
  assert.deepEqual(out, { signalled: [leader], survivors: [], refused: [] });
  assert.equal(processAlive(leader), false);
  for (let i = 0; i < 100 && processAlive(child); i++) await new Promise((r) => setTimeout(r, 20));
  assert.equal(processAlive(child), false, "the group member went too");
});

test("util-kill: a pid whose start time or command line does not match the record is never signalled", async () => {
  const dir = await mkdtemp(join(tmpdir(), "util-kill-"));
  const { leader, child } = await family(join(dir, "other"));
  try {
    const start = processStartTime(leader) as number;
    // A reused pid: the recorded start time differs.
    assert.deepEqual(await stopRecordedProcesses([{ pid: leader, startTime: start + 1, group: true }], { waitMs: 50 }), { signalled: [], survivors: [], refused: [] });
    // No start time: only a command line naming the marker is trusted ("<dir>/other" is not below "<dir>/ws").
    assert.deepEqual((await stopRecordedProcesses([{ pid: leader }], { marker: join(dir, "ws"), waitMs: 50 })).signalled, []);
    assert.equal(processAlive(leader), true);
    // ...and one that does name it is.
    const out = await stopRecordedProcesses([{ pid: leader, group: true }], { marker: dir, graceMs: 1000 });
    assert.deepEqual(out.signalled, [leader]);
    assert.equal(processAlive(leader), false);
  } finally {
    for (const pid of [child, leader]) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        // gone
      }
    }
    await rm(dir, { recursive: true, force: true });
  }
});
