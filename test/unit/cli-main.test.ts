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
