/** HTTP statuses for our error kinds, with E2B's error body `{code, message}` (control API and envd's /files). */
import { isMicroagentError, toMicroagentError, type MicroagentError } from "../../contract/errors.ts";

const BY_CODE: Record<string, number> = {
  E2B_UNAUTHORIZED: 401,
  INVALID_ARGUMENT: 400,
  USAGE: 400,
  E2B_BAD_REQUEST: 400,
  E2B_NOT_A_FILE: 400,
  E2B_NOT_A_DIRECTORY: 400,
  DISK_FULL: 507,
  FILE_TOO_LARGE: 413,
};

const BY_KIND: Record<MicroagentError["kind"], number> = {
  transient: 503,
  permanent: 500,
  conflict: 409,
  not_found: 404,
  resource_exhausted: 429,
  unsupported: 501,
  policy_denied: 403,
};

export function httpStatus(e: MicroagentError): number {
  return BY_CODE[e.code] ?? BY_KIND[e.kind];
}

export function httpErrorResponse(thrown: unknown): Response {
  const e = isMicroagentError(thrown) ? thrown : toMicroagentError(thrown);
  const status = httpStatus(e);
  const body = { code: status, message: `${e.message} [${e.code}] ${e.remediation}`, kind: e.kind, errorCode: e.code };
  return new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json" } });
}
