/**
 * serial.log as the supervisor writes it (reliability D3): capped with one rotated predecessor,
 * never blocking its producer, bounded in memory, with an in-memory tail for death messages.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { appendFileSync, mkdtempSync, mkdirSync, readFileSync, renameSync, statSync, existsSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { tmpdir } from "node:os";
import { SerialLog } from "../../src/supervisor/serial-log.ts";
import { readRotatedLog, followBytes } from "../../src/workspace/serial.ts";

function dir(): string {
  return mkdtempSync(join(tmpdir(), "serial-log-"));
}

test("serial log: a flood stays under the cap (current + one rotated file), and the newest bytes are kept", async () => {
  const path = join(dir(), "serial.log");
  const log = await SerialLog.create(path, { maxBytes: 64 * 1024, pendingMaxBytes: 1 << 30 });
  let written = 0;
  for (let i = 0; i < 2000; i++) {
    const line = Buffer.from(`line ${String(i).padStart(6, "0")} ${"x".repeat(80)}\n`);
    log.write(line);
    written += line.length;
  }
  await log.close();
  assert.ok(written > 2 * 64 * 1024, "the test wrote more than the cap allows");
  assert.ok(statSync(path).size <= 64 * 1024);
  assert.ok(statSync(`${path}.1`).size <= 64 * 1024);
  const all = (await readRotatedLog(path)).toString();
  assert.ok(all.length <= 128 * 1024);
  assert.match(all, /line 001999 x+\n$/, "the newest output is kept");
  assert.doesNotMatch(all, /line 000000 /, "the oldest output was rotated away");
  // The two files join without a gap: every line in them is whole and consecutive.
  const nums = all.trim().split("\n").filter((l) => /^line \d{6} x{80}$/.test(l)).map((l) => Number(l.slice(5, 11)));
  assert.ok(nums.length > 100);
  for (let i = 1; i < nums.length; i++) assert.equal(nums[i], (nums[i - 1] as number) + 1);
  assert.match(log.tail(), /line 001999/);
});

test("serial log: a new boot starts a fresh log and drops the old rotated part", async () => {
  const d = dir();
  const path = join(d, "serial.log");
  writeFileSync(path, "old boot\n");
  writeFileSync(`${path}.1`, "older\n");
  const log = await SerialLog.create(path);
  log.write(Buffer.from("new boot\n"));
  await log.close();
  assert.equal(readFileSync(path, "utf8"), "new boot\n");
  assert.equal(existsSync(`${path}.1`), false);
});

test("serial log: a writer that cannot keep up drops and counts instead of queueing without bound", async () => {
  const path = join(dir(), "serial.log");
  const log = await SerialLog.create(path, { pendingMaxBytes: 4096, tailBytes: 1024 });
  // Synchronous writes: the disk loop gets no turn, as with a stalled disk.
  for (let i = 0; i < 1000; i++) log.write(Buffer.alloc(1000, 0x61));
  assert.ok(log.droppedTotal >= 1000 * 1000 - 4096 - 1000, `dropped ${log.droppedTotal}`);
  assert.ok(log.tail().length <= 2 * 1024 + 1000, "the in-memory tail is bounded");
  log.write(Buffer.from("after\n"));
  await log.close();
  const text = readFileSync(path, "utf8");
  assert.match(text, /\[microagent: \d+ bytes of serial output dropped/);
  assert.match(text, /after\n$/);
});

test("serial log: a failing disk is reported once and never throws at the producer", async () => {
  const d = dir();
  const path = join(d, "serial.log");
  const errors: string[] = [];
  const log = await SerialLog.create(path, { maxBytes: 1024, onError: (e) => errors.push(e.message) });
  // Rotation renames serial.log onto serial.log.1: a non-empty directory there makes every rotation
  // fail (even for root), as a broken disk would.
  mkdirSync(join(`${path}.1`, "x"), { recursive: true });
  for (let i = 0; i < 10; i++) log.write(Buffer.alloc(512, 0x62));
  await log.flush();
  for (let i = 0; i < 10; i++) log.write(Buffer.alloc(512, 0x62));
  await log.close();
  assert.equal(errors.length, 1, errors.join("; "));
  assert.ok(log.droppedTotal > 0);
  assert.ok(statSync(path).size <= 1024);
});

test("serial log: follow sees every byte across a rotation", async () => {
  const path = join(dir(), "serial.log");
  const log = await SerialLog.create(path, { maxBytes: 2048, pendingMaxBytes: 1 << 20 });
  const ac = new AbortController();
  let seen = "";
  const following = (async () => {
    for await (const c of followBytes(path, { pollMs: 5, rotatedPath: `${path}.1`, signal: ac.signal })) seen += c.toString();
  })();
  let expected = "";
  for (let i = 0; i < 30; i++) {
    const chunk = `${String(i).padStart(3, "0")}${"y".repeat(96)}\n`;
    expected += chunk;
    log.write(Buffer.from(chunk));
    await log.flush();
    await new Promise((r) => setTimeout(r, 15));
  }
  await log.close();
  await new Promise((r) => setTimeout(r, 50));
  ac.abort();
  await following;
  assert.equal(seen, expected);
});

test("serial log: follow keeps its place while a rotation leaves no serial.log for a moment", async () => {
  const d = dir();
  const path = join(d, "serial.log");
  writeFileSync(path, "first part\n");
  const ac = new AbortController();
  let seen = "";
  const following = (async () => {
    for await (const c of followBytes(path, { pollMs: 5, rotatedPath: `${path}.1`, signal: ac.signal })) seen += c.toString();
  })();
  await new Promise((r) => setTimeout(r, 40));
  // The writer's rotation, with the window between the rename and the new file held open on purpose:
  // the follower polls several times while serial.log does not exist.
  appendFileSync(path, "end of first\n");
  renameSync(path, `${path}.1`);
  await new Promise((r) => setTimeout(r, 60));
  writeFileSync(path, "second part\n");
  await new Promise((r) => setTimeout(r, 60));
  ac.abort();
  await following;
  assert.equal(seen, "first part\nend of first\nsecond part\n");
});
