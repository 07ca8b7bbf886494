import { test } from "node:test";
import assert from "node:assert/strict";
import { exitCodeFor as execExitCode, workloadExitCode } from "../../src/api/exit-code.ts";
import { generateRunName } from "../../src/api/run.ts";
import { parseDurationMs } from "../../src/cli/duration.ts";
import { WORKSPACE_NAME_PATTERN } from "../../src/workspace/paths.ts";

test("supervisor: exec statuses map to the documented exit codes", () => {
  const table: Array<[Parameters<typeof execExitCode>[0], number]> = [
    [{ status: "exited", exitCode: 0 }, 0],
    [{ status: "exited", exitCode: 5 }, 5],
    [{ status: "exited", exitCode: 300 }, 255],
    [{ status: "exited", exitCode: -1 }, 1],
    [{ status: "timed_out" }, 124],
    [{ status: "failed_to_start" }, 127],
    [{ status: "signaled", signal: "SIGKILL" }, 137],
    [{ status: "signaled", signal: "TERM" }, 143],
    [{ status: "signaled", signal: "9" }, 137],
  ];
  for (const [r, code] of table) assert.equal(execExitCode(r), code, JSON.stringify(r));
});

test("supervisor: run exit codes follow the workload result", () => {
  assert.equal(workloadExitCode({ ran: true, exitCode: 0 }), 0);
  assert.equal(workloadExitCode({ ran: true, exitCode: 7 }), 7);
  assert.equal(workloadExitCode({ ran: true, signal: "SIGTERM" }), 143);
  assert.equal(workloadExitCode({ ran: true, startError: "ENOENT: exec /x" }), 127);
});

test("supervisor: durations and run names", () => {
  assert.equal(parseDurationMs("30"), 30_000);
  assert.equal(parseDurationMs("500ms"), 500);
  assert.equal(parseDurationMs("1.5s"), 1500);
  assert.equal(parseDurationMs("5m"), 300_000);
  assert.equal(parseDurationMs("1h"), 3_600_000);
  assert.throws(() => parseDurationMs("soon"), (e: Error & { code?: string }) => e.code === "INVALID_ARGUMENT" && /soon/.test(e.message));
  for (let i = 0; i < 50; i++) {
    const n = generateRunName();
    assert.match(n, /^run-[a-z]+-[a-z]+-[0-9a-f]{4}$/);
    assert.match(n, WORKSPACE_NAME_PATTERN);
  }
});
