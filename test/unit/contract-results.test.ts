/**
 * The output model: real `--json` outputs of the CLI, validated against their schemas in
 * src/contract/results.ts, and the camelCase rule checked over every key. The commands here are the
 * ones that need no VM (a workspace made through the facade with small stand-in providers); the
 * VM-backed ones (run, exec, start, quarantine...) are validated by the same schemas in
 * test/integration/workspace-lifecycle.test.ts.
 */
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdtemp, rm, truncate, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { RESULT_SCHEMAS, nonCamelKeys, type ResultCommand } from "../../src/contract/results.ts";
import type { CreateProviders } from "../../src/workspace/create.ts";
import { Workspace } from "../../src/index.ts";
import { runCli } from "../helpers/cli.ts";

const sha = (s: string) => createHash("sha256").update(s).digest("hex");
let dir: string;
let stateDir: string;
let providers: CreateProviders;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "contract-results-"));
  stateDir = join(dir, "state");
  await writeFile(join(dir, "vmlinuz"), "kernel");
  await writeFile(join(dir, "initramfs"), "initramfs");
  const base = join(dir, "base.ext4");
  await writeFile(base, "");
  await truncate(base, 8 * 1024 * 1024);
  const digest = `sha256:${"c".repeat(64)}`;
  providers = {
    async resolveImage(ref) {
      return { image: { ref }, info: { ref, resolvedRef: `${ref.split(":")[0]}@${digest}`, manifestDigest: digest, config: { Cmd: ["/bin/true"] } } };
    },
    async ensureKernel() {
      return { kernel: { path: join(dir, "vmlinuz"), sha256: sha("kernel") }, initramfs: { path: join(dir, "initramfs"), sha256: sha("initramfs") } };
    },
    async ensureBaseRootfs() {
      return { path: base, sha256: createHash("sha256").update(Buffer.alloc(8 * 1024 * 1024)).digest("hex"), sizeMib: 8, cacheHit: true };
    },
  };
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Run the CLI with --json and validate stdout against the schema of `command`; returns the parsed body. */
async function jsonOf(command: ResultCommand, args: string[], expectCode: number | undefined = 0): Promise<Record<string, unknown>> {
  const r = await runCli(["--json", "--state-dir", stateDir, ...args]);
  if (expectCode !== undefined) assert.equal(r.code, expectCode, `${args.join(" ")}: ${r.out}${r.err}`);
  const body = JSON.parse(r.out) as Record<string, unknown>;
  const checked = RESULT_SCHEMAS[command].safeParse(body);
  assert.ok(checked.success, `${command}: ${JSON.stringify(checked.error?.issues)}\n${r.out}`);
  assert.deepEqual(nonCamelKeys(body), [], `${command} prints non-camelCase keys`);
  return body;
}

test("contract-results: create (through the facade), status, list, ps, events, logs, halt/stop/kill, wait and delete match their schemas", async () => {
  const ws = await Workspace.create("shape", { image: "reg/img:1", resources: { profile: "tiny" } }, { stateDir, providers });
  assert.ok(RESULT_SCHEMAS.create.safeParse(ws.created).success, JSON.stringify(ws.created));
  assert.deepEqual(nonCamelKeys(ws.created), []);
  assert.equal(ws.created.state, "prepared");

  const status = await jsonOf("status", ["status", "shape"]);
  assert.equal((status.event as { state: string }).state, "prepared");
  assert.equal((status.readiness as { ready: boolean }).ready, false);
  const list = await jsonOf("list", ["list"]);
  assert.deepEqual((list.workspaces as { name: string }[]).map((w) => w.name), ["shape"]);
  assert.deepEqual(await jsonOf("ps", ["ps"]), { workspaces: [] });
  const events = await jsonOf("events", ["events", "shape"]);
  assert.equal((events.events as unknown[]).length, 1);
  assert.deepEqual(await jsonOf("logs", ["logs", "shape"]), { logs: "" });
  for (const verb of ["halt", "stop", "kill"] as const) {
    assert.deepEqual(await jsonOf(verb, [verb, "shape"]), { workspace: "shape", state: "prepared", previousState: "prepared", changed: false });
  }
  assert.equal((await jsonOf("wait", ["wait", "shape"])).state, "prepared");
  assert.deepEqual(await jsonOf("delete", ["delete", "shape"]), { name: "shape", deleted: true, killed: false, previousState: "prepared" });
  assert.deepEqual(await jsonOf("delete", ["delete", "shape"]), { name: "shape", deleted: false, killed: false });
});

test("contract-results: image list, kernel list, version and the error object match their schemas", async () => {
  assert.deepEqual(await jsonOf("image list", ["image", "list"]), { images: [] });
  assert.deepEqual(await jsonOf("kernel list", ["kernel", "list"]), { kernels: [] });
  assert.equal((await jsonOf("version", ["version"])).version, (await import("../../src/version.ts")).packageVersion());
  const err = await jsonOf("error", ["status", "nope"], 1);
  assert.equal((err.error as { code: string }).code, "WORKSPACE_NOT_FOUND");
});

test("contract-results: doctor and host match their schema (whatever this host's verdict)", async () => {
  const d = await jsonOf("doctor", ["doctor"], undefined);
  assert.ok(["ok", "degraded", "failed"].includes(d.verdict as string));
  const h = await jsonOf("host", ["host"], undefined);
  assert.ok((h.host as { capabilities?: unknown }).capabilities, "host adds the capability table");
});

test("contract-results: the schemas refuse the old snake_case keys", () => {
  const old = { protocol_version: "exec.v1", status: "exited", exit_code: 0, stdout: "", stderr: "", stdout_truncated: false, stderr_truncated: false, started_at: "t", completed_at: "t" };
  assert.equal(RESULT_SCHEMAS.exec.safeParse(old).success, false);
  assert.deepEqual(nonCamelKeys({ a: { final_state: 1 }, b: [{ timings_ms: {} }], error: { correlation_id: "x", details: { some_path: 1 } } }), ["a.final_state", "b[0].timings_ms"]);
});
