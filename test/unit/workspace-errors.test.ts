import { test } from "node:test";
import assert from "node:assert/strict";
import { definedErrorCodes } from "../../src/contract/errors.ts";
import { WorkspaceErrors } from "../../src/workspace/errors.ts";

test("workspace: error table (code, kind, retryable)", () => {
  const table: Array<[keyof typeof WorkspaceErrors, string, boolean]> = [
    ["WORKSPACE_INVALID_NAME", "permanent", false],
    ["WORKSPACE_NOT_FOUND", "not_found", false],
    ["WORKSPACE_EXISTS", "conflict", false],
    ["WORKSPACE_LOCKED", "conflict", true],
    ["WORKSPACE_INVALID_TRANSITION", "conflict", false],
    ["WORKSPACE_STATE_CHANGED", "conflict", true],
    ["WORKSPACE_PAUSED", "conflict", false],
    ["WORKSPACE_QUARANTINED", "conflict", false],
    ["WORKSPACE_RUNNING", "conflict", false],
    ["WORKSPACE_INVARIANT", "permanent", false],
    ["WORKSPACE_CORRUPT", "permanent", false],
    ["WORKSPACE_DIVERGED", "policy_denied", false],
    ["WORKSPACE_UNSUPPORTED", "unsupported", false],
    ["WORKSPACE_CREATE_FAILED", "permanent", false],
    ["SNAPSHOT_INVALID_TAG", "permanent", false],
    ["SNAPSHOT_NOT_FOUND", "not_found", false],
    ["SNAPSHOT_EXISTS", "conflict", false],
    ["SNAPSHOT_CORRUPT", "permanent", false],
    ["SNAPSHOT_DIVERGED", "policy_denied", false],
    ["SNAPSHOT_IN_USE", "conflict", false],
    ["SNAPSHOT_NOT_ALLOWED", "conflict", false],
    ["SNAPSHOT_UNSUPPORTED", "unsupported", false],
    ["SPEC_INVALID", "permanent", false],
    ["SPEC_FILE_SOURCE_MISSING", "not_found", false],
    ["SPEC_NOT_FOUND", "not_found", false],
  ];
  assert.deepEqual(Object.keys(WorkspaceErrors).sort(), table.map(([c]) => c).sort());
  for (const [code, kind, retryable] of table) {
    const e = WorkspaceErrors[code]({ message: "m" });
    assert.equal(e.code, code);
    assert.equal(e.kind, kind, code);
    assert.equal(e.retryable, retryable, code);
    assert.equal(e.remediation, definedErrorCodes().get(code)?.remediation);
  }
});
