import { test } from "node:test";
import assert from "node:assert/strict";
import { execSync } from "node:child_process";
import { appendFile, mkdir, mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { isMicroagentError } from "../../src/contract/errors.ts";
import { workspacePaths } from "../../src/workspace/paths.ts";
import { acquireLock } from "../../src/workspace/lock.ts";
import { recordInitialState, transition } from "../../src/workspace/state.ts";
import { appendEvent, followEventsFile, lastEvent, parseEvents, readEventsFile, type WorkspaceEvent } from "../../src/workspace/events.ts";

const ev = (state: WorkspaceEvent["state"], i: number): WorkspaceEvent => ({
  state,
  observedAt: new Date(1700000000000 + i).toISOString(),
  detail: `step ${i}`,
  identity: { workspace: "w", runtimeId: "r", requestId: `q${i}` },
});

test("workspace: events append one line each, read back oldest first, file is 0600", async () => {
  const dir = await mkdtemp(join(tmpdir(), "ws-ev-"));
  const path = join(dir, "events.jsonl");
  try {
    assert.deepEqual(await readEventsFile(path), []);
    assert.equal(await lastEvent(path), undefined);
    const all = [ev("prepared", 0), ev("starting", 1), ev("running", 2)];
    for (const e of all) await appendEvent(path, e);
    assert.deepEqual(await readEventsFile(path), all);
    assert.deepEqual(await lastEvent(path), all[2]);
    assert.equal((await stat(path)).mode & 0o777, 0o600);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("workspace: a torn last line is ignored; a corrupt middle line is an error naming the line", async () => {
  assert.equal(parseEvents(`${JSON.stringify(ev("prepared", 0))}\n{"state":"star`).length, 1);
  assert.throws(
    () => parseEvents(`${JSON.stringify(ev("prepared", 0))}\nnot json\n${JSON.stringify(ev("starting", 1))}\n`, "x.jsonl"),
    (e: unknown) => isMicroagentError(e) && e.code === "WORKSPACE_CORRUPT" && /line 2/.test(e.message),
  );
  assert.throws(() => parseEvents(`{"state":"flying","observedAt":"t","detail":"","identity":{"workspace":"w"}}\n`), /line 1 is not a workspace event/);
});

test("workspace: lastEvent reads only the tail of a long log", async () => {
  const dir = await mkdtemp(join(tmpdir(), "ws-ev-"));
  const path = join(dir, "events.jsonl");
  try {
    const lines = [];
    for (let i = 0; i < 2000; i++) lines.push(JSON.stringify(ev(i % 2 ? "running" : "starting", i)));
    await appendFile(path, `${lines.join("\n")}\n`);
    assert.equal((await lastEvent(path))?.detail, "step 1999");
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("workspace: follow yields history then new events and ends at a new settled state", async () => {
  const dir = await mkdtemp(join(tmpdir(), "ws-ev-"));
  const path = join(dir, "events.jsonl");
  try {
    await appendEvent(path, ev("prepared", 0));
    const seen: string[] = [];
    const follower = (async () => {
      for await (const e of followEventsFile(path, { pollMs: 10 })) seen.push(e.state);
    })();
    await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(seen, ["prepared"], "history does not end the follow");
    await appendEvent(path, ev("starting", 1));
    await appendEvent(path, ev("running", 2));
    await new Promise((r) => setTimeout(r, 50));
    await appendEvent(path, ev("stopping", 3));
    await appendEvent(path, ev("stopped", 4));
    await appendEvent(path, ev("starting", 5));
    await follower;
    assert.deepEqual(seen, ["prepared", "starting", "running", "stopping", "stopped"]);

    const ac = new AbortController();
    const got: string[] = [];
    const aborted = (async () => {
      for await (const e of followEventsFile(path, { pollMs: 10, signal: ac.signal })) got.push(e.state);
    })();
    await new Promise((r) => setTimeout(r, 40));
    ac.abort();
    await aborted;
    assert.equal(got.length, 6);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("workspace: follow with onlyNew skips the history; a re-created file is read from its start, a line split across polls whole", async () => {
  const dir = await mkdtemp(join(tmpdir(), "ws-ev-"));
  const path = join(dir, "events.jsonl");
  try {
    await appendEvent(path, ev("prepared", 0));
    await appendEvent(path, ev("stopped", 1));
    const seen: string[] = [];
    const follower = (async () => {
      for await (const e of followEventsFile(path, { pollMs: 10, onlyNew: true })) seen.push(e.state);
    })();
    await new Promise((r) => setTimeout(r, 40));
    assert.deepEqual(seen, [], "history skipped");
    // Deleted and re-created: shorter than before; then a line written in two halves.
    await writeFile(path, "");
    await new Promise((r) => setTimeout(r, 40));
    const line = `${JSON.stringify(ev("starting", 2))}\n`;
    await appendFile(path, line.slice(0, 20));
    await new Promise((r) => setTimeout(r, 40));
    await appendFile(path, line.slice(20));
    await appendEvent(path, ev("halted", 3));
    await follower;
    assert.deepEqual(seen, ["starting", "halted"]);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("workspace: a damaged events line comes with a repair hint that works (the workspace need not be deleted)", async () => {
  const dir = await mkdtemp(join(tmpdir(), "ws-ev-"));
  try {
    const paths = workspacePaths(dir, "hurt");
    await mkdir(paths.dir, { recursive: true });
    const lock = await acquireLock(paths.lock);
    await recordInitialState(paths, { lock });
    await lock.release();
    await transition(paths, "starting");
    await transition(paths, "failed", { detail: "boot failed" });
    // One bad line in the middle, as a stray edit or a disk error leaves it.
    const lines = (await readFile(paths.events, "utf8")).split("\n");
    lines.splice(2, 0, "garbage {");
    await writeFile(paths.events, lines.join("\n"));
    let hint = "";
    await assert.rejects(readEventsFile(paths.events), (e: unknown) => {
      assert.ok(isMicroagentError(e));
      assert.equal(e.code, "WORKSPACE_CORRUPT");
      hint = e.remediation ?? "";
      return true;
    });
    assert.match(hint, /Line 3 of the workspace's event history is damaged; the disk and the other events are intact/);
    const sed = /`(sed -i '3d' '[^`]+')`/.exec(hint)?.[1];
    assert.ok(sed, hint);
    execSync(sed);
    assert.deepEqual((await readEventsFile(paths.events)).map((e) => e.state), ["prepared", "starting", "failed"]);
    assert.equal((await transition(paths, "starting")).state, "starting");
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
