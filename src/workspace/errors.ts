/**
 * Error codes of the workspace area (state dir, manifest, lifecycle table, locks, spec file).
 * Every code is stable; messages name the workspace and the cause, remediations name the command
 * that fixes it.
 */
import { defineErrors } from "../contract/errors.ts";

export const WorkspaceErrors = defineErrors({
  WORKSPACE_INVALID_NAME: {
    kind: "permanent",
    remediation: "Use 1-63 characters: lowercase letters, digits, '_', '.', '-', starting with a letter or digit.",
  },
  WORKSPACE_NOT_FOUND: {
    kind: "not_found",
    remediation: "Run `microagent list` to see the workspaces in this state dir (or pass the right --state-dir).",
  },
  WORKSPACE_EXISTS: {
    kind: "conflict",
    remediation: "Pick another name, or remove the old one with `microagent delete <name>`.",
  },
  WORKSPACE_LOCKED: {
    kind: "conflict",
    retryable: true,
    remediation: "Another microagent command is working on this workspace; wait for it to finish and retry.",
  },
  WORKSPACE_INVALID_TRANSITION: {
    kind: "conflict",
    remediation: "Run `microagent status <name>` to see the current state; the command is not valid from it.",
  },
  WORKSPACE_STATE_CHANGED: {
    kind: "conflict",
    retryable: true,
    remediation: "The workspace changed state while the command ran; check `microagent status <name>` and retry.",
  },
  WORKSPACE_PAUSED: {
    kind: "conflict",
    remediation: "The workspace is paused (its vCPUs are frozen): run `microagent resume <name>` first.",
  },
  WORKSPACE_QUARANTINED: {
    kind: "conflict",
    remediation: "Run `microagent halt <name>` (or stop / kill), then `microagent start <name>`.",
  },
  WORKSPACE_RUNNING: {
    kind: "conflict",
    remediation: "Run `microagent halt <name>` (or `stop` / `kill`), then `microagent delete <name>`.",
  },
  WORKSPACE_INVARIANT: {
    kind: "permanent",
    remediation: "This is a bug in the caller of the workspace state API: rerun with --json and report the output.",
  },
  WORKSPACE_CORRUPT: {
    kind: "permanent",
    remediation: "The workspace's state files are unreadable; inspect them under <state-dir>/workspaces/<name>/ or delete the workspace.",
  },
  WORKSPACE_DIVERGED: {
    kind: "policy_denied",
    remediation: "Inspect `microagent --json status <name>` .verification.divergence; re-create the workspace, or force the start if you trust the new artifact.",
  },
  WORKSPACE_UNSUPPORTED: {
    kind: "unsupported",
    remediation: "Use the supported value named in the message.",
  },
  WORKSPACE_CREATE_FAILED: {
    kind: "permanent",
    remediation: "Fix the cause named in the message and run `microagent create` again; nothing was left behind.",
  },
  SPEC_INVALID: {
    kind: "permanent",
    remediation: "Fix the named key in the spec file; see docs/spec.md for the accepted keys.",
  },
  SPEC_FILE_SOURCE_MISSING: {
    kind: "not_found",
    remediation: "files: sources are resolved relative to the spec file's directory; fix the path or create the file.",
  },
  SPEC_NOT_FOUND: {
    kind: "not_found",
    remediation: "Check the --file path.",
  },
});
