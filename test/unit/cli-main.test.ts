import { test } from "node:test";
import assert from "node:assert/strict";
import { runCli } from "../helpers/cli.ts";

test("cli-main: version in text, JSON and AX mode", async () => {
  const text = await runCli(["version"]);
  assert.equal(text.code, 0);
  assert.match(text.out, /^microagent \d+\.\d+\.\d+/);
  const json = await runCli(["version", "--json"]);
  assert.equal(JSON.parse(json.out).version, text.out.trim().split(" ")[1]);
  const ax = await runCli(["version"], { MICROAGENT_MODE: "ax" });
  const doc = JSON.parse(ax.out);
  assert.equal(doc.ok, true);
  assert.equal(typeof doc.result.version, "string");
});

test("cli-main: an unknown command is a usage error (exit 2) with a suggestion", async () => {
  const text = await runCli(["versoin"]);
  assert.equal(text.code, 2);
  assert.match(text.err, /did you mean version\?/i);
  const json = await runCli(["--json", "versoin"]);
  assert.equal(json.code, 2);
  const doc = JSON.parse(json.out);
  assert.equal(doc.ok, false);
  assert.equal(doc.error.code, "USAGE");
  assert.equal(doc.error.kind, "permanent");
  assert.equal(typeof doc.error.correlation_id, "string");
  assert.match(doc.error.remediation, /--help/);
});

test("cli-main: an unknown flag is a usage error (exit 2)", async () => {
  const r = await runCli(["version", "--bogus"]);
  assert.equal(r.code, 2);
  assert.match(r.err, /unknown option '--bogus'/);
});

test("cli-main: a bad global value is a usage error in AX mode too, as one JSON document", async () => {
  const r = await runCli(["--backend", "nope", "version"], { MICROAGENT_MODE: "ax" });
  assert.equal(r.code, 2);
  const doc = JSON.parse(r.out);
  assert.equal(doc.ok, false);
  assert.match(doc.error.message, /invalid --backend 'nope'/);
});

test("cli-main: --help prints help, exits 0 and performs nothing", async () => {
  const r = await runCli(["version", "--help"]);
  assert.equal(r.code, 0);
  assert.match(r.out, /Usage: microagent version/);
  assert.doesNotMatch(r.out, /^microagent \d/m);
});

test("cli-main: commander's usage errors use the same error:/fix: form, naming the command's help", async () => {
  const flag = await runCli(["version", "--bogus"]);
  assert.equal(flag.code, 2);
  assert.equal(flag.err, "error: unknown option '--bogus'\n  fix: Run `microagent version --help` for its arguments and flags.\n");
  const near = await runCli(["create", "--memry", "5", "x"]);
  assert.equal(near.code, 2);
  assert.match(near.err, /^error: unknown option '--memry'; did you mean --memory\?\n {2}fix: Run `microagent create --help`/);
  const sub = await runCli(["image", "pul"]);
  assert.equal(sub.code, 2);
  assert.match(sub.err, /did you mean pull\?\n {2}fix: Run `microagent image --help`/);
  const missing = await runCli(["exec"]);
  assert.equal(missing.code, 2);
  assert.match(missing.err, /^error: missing required argument 'name'\n {2}fix: Run `microagent exec --help`/);
  assert.equal(missing.out, "");
});

test("cli-main: --help groups commands by purpose and hides development overrides", async () => {
  const r = await runCli(["--help"]);
  assert.equal(r.code, 0);
  const headings = r.out.split("\n").filter((l) => /^[A-Z][A-Za-z ]+:$/.test(l));
  assert.deepEqual(headings, ["Options:", "Lifecycle:", "Inspect:", "Images and kernels:", "Secrets:", "Agent interfaces:", "Host:"]);
  const lifecycle = r.out.slice(r.out.indexOf("Lifecycle:"), r.out.indexOf("Inspect:"));
  for (const c of ["run", "create", "start", "exec", "halt", "kill", "delete"]) assert.match(lifecycle, new RegExp(`^  ${c}\\b`, "m"));
  assert.ok(lifecycle.indexOf("  run ") < lifecycle.indexOf("  create "), "run is listed first");
  assert.doesNotMatch(r.out.slice(0, r.out.indexOf("Lifecycle:")), /--supervisor/);
});

test("cli-main: on a Node older than 22.18 the CLI says so and how to get one, exit 1", async () => {
  const { spawnSync } = await import("node:child_process");
  const fakeOld = 'data:text/javascript,Object.defineProperty(process,"versions",{value:{...process.versions,node:"20.20.2"}})';
  const r = spawnSync(process.execPath, ["--import", fakeOld, new URL("../../bin/microagent.js", import.meta.url).pathname, "version"], { encoding: "utf8" });
  assert.equal(r.status, 1);
  assert.equal(r.stdout, "");
  assert.match(r.stderr, /^error: microagent needs Node 22\.18 or newer; this is Node 20\.20\.2\n {2}fix: run scripts\/setup/);
  assert.doesNotMatch(r.stderr, /SyntaxError|at /);
});

test("cli-main: the library refuses an old Node with a sentence, not a link error", async () => {
  const { nodeIsSupported } = await import("../../src/node-version.ts");
  assert.equal(nodeIsSupported("20.20.2"), false);
  assert.equal(nodeIsSupported("22.17.9"), false);
  assert.equal(nodeIsSupported("22.18.0"), true);
  assert.equal(nodeIsSupported("24.9.0"), true);
});
