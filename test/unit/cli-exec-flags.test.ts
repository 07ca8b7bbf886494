/**
 * exec's output-limit flags: bad values are usage errors (exit 2) echoing the value, and with --json
 * limits whose base64 cannot fit one JSON string are refused before anything runs.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { runCli } from "../helpers/cli.ts";
import { checkJsonLimits, MAX_JSON_STRING_CHARS } from "../../src/cli/commands/exec.ts";

const stateDir = mkdtempSync(join(tmpdir(), "ma-execflags-"));
test.after(() => rmSync(stateDir, { recursive: true, force: true }));

for (const flag of ["--stdout-limit", "--stderr-limit"]) {
  for (const bad of ["abc", "0", "-5", "1.5", "1e6", ""]) {
    test(`exec ${flag} '${bad}' is a usage error naming the value`, async () => {
      const r = await runCli(["--state-dir", stateDir, "exec", "w", `${flag}=${bad}`, "--", "true"]);
      assert.equal(r.code, 2, r.err + r.out);
      assert.match(r.err, new RegExp(`'${bad.replace(".", "\\.")}'`));
      assert.match(r.err, /output limit in bytes/);
    });
  }
}

test("exec --stdout-limit -5 (separate argument) is a usage error too", async () => {
  const r = await runCli(["--state-dir", stateDir, "exec", "w", "--stdout-limit", "-5", "--", "true"]);
  assert.equal(r.code, 2, r.err);
});

test("exec --json refuses limits whose base64 exceeds V8's longest string, before connecting", async () => {
  const r = await runCli(["--state-dir", stateDir, "--json", "exec", "w", "--stdout-limit", "2000000000", "--", "true"]);
  assert.equal(r.code, 2, r.out);
  const body = JSON.parse(r.out);
  assert.equal(body.error.code, "USAGE");
  assert.match(body.error.message, /--stdout-limit 2000000000 is too large for --json/);
  assert.match(body.error.remediation, /at most \d+ bytes.*--stream/);
  // The suggested maximum really fits, and one byte more (with the other stream at its default) does not.
  const max = Number(/at most (\d+) bytes/.exec(body.error.remediation)?.[1]);
  assert.doesNotThrow(() => checkJsonLimits(max, undefined));
  assert.throws(() => checkJsonLimits(max + 3, undefined), /too large/);
  assert.ok(4 * Math.ceil(max / 3) < MAX_JSON_STRING_CHARS);
  // Text mode has no such bound (output is written raw, or streamed).
  assert.doesNotThrow(() => checkJsonLimits(undefined, undefined));
  const text = await runCli(["--state-dir", stateDir, "exec", "w", "--stdout-limit", "2000000000", "--", "true"]);
  assert.notEqual(text.code, 2, text.err);
});
