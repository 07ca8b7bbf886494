/**
 * Duration flags are parsed by commander argParsers (src/cli/duration.ts): a bad value is a usage
 * error, exit 2, before the command probes the host or touches the state dir.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { runCli } from "../helpers/cli.ts";
import { parseDurationMs } from "../../src/cli/duration.ts";
import { formatDurationMs } from "../../src/cli/commands/workspace-flags.ts";

test("cli-durations: a bad duration on any command exits 2 with one error and no side effect", async () => {
  const dir = await mkdtemp(join(tmpdir(), "cli-durations-"));
  const stateDir = join(dir, "state");
  try {
    const cases = [
      ["run", "--timeout", "5x", "alpine", "true"],
      ["exec", "ws", "--timeout", "soon", "--", "true"],
      ["start", "ws", "--timeout", "1y"],
      ["start", "ws", "--wait-timeout", "-1"],
      ["exec", "ws", "--timeout", "0", "--", "true"],
      ["halt", "ws", "--timeout", "x"],
      ["stop", "ws", "--timeout", "x"],
      ["wait", "ws", "--timeout", "x"],
      ["connect", "ws", "--send", "true", "--timeout", "x"],
      ["connect", "ws", "--ready-timeout", "-3"],
    ];
    for (const args of cases) {
      const r = await runCli(["--state-dir", stateDir, ...args]);
      assert.equal(r.code, 2, `${args.join(" ")}: ${r.err}`);
      assert.equal(r.out, "", args.join(" "));
      assert.doesNotMatch(r.err, /note:/, `${args.join(" ")} printed the accelerator note first`);
      const bad = args[args.findIndex((a) => /timeout$/.test(a)) + 1] as string;
      assert.ok(r.err.includes(`'${bad}'`), `${args.join(" ")}: the error echoes the bad value: ${r.err}`);
      const j = await runCli(["--json", "--state-dir", stateDir, ...args]);
      assert.equal(j.code, 2);
      assert.equal(JSON.parse(j.out).error.code, "USAGE");
    }
    assert.equal(existsSync(stateDir), false, "nothing was written to the state dir");
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("cli-durations: values users type, and how they are written back", () => {
  assert.equal(parseDurationMs("30"), 30_000);
  assert.equal(parseDurationMs("250ms"), 250);
  assert.equal(parseDurationMs("2m"), 120_000);
  assert.equal(formatDurationMs(1000), "1s");
  assert.equal(formatDurationMs(300_000), "5m");
  assert.equal(formatDurationMs(7_200_000), "2h");
  assert.equal(formatDurationMs(1500), "1500ms");
});
