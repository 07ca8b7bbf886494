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
  SNAPSHOT_INVALID_TAG: {
    kind: "permanent",
    remediation: "Use 1-63 characters: letters, digits, '_', '.', '-', starting with a letter or digit.",
  },
  SNAPSHOT_NOT_FOUND: {
    kind: "not_found",
    remediation: "Run `microagent snapshot list <name>` to see the workspace's snapshots.",
  },
  SNAPSHOT_EXISTS: {
    kind: "conflict",
    remediation: "Pick another tag, or remove the old snapshot with `microagent snapshot delete <name> <tag>`.",
  },
  SNAPSHOT_CORRUPT: {
    kind: "permanent",
    remediation: "The snapshot's files are unreadable or incomplete; delete it with `microagent snapshot delete <name> <tag>` and take a new one.",
  },
  SNAPSHOT_DIVERGED: {
    kind: "policy_denied",
    remediation: "The kernel or init the snapshot's memory was taken with changed: a restore would run the old guest kernel against new files. Boot cold (`microagent start <name>`), or reinstall the kernel the snapshot recorded.",
  },
  SNAPSHOT_IN_USE: {
    kind: "conflict",
    remediation: "A fork's disk is layered on this snapshot: delete the fork first (`microagent delete <fork>`).",
  },
  SNAPSHOT_NOT_ALLOWED: {
    kind: "conflict",
    remediation: "Run `microagent status <name>`: a snapshot is taken of a running or paused workspace, a restore needs it offline (`microagent halt <name>`).",
  },
  SNAPSHOT_UNSUPPORTED: {
    kind: "unsupported",
    remediation: "Use the linux-qemu backend (the default); it implements snapshots.",
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
