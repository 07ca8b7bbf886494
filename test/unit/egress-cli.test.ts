/**
 * `microagent egress NAME`: records from the workspace's audit log in time order, `{egress: [...]}`
 * in JSON, a missing log is an empty list with exit 0, an unknown workspace is WORKSPACE_NOT_FOUND.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { workspacePaths } from "../../src/workspace/paths.ts";
import { EgressAuditLog } from "../../src/egress/audit.ts";
import { runCli } from "../helpers/cli.ts";

test("egress-cli: records oldest first, JSON envelope, empty when there is no log", async () => {
  const stateDir = await mkdtemp(join(tmpdir(), "egress-cli-"));
  try {
    const paths = workspacePaths(stateDir, "w1");
    await mkdir(paths.dir, { recursive: true });
    await writeFile(paths.manifest, "{}");
    const empty = await runCli(["--json", "--state-dir", stateDir, "egress", "w1"]);
    assert.equal(empty.code, 0, empty.err);
    assert.deepEqual(JSON.parse(empty.out).egress ?? JSON.parse(empty.out).result?.egress, []);
    let now = Date.parse("2026-12-01T10:00:00Z");
    const log = new EgressAuditLog(paths.dir, { workspace: "w1", now: () => now });
    log.write({ type: "egress_allow", proto: "tcp", dst: "93.184.216.34:443", name: "allowed.test", sni: "allowed.test", decision: "allow", reason: "allowed.test is a public destination", signal: null, mitm: true, flowId: "f1" });
    now += 1000;
    log.write({ type: "egress_close", proto: "tcp", dst: "93.184.216.34:443", name: "allowed.test", decision: "allow", reason: "closed", signal: null, flowId: "f1", bytesUp: 10, bytesDown: 20, durationMs: 5 });
    log.close();
    const r = await runCli(["--json", "--state-dir", stateDir, "egress", "w1"]);
    assert.equal(r.code, 0, r.err);
    const body = JSON.parse(r.out);
    const recs = body.egress ?? body.result?.egress;
    assert.deepEqual(recs.map((x: { type: string }) => x.type), ["egress_allow", "egress_close"]);
    const text = await runCli(["--state-dir", stateDir, "egress", "w1"]);
    assert.match(text.out, /egress_allow .*allowed\.test/);
    assert.match(text.out, /up=10 down=20 5ms/);
    const missing = await runCli(["--json", "--state-dir", stateDir, "egress", "nope"]);
    assert.notEqual(missing.code, 0);
    assert.match(missing.out + missing.err, /WORKSPACE_NOT_FOUND/);
  } finally {
    await rm(stateDir, { recursive: true, force: true });
  }
});
