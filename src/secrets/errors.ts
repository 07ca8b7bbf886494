/**
 * Error codes of the secrets area (references, their resolution at start, `secret check`). A
 * message names the secret and its source (kind + variable, path or command), never the value:
 * these errors end up in `--json` output, events and logs.
 */
import { defineErrors } from "../contract/errors.ts";

export const SecretErrors = defineErrors({
  SECRET_SOURCE_MISSING: {
    kind: "not_found",
    remediation: "Set the named environment variable or create the named file, or fix the reference (`microagent secret check NAME=SOURCE` tests it).",
  },
  SECRET_SOURCE_FAILED: {
    kind: "permanent",
    remediation: "Fix the source so it yields the value (run the helper command by hand, check the file's permissions), then retry; `microagent secret check` tests it.",
  },
  SECRET_SOURCE_TIMEOUT: {
    kind: "transient",
    retryable: true,
    remediation: "The helper command did not finish in time (a vault or keychain that waits for a login?); unlock it, or make the command non-interactive, and retry.",
  },
  SECRET_TOO_LARGE: {
    kind: "resource_exhausted",
    remediation: "A secret is at most 64 KiB; point the reference at the credential itself, not a bundle of files.",
  },
  SECRET_HANDOFF_FAILED: {
    kind: "permanent",
    remediation: "The supervisor did not receive the resolved secrets from the process that started it; start the workspace again with `microagent start` (a supervisor started any other way gets no secrets and refuses to boot).",
  },
  SECRET_INVALID: {
    kind: "permanent",
    remediation: "Fix the value at its source: it must not be empty, and a swap secret (NAME=SOURCE@HOST) must fit in an HTTP header (no CR, LF or NUL).",
  },
});
