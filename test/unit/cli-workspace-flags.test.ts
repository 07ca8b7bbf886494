import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { runCli } from "../helpers/cli.ts";
import { MAX_VCPUS } from "../../src/contract/backend.ts";
import { formatDurationMs, parseCpus, parseDurationFlag } from "../../src/cli/commands/workspace-flags.ts";
import { SpecSchema } from "../../src/workspace/spec.ts";
import { buildQemuArgs, type QemuSpec } from "../../src/vmm/qemu/args.ts";

/**
 * Every numeric flag of the workspace commands: a bad value is a usage error (exit 2) that echoes
 * it, raised while the flags are parsed, so nothing runs first (no KVM probe and its note, no state
 * dir, no workspace lookup).
 */
const CASES: ReadonlyArray<readonly [string[], string]> = [
  [["create", "w", "--image", "x", "--memory", "1e9"], "1e9"],
  [["create", "w", "--image", "x", "--memory", "512.5"], "512.5"],
  [["create", "w", "--image", "x", "--cpus", "0"], "0"],
  [["create", "w", "--image", "x", "--cpus", String(MAX_VCPUS + 1)], String(MAX_VCPUS + 1)],
  [["create", "w", "--image", "x", "--size-mib", "-5"], "-5"],
  [["create", "w", "--image", "x", "--size-mib", "lots"], "lots"],
  [["run", "--timeout", "5x", "img", "true"], "5x"],
  [["run", "--timeout", "0", "img", "true"], "0"],
  [["run", "--timeout", "1000000h", "img", "true"], "1000000h"],
  [["run", "--cpus", "256", "img", "true"], "256"],
  [["run", "--memory", "abc", "img", "true"], "abc"],
  [["start", "w", "--timeout", "-1s"], "-1s"],
  [["start", "w", "--timeout", "soon"], "soon"],
  [["start", "w", "--wait-timeout", "2x"], "2x"],
  [["halt", "w", "--timeout", "5x"], "5x"],
  [["stop", "w", "--timeout", "-2s"], "-2s"],
  [["wait", "w", "--timeout", "forever"], "forever"],
  [["wait", "w", "--timeout", "1e3"], "1e3"],
  [["image", "pull", "x", "--concurrency", "1e1"], "1e1"],
  [["image", "pull", "x", "--concurrency", "0x10"], "0x10"],
];

test("cli: numeric flags of the workspace commands are usage errors (exit 2) echoing the value, before anything runs", async () => {
  const root = await mkdtemp(join(tmpdir(), "cli-flags-"));
  try {
    for (const [args, bad] of CASES) {
      const stateDir = join(root, "state");
      const r = await runCli(["--state-dir", stateDir, ...args]);
      const what = args.join(" ");
      assert.equal(r.code, 2, `${what}: exit ${r.code}, stderr ${r.err}`);
      assert.ok(r.err.includes(`'${bad}'`), `${what}: the message echoes ${bad}: ${r.err}`);
      assert.doesNotMatch(r.err, /note:|TCG/, `${what}: nothing (no KVM probe) ran before the usage error`);
      assert.equal(existsSync(stateDir), false, `${what}: no state dir was created`);
      const json = await runCli(["--json", "--state-dir", stateDir, ...args]);
      assert.equal(json.code, 2, what);
      assert.equal(JSON.parse(json.out).error.code, "USAGE", what);
    }
    assert.deepEqual(await readdir(root), []);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});

test("cli: --cpus, the spec file and the VMM argument builder share one vCPU bound", async () => {
  assert.equal(MAX_VCPUS, 255);
  assert.equal(parseCpus(String(MAX_VCPUS)), MAX_VCPUS);
  assert.throws(() => parseCpus(String(MAX_VCPUS + 1)), /1-255/);
  assert.equal(SpecSchema.safeParse({ resources: { cpus: MAX_VCPUS } }).success, true);
  assert.equal(SpecSchema.safeParse({ resources: { cpus: MAX_VCPUS + 1 } }).success, false);
  const vm: Omit<QemuSpec, "cpus"> = { accel: "tcg", memoryMib: 256, kernelPath: "/k", initramfsPath: "/i", serial: { kind: "file", path: "/ws/serial.log" } };
  assert.ok(buildQemuArgs({ ...vm, cpus: MAX_VCPUS }).length > 0);
  assert.throws(() => buildQemuArgs({ ...vm, cpus: MAX_VCPUS + 1 }), /between 1 and 255/);
});

test("cli: duration flags parse to milliseconds and print back the way users write them", () => {
  const p = parseDurationFlag("--timeout");
  assert.equal(p("30"), 30_000);
  assert.equal(p("500ms"), 500);
  assert.equal(p("1.5m"), 90_000);
  assert.equal(parseDurationFlag("--timeout", { allowZero: true })("0"), 0);
  assert.throws(() => p("0"), /more than 0/);
  assert.throws(() => p(""), /not a duration/);
  assert.equal(p("596h"), 596 * 3_600_000);
  assert.throws(() => p("597h"), /too long/);
  assert.equal(formatDurationMs(500), "500ms");
  assert.equal(formatDurationMs(5000), "5s");
  assert.equal(formatDurationMs(90_000), "90s");
  assert.equal(formatDurationMs(120_000), "2m");
  assert.equal(formatDurationMs(7_200_000), "2h");
});
