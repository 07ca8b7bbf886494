/** Error codes of `microagent serve e2b`, the E2B-compatible server (errors from the layers below keep theirs). */
import { defineErrors } from "../../contract/errors.ts";

export const E2bErrors = defineErrors({
  E2B_UNAUTHORIZED: {
    kind: "policy_denied",
    remediation: "Set E2B_API_KEY to the key `microagent serve e2b --api-key` was started with.",
  },
  E2B_SANDBOX_NOT_FOUND: {
    kind: "not_found",
    remediation: "List the live sandboxes with `Sandbox.list()`; a sandbox is gone once killed or timed out, or when the server restarted.",
  },
  E2B_CONFLICT: {
    kind: "conflict",
    remediation: "Pause a running sandbox, resume a paused one (`Sandbox.connect(id)` resumes); check its state with `Sandbox.getInfo(id)`.",
  },
  E2B_PROCESS_NOT_FOUND: {
    kind: "not_found",
    remediation: "List the running commands with `sandbox.commands.list()`; a command leaves the table when it exits.",
  },
  E2B_USER_NOT_FOUND: {
    kind: "not_found",
    remediation: "Pass a user that exists in the image's /etc/passwd (or none, for the image's default user), or add the user to the image.",
  },
  E2B_PATH_NOT_FOUND: {
    kind: "not_found",
    remediation: "Check the path in the sandbox (relative paths start at the user's home directory).",
  },
  E2B_PATH_EXISTS: {
    kind: "conflict",
    remediation: "Pick another path, or remove the existing entry first.",
  },
  E2B_NOT_A_FILE: {
    kind: "permanent",
    remediation: "Read a regular file; list a directory with `files.list`.",
  },
  E2B_NOT_A_DIRECTORY: {
    kind: "permanent",
    remediation: "List a directory; read a file with `files.read`.",
  },
  E2B_STDIN_NOT_OPEN: {
    kind: "conflict",
    remediation: "Start the command with `stdin: true` to send it input; closed stdin cannot be reopened.",
  },
  E2B_GUEST_OP_FAILED: {
    kind: "permanent",
    remediation: "The message carries the guest's own error; check permissions and free space in the sandbox.",
  },
  E2B_COMMAND_FAILED_TO_START: {
    kind: "permanent",
    remediation: "Check that the working directory exists and the user may enter it; the message carries the guest's reason.",
  },
  E2B_BAD_REQUEST: {
    kind: "permanent",
    remediation: "The request does not match the E2B API this server implements (docs/e2b.md); use a supported `e2b` SDK version.",
  },
  E2B_UNSUPPORTED: {
    kind: "unsupported",
    remediation: "docs/e2b.md lists what `microagent serve e2b` implements; this call is not among them yet.",
  },
  E2B_LISTEN_REFUSED: {
    kind: "policy_denied",
    remediation: "Listen on 127.0.0.1 (or ::1), or pass --allow-remote together with --api-key.",
  },
});
