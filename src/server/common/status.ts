/**
 * Error kind -> HTTP status, shared by every HTTP adapter (the API daemon, /mcp, the E2B facade), so a
 * failure reads the same wherever it surfaces. The error object itself travels unchanged in the body.
 */
import { toMicroagentError, type ErrorObject, type MicroagentError } from "../../contract/errors.ts";

/** Codes whose status is more precise than their kind's. */
const BY_CODE: Readonly<Record<string, number>> = {
  USAGE: 400,
  INVALID_ARGUMENT: 400,
  INTERNAL: 500,
  IO_FAILED: 500,
  UNAUTHORIZED: 401,
  IDEMPOTENCY_KEY_REUSED: 422,
  DISK_FULL: 507,
};

const BY_KIND: Readonly<Record<MicroagentError["kind"], number>> = {
  not_found: 404,
  conflict: 409,
  permanent: 422,
  policy_denied: 403,
  resource_exhausted: 429,
  unsupported: 501,
  transient: 503,
};

export function httpStatusFor(e: MicroagentError): number {
  return BY_CODE[e.code] ?? BY_KIND[e.kind];
}

/** The body of every error response: `{ok:false, error}` (ErrorResultSchema), the CLI's --json error shape. */
export function errorBody(e: unknown): { status: number; body: { ok: false; error: ErrorObject } } {
  const err = toMicroagentError(e);
  return { status: httpStatusFor(err), body: { ok: false, error: err.toJSON() } };
}
