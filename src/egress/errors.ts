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
  /** The guest rejected the workspace CA's leaf (certificate pinning, its own trust store, mTLS). */
  EGRESS_MITM_HANDSHAKE_FAILED: {
    kind: "policy_denied",
    remediation: "If this host must not be intercepted, add --egress-passthrough HOST; otherwise make the client trust the workspace CA (SSL_CERT_FILE, NODE_EXTRA_CA_CERTS).",
  },
  /** The upstream of an intercepted flow failed: refused, reset, or its certificate did not verify for the name. */
  EGRESS_MITM_UPSTREAM_FAILED: {
    kind: "transient",
    remediation: "Check the upstream; for a private or corporate CA add --egress-upstream-ca FILE, or --egress-passthrough HOST to forward the TLS untouched.",
  },
  /** A flow was refused or cut by --egress-max-conns, --egress-max-total-bytes or the leaf signing rate. */
  EGRESS_CAP_EXCEEDED: {
    kind: "resource_exhausted",
    remediation: "Raise --egress-max-conns or --egress-max-total-bytes, or close connections the guest no longer needs.",
  },
  /** The mediator refused a flow by policy (the audit record says why). */
  EGRESS_FLOW_DENIED: {
    kind: "policy_denied",
    remediation: "Run `microagent egress NAME` to see the record; allow the destination with --egress-allow HOST if it is intended.",
  },
  /** A required --mediation target does not accept connections. */
  MEDIATION_UNREACHABLE: {
    kind: "transient",
    remediation: "Start the mediation listener at the named HOST:PORT (or fix --mediation); for development only, --mediation-optional lets the workspace run without it.",
  },
  /**
   * A guarded/strict workspace's mediation could not be set up (the CA, an --egress-upstream-ca
   * file, the audit log): the workspace does not start rather than run unmediated (fail closed).
   */
  EGRESS_SETUP_FAILED: {
    kind: "permanent",
    remediation: "Fix the cause named in the message and start again, or drop mediation if you genuinely don't want it: create the workspace with --egress off.",
  },
  /** An --egress* or --mediation flag value does not parse, or the flags contradict each other. */
  EGRESS_FLAG_INVALID: {
    kind: "permanent",
    remediation: "Check the value against `microagent run --help` (e.g. --egress strict, --egress-max-conns 256, --mediation 7000=127.0.0.1:9000).",
  },
});
