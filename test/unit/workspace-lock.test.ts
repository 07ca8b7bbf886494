import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { isMicroagentError } from "../../src/contract/errors.ts";
import { acquireLock, readLockRecord, withLock } from "../../src/workspace/lock.ts";
import { processStartTime } from "../../src/util/process.ts";

const LOCK_MODULE = new URL("../../src/workspace/lock.ts", import.meta.url).href;

/** A second real process running `body` (ESM, with acquireLock/withLock in scope). */
function child(body: string): ChildProcess {
  const script = `import { acquireLock, withLock } from ${JSON.stringify(LOCK_MODULE)};\n${body}`;
  return spawn(process.execPath, ["--input-type=module", "-e", script], { stdio: ["ignore", "pipe", "pipe"] });
}

function waitForLine(proc: ChildProcess, want: string, timeoutMs = 20000): Promise<void> {
  return new Promise((resolve, reject) => {
    let out = "";
    let err = "";
    const timer = setTimeout(() => reject(new Error(`child never printed ${want}; stdout=${out} stderr=${err}`)), timeoutMs);
    proc.stderr?.on("data", (d: Buffer) => (err += d.toString()));
    proc.stdout?.on("data", (d: Buffer) => {
      out += d.toString();
      if (out.includes(want)) {
        clearTimeout(timer);
        resolve();
      }
    });
    proc.on("exit", (code) => {
      if (!out.includes(want)) {
        clearTimeout(timer);
        reject(new Error(`child exited ${code} before ${want}; stderr=${err}`));
      }
    });
  });
}

function exited(proc: ChildProcess): Promise<number | null> {
  return new Promise((r) => (proc.exitCode !== null ? r(proc.exitCode) : proc.on("exit", (c) => r(c))));
}

test("workspace: a lock held by another live process blocks, names the holder, then is acquired after release", async () => {
  const dir = await mkdtemp(join(tmpdir(), "ws-lock-"));
  const path = join(dir, "lock");
  const holder = child(`const l = await acquireLock(${JSON.stringify(path)}, { purpose: "holding for test" }); console.log("LOCKED"); await new Promise(r => setTimeout(r, 1500)); await l.release(); console.log("RELEASED");`);
  try {
    await waitForLine(holder, "LOCKED");
    const rec = await readLockRecord(path);
    assert.equal(rec?.pid, holder.pid);
    assert.equal(rec?.startTime, processStartTime(holder.pid as number));
    await assert.rejects(acquireLock(path, { timeoutMs: 100 }), (e: unknown) => {
      assert.ok(isMicroagentError(e));
      assert.equal(e.code, "WORKSPACE_LOCKED");
      assert.equal(e.kind, "conflict");
      assert.equal(e.retryable, true);
      assert.match(e.message, new RegExp(`pid ${holder.pid} \\(holding for test`));
      return true;
    });
    const t0 = Date.now();
    const mine = await acquireLock(path, { timeoutMs: 20000 });
    assert.ok(Date.now() - t0 > 200, "waited for the holder");
    assert.equal((await readLockRecord(path))?.pid, process.pid);
    await mine.release();
    assert.equal(await readLockRecord(path), undefined);
    assert.equal(await exited(holder), 0);
  } finally {
    holder.kill("SIGKILL");
    await rm(dir, { recursive: true, force: true });
  }
});

test("workspace: a lock whose holder was SIGKILLed is stale and taken over", async () => {
  const dir = await mkdtemp(join(tmpdir(), "ws-lock-"));
  const path = join(dir, "lock");
  const holder = child(`await acquireLock(${JSON.stringify(path)}, { purpose: "dies holding" }); console.log("LOCKED"); setInterval(() => {}, 1000);`);
  try {
    await waitForLine(holder, "LOCKED");
    holder.kill("SIGKILL");
    await exited(holder);
    assert.equal((await readLockRecord(path))?.pid, holder.pid, "the dead holder's lock file is still there");
    const t0 = Date.now();
    const mine = await acquireLock(path, { timeoutMs: 2000 });
    assert.ok(Date.now() - t0 < 1500, "taken over without waiting for the timeout");
    assert.equal((await readLockRecord(path))?.pid, process.pid);
    await mine.release();
  } finally {
    holder.kill("SIGKILL");
    await rm(dir, { recursive: true, force: true });
  }
});

test("workspace: a lock recorded with a reused pid (other start time) is stale", async () => {
  const dir = await mkdtemp(join(tmpdir(), "ws-lock-"));
  const path = join(dir, "lock");
  try {
    // pid 1 exists, but not with this start time: a reused pid, not the holder.
    await writeFile(path, JSON.stringify({ pid: 1, startTime: 123456789, purpose: "ghost", acquiredAt: new Date().toISOString() }));
    const mine = await acquireLock(path, { timeoutMs: 1000 });
    await mine.release();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("workspace: two processes incrementing a counter under the lock never lose an update", async () => {
  const dir = await mkdtemp(join(tmpdir(), "ws-lock-"));
  const path = join(dir, "lock");
  const counter = join(dir, "counter");
  await writeFile(counter, "0");
  const body = `import { readFile, writeFile } from "node:fs/promises";
for (let i = 0; i < 40; i++) {
  await withLock(${JSON.stringify(path)}, { timeoutMs: 30000, pollMs: 2 }, async () => {
    const n = Number(await readFile(${JSON.stringify(counter)}, "utf8"));
    await new Promise(r => setImmediate(r));
    await writeFile(${JSON.stringify(counter)}, String(n + 1));
  });
}
console.log("DONE");`;
  const a = child(body);
  const b = child(body);
  try {
    await Promise.all([waitForLine(a, "DONE", 60000), waitForLine(b, "DONE", 60000)]);
    assert.equal(Number(await readFile(counter, "utf8")), 80);
  } finally {
    a.kill("SIGKILL");
    b.kill("SIGKILL");
    await rm(dir, { recursive: true, force: true });
  }
});

test("workspace: callers in one process queue for the lock; a nested acquire times out naming the holder", async () => {
  const dir = await mkdtemp(join(tmpdir(), "ws-lock-"));
  const path = join(dir, "lock");
  try {
    await withLock(path, { purpose: "outer" }, async () => {
      await assert.rejects(acquireLock(path, { timeoutMs: 100 }), (e: unknown) => isMicroagentError(e) && e.code === "WORKSPACE_LOCKED" && /same process \(outer\)/.test(e.message));
    });
    const order: string[] = [];
    await Promise.all(
      ["a", "b", "c"].map((id) =>
        withLock(path, { purpose: id }, async () => {
          order.push(`${id}+`);
          await new Promise((r) => setTimeout(r, 20));
          order.push(`${id}-`);
        }),
      ),
    );
    assert.deepEqual(order, ["a+", "a-", "b+", "b-", "c+", "c-"]);
    assert.equal(await readLockRecord(path), undefined);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
