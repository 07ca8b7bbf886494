/** Error codes of the agent-facing adapters (HTTP daemon, MCP server); the operations' own errors come from the library. */
import { defineErrors } from "../../contract/errors.ts";

export const ServerErrors = defineErrors({
  UNAUTHORIZED: {
    kind: "policy_denied",
    remediation: "Send `Authorization: Bearer <token>` with the token from the daemon's --token-file (default <state-dir>/api.token), or use the Unix socket.",
  },
  LISTEN_REFUSED: {
    kind: "policy_denied",
    remediation: "Listen on 127.0.0.1 (or ::1), or pass --listen-public to expose the API beyond this host (the bearer token is still required).",
  },
  LISTEN_FAILED: {
    kind: "conflict",
    remediation: "Another process holds the address or socket: stop the other daemon, or pass --socket / --listen with another one.",
  },
  TTY_REFUSED: {
    kind: "permanent",
    remediation: "`microagent serve mcp` speaks JSON-RPC on stdio for an MCP client to spawn; configure it in the client (docs/mcp.md) instead of running it in a terminal.",
  },
  ROUTE_NOT_FOUND: {
    kind: "not_found",
    remediation: "Check the method and path against /openapi.json (docs/api.md lists the endpoints).",
  },
  IDEMPOTENCY_KEY_REUSED: {
    kind: "conflict",
    remediation: "Use a fresh Idempotency-Key for a different request; a key names one request body.",
  },
  CONFIRMATION_REQUIRED: {
    kind: "permanent",
    remediation: "Call the tool again with `confirm: true` after reading the preview.",
  },
});
