import { test } from "node:test";
import assert from "node:assert/strict";
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { CommonErrors, ERROR_KINDS, MicroagentError, definedErrorCodes, toMicroagentError } from "../../src/contract/errors.ts";
import { emitError, exitCodeFor, formatErrorText } from "../../src/cli/output.ts";
import { PassThrough } from "node:stream";

// Load every area's error module so the table below covers all codes in the product.
const srcDir = new URL("../../src/", import.meta.url).pathname;
// Areas may nest (src/server/<adapter>/errors.ts), so every errors.ts below src/ counts.
for (const f of readdirSync(srcDir, { recursive: true, encoding: "utf8" })) {
  if (f === "errors.ts" || f.endsWith("/errors.ts")) await import(join(srcDir, f));
}

test("contract-errors: every defined code has a valid kind, a remediation, and a stable shape", () => {
  const codes = definedErrorCodes();
  assert.ok(codes.size >= 8, `expected the common codes at least, got ${codes.size}`);
  for (const [code, spec] of codes) {
    assert.match(code, /^[A-Z][A-Z0-9_]*$/, `code ${code} must be UPPER_SNAKE`);
    assert.ok((ERROR_KINDS as readonly string[]).includes(spec.kind), `${code}: kind ${spec.kind}`);
    assert.ok(spec.remediation.length > 10, `${code}: remediation must name a fix`);
    const e = new MicroagentError(code, { message: "m" });
    const j = e.toJSON();
    assert.deepEqual(Object.keys(j).sort(), ["code", "correlation_id", "kind", "message", "remediation", "retryable"]);
    assert.equal(j.retryable, spec.retryable ?? false);
    assert.equal(exitCodeFor(e), code === "USAGE" ? 2 : spec.retryable ? 75 : 1);
  }
});

test("contract-errors: the common table", () => {
  const table: Array<[string, string, boolean]> = [
    ["USAGE", "permanent", false],
    ["INVALID_ARGUMENT", "permanent", false],
    ["INTERNAL", "permanent", false],
    ["INTERRUPTED", "transient", true],
    ["TOOL_MISSING", "unsupported", false],
    ["PATH_NOT_FOUND", "not_found", false],
    ["PERMISSION_DENIED", "policy_denied", false],
    ["DISK_FULL", "resource_exhausted", false],
  ];
  for (const [code, kind, retryable] of table) {
    const spec = definedErrorCodes().get(code);
    assert.ok(spec, code);
    assert.equal(spec.kind, kind, code);
    assert.equal(spec.retryable ?? false, retryable, code);
  }
});

test("contract-errors: foreign errors translate by errno", () => {
  const mk = (code: string) => Object.assign(new Error(`boom ${code}`), { code });
  assert.equal(toMicroagentError(mk("ENOENT")).kind, "not_found");
  assert.equal(toMicroagentError(mk("EACCES")).kind, "policy_denied");
  assert.equal(toMicroagentError(mk("ENOSPC")).kind, "resource_exhausted");
  assert.equal(toMicroagentError(new Error("x")).code, "INTERNAL");
  const e = CommonErrors.TOOL_MISSING({ message: "mke2fs not found" });
  assert.equal(toMicroagentError(e), e);
});

test("contract-errors: text rendering names the cause and the fix; JSON mode prints one document", () => {
  const e = CommonErrors.TOOL_MISSING({ message: "mke2fs not found", remediation: "install e2fsprogs or pass --mke2fs PATH" });
  assert.equal(formatErrorText(e.toJSON(), false), "error: mke2fs not found\n  fix: install e2fsprogs or pass --mke2fs PATH\n");
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  let out = "";
  stdout.on("data", (d) => (out += d));
  const code = emitError(e, { format: "json", mode: "ux", color: false }, { stdout, stderr });
  assert.equal(code, 1);
  const doc = JSON.parse(out);
  assert.equal(doc.ok, false);
  assert.equal(doc.error.kind, "unsupported");
  assert.equal(doc.error.message, "mke2fs not found");
});

test("contract-errors: retryable errors exit 75", () => {
  assert.equal(exitCodeFor(CommonErrors.INTERRUPTED({ message: "x" })), 75);
});

test("errors: Table.CODE.is(e) is the checked form of e.code === CODE", () => {
  const e: unknown = CommonErrors.TOOL_MISSING({ message: "mke2fs not found" });
  assert.equal(CommonErrors.TOOL_MISSING.is(e), true);
  assert.equal(CommonErrors.TOOL_MISSING.code, "TOOL_MISSING");
  assert.equal(CommonErrors.INTERNAL.is(e), false);
  // Same code, but not a MicroagentError (e.g. a Node error carrying a code): not a match.
  assert.equal(CommonErrors.TOOL_MISSING.is(Object.assign(new Error("x"), { code: "TOOL_MISSING" })), false);
  if (CommonErrors.TOOL_MISSING.is(e)) {
    const code: "TOOL_MISSING" = e.code;
    assert.equal(code, "TOOL_MISSING");
  }
  // Compile-time: a code the table does not define is a type error (typecheck fails without the directive).
  const misspelt = () =>
    // @ts-expect-error TOOL_MISING is not in CommonErrors
    CommonErrors.TOOL_MISING.is(e);
  assert.equal(typeof misspelt, "function");
});
