/**
 * The one place where registry HTTP statuses and transport failures become microagent errors.
 *   401 -> REGISTRY_UNAUTHORIZED (policy_denied, login hint)   403 -> REGISTRY_DENIED (policy_denied)
 *   404 -> IMAGE_NOT_FOUND / IMAGE_BLOB_MISSING (not_found)     429 -> REGISTRY_RATE_LIMITED (transient)
 *   408, 5xx, resets, refused, timeouts -> REGISTRY_UNAVAILABLE (transient, retryable)
 *   anything else -> REGISTRY_PROTOCOL (permanent)
 */
import { isMicroagentError, type MicroagentError } from "../contract/errors.ts";
import { ImageErrors } from "./errors.ts";

export interface StatusContext {
  /** What we asked for, for the message: "manifest docker.io/library/alpine:latest". */
  what: string;
  registry: string;
  /** Response body text (bounded), for the registry's own error codes. */
  body?: string;
  /** The request was for a blob (404 means a missing blob, not a missing image). */
  blob?: boolean;
}

/** The registry's `{"errors":[{"code","message"}]}` summarized, or "". */
function registryDetail(body: string | undefined): string {
  if (!body) return "";
  try {
    const parsed = JSON.parse(body) as { errors?: Array<{ code?: string; message?: string }> };
    const first = parsed.errors?.[0];
    if (first) return ` (${[first.code, first.message].filter(Boolean).join(": ")})`;
  } catch {
    // not JSON: ignore
  }
  return "";
}

export function statusError(status: number, ctx: StatusContext): MicroagentError {
  const detail = registryDetail(ctx.body);
  const details = { status, registry: ctx.registry, what: ctx.what };
  if (status === 401) {
    return ImageErrors.REGISTRY_UNAUTHORIZED({
      message: `registry ${ctx.registry} refused ${ctx.what}: authentication required (HTTP 401)${detail}`,
      remediation: `Log in with \`microagent registry login ${ctx.registry} -u USER --password-stdin\`, or check that the image exists and you may read it.`,
      details,
    });
  }
  if (status === 403) {
    return ImageErrors.REGISTRY_DENIED({ message: `registry ${ctx.registry} denied ${ctx.what} (HTTP 403)${detail}`, details });
  }
  if (status === 404) {
    return ctx.blob
      ? ImageErrors.IMAGE_BLOB_MISSING({
          message: `registry ${ctx.registry} has no ${ctx.what} (HTTP 404)${detail}`,
          remediation: "The image's manifest names a blob the registry does not have; push the image again.",
          details,
        })
      : ImageErrors.IMAGE_NOT_FOUND({ message: `${ctx.what} not found on ${ctx.registry} (HTTP 404)${detail}`, details });
  }
  if (status === 429) {
    return ImageErrors.REGISTRY_RATE_LIMITED({ message: `registry ${ctx.registry} is rate limiting ${ctx.what} (HTTP 429)${detail}`, details });
  }
  if (status === 408 || status >= 500) {
    return ImageErrors.REGISTRY_UNAVAILABLE({ message: `registry ${ctx.registry} failed ${ctx.what} (HTTP ${status})${detail}`, details });
  }
  return ImageErrors.REGISTRY_PROTOCOL({ message: `registry ${ctx.registry} answered ${ctx.what} with unexpected HTTP ${status}${detail}`, details });
}

const TRANSIENT_CODES = new Set([
  "ECONNREFUSED", "ECONNRESET", "EPIPE", "ETIMEDOUT", "EAI_AGAIN", "ENOTFOUND", "EHOSTUNREACH", "ENETUNREACH",
  "UND_ERR_CONNECT_TIMEOUT", "UND_ERR_HEADERS_TIMEOUT", "UND_ERR_BODY_TIMEOUT", "UND_ERR_SOCKET", "UND_ERR_CLOSED",
  "UND_ERR_ABORTED", "ERR_STREAM_PREMATURE_CLOSE",
]);

/** Translate a transport error (undici / socket / TLS) for `registry`. */
export function transportError(e: unknown, registry: string, what: string): MicroagentError {
  if (isMicroagentError(e)) return e;
  const err = e as NodeJS.ErrnoException & { cause?: NodeJS.ErrnoException };
  const code = err?.code ?? err?.cause?.code ?? "";
  const message = err instanceof Error ? err.message : String(e);
  if (/CERT|SSL|TLS|wrong version number|self.signed/i.test(`${code} ${message}`)) {
    return ImageErrors.REGISTRY_PROTOCOL({
      message: `TLS to registry ${registry} failed while fetching ${what}: ${message}`,
      remediation: `Check the registry's certificate. If ${registry} serves plain HTTP on a trusted network, list it in MICROAGENT_INSECURE_REGISTRIES.`,
      cause: e,
      details: { registry, code },
    });
  }
  if (TRANSIENT_CODES.has(code) || err?.name === "AbortError" || err?.name === "TimeoutError") {
    return ImageErrors.REGISTRY_UNAVAILABLE({
      message: `registry ${registry} could not be reached for ${what}: ${code || message}`,
      cause: e,
      details: { registry, code },
    });
  }
  return ImageErrors.REGISTRY_UNAVAILABLE({ message: `request to registry ${registry} for ${what} failed: ${message}`, cause: e, details: { registry, code } });
}

/** Errors thrown while reading a response body: transport failures become REGISTRY_UNAVAILABLE, the rest pass. */
export function bodyError(e: unknown, registry: string, what: string): unknown {
  if (isMicroagentError(e)) return e;
  const err = e as NodeJS.ErrnoException & { cause?: NodeJS.ErrnoException };
  const code = err?.code ?? err?.cause?.code ?? "";
  if (TRANSIENT_CODES.has(code) || code.startsWith("UND_ERR") || err?.name === "AbortError") return transportError(e, registry, what);
  return e;
}
