/**
 * Error codes of the egress area (allow lists, the workspace CA, the audit log). Flow verdicts are
 * not errors: a denied connection is a `Verdict` and an audit record, never a thrown error.
 */
import { defineErrors } from "../contract/errors.ts";

export const EgressErrors = defineErrors({
  /** An `--egress-allow` / `--egress-passthrough` entry (or the spec's list) cannot be parsed. */
  EGRESS_ALLOW_INVALID: {
    kind: "permanent",
    remediation:
      "Write each entry as HOST, .SUFFIX, HOST:PORT, ADDR[:PORT], [IPV6]:PORT, CIDR, or host.microagent.internal:PORT (e.g. --egress-allow api.example.com --egress-allow 10.1.0.0/16).",
  },
  /** A list is combined with a mode that ignores it (`--egress-allow` with `--egress off`). */
  EGRESS_ALLOW_CONFLICT: {
    kind: "permanent",
    remediation: "Drop --egress-allow/--egress-passthrough, or choose --egress guarded or --egress strict.",
  },
  /** The workspace CA could not be created or written (the mediated workspace must not start). */
  EGRESS_CA_WRITE_FAILED: {
    kind: "permanent",
    remediation: "Check free disk space and permissions under the workspace directory, or start with --egress off.",
  },
  /** The stored CA is unusable: unreadable, not ECDSA P-256, key and certificate disagree, or the key is readable by others. */
  EGRESS_CA_INVALID: {
    kind: "permanent",
    remediation: "Delete the workspace's egress CA files (they are regenerated at the next start), or fix their mode with chmod 600.",
  },
  /** A leaf could not be issued for a name (not a DNS name or IP address). */
  EGRESS_LEAF_INVALID: {
    kind: "permanent",
    remediation: "The guest asked for a name that cannot go in a certificate; use --egress-passthrough for that host if it is legitimate.",
  },
  /** The audit log cannot be written; a mediated workspace fails closed rather than run unaudited. */
  EGRESS_AUDIT_WRITE_FAILED: {
    kind: "permanent",
    remediation: "Check free disk space and permissions under the workspace directory.",
  },
  /** A complete line in the audit log is not an egress record (a torn last line is not an error). */
  EGRESS_AUDIT_CORRUPT: {
    kind: "permanent",
    remediation: "The audit log was edited or damaged; move the named file aside to keep reading the rest.",
  },
});
