/**
 * The one error type of microagent. Every failure the library reports is a MicroagentError with a
 * stable `code` (machine-readable, never reworded), a `kind` from the output contract, a message
 * naming the cause and a remediation naming the fix. Areas declare their codes with `defineErrors`
 * in their own `errors.ts`; the CLI renders any of them the same way at one place.
 */
import { randomUUID } from "node:crypto";

export const ERROR_KINDS = [
  "transient",
  "permanent",
  "conflict",
  "not_found",
  "resource_exhausted",
  "unsupported",
  "policy_denied",
] as const;
export type ErrorKind = (typeof ERROR_KINDS)[number];

/** What a code means, independent of any one occurrence. */
export interface ErrorSpec {
  kind: ErrorKind;
  /** True when the same call may succeed if simply repeated later (exit code 75). */
  retryable?: boolean;
  /** The fix to suggest when the thrower gives none. */
  remediation: string;
}

export interface MicroagentErrorInit {
  message: string;
  remediation?: string;
  cause?: unknown;
  /** Structured facts about this occurrence (paths, digests, exit codes); printed in JSON. */
  details?: Record<string, unknown>;
}

/** The JSON form of an error: the contract's error object. */
export interface ErrorObject {
  kind: ErrorKind;
  code: string;
  message: string;
  remediation: string;
  retryable: boolean;
  correlation_id: string;
  details?: Record<string, unknown>;
}

const registry = new Map<string, ErrorSpec>();

export class MicroagentError extends Error {
  readonly code: string;
  readonly kind: ErrorKind;
  readonly remediation: string;
  readonly retryable: boolean;
  readonly details: Record<string, unknown> | undefined;
  readonly correlationId: string;

  constructor(code: string, init: MicroagentErrorInit) {
    super(init.message, init.cause === undefined ? undefined : { cause: init.cause });
    const spec = registry.get(code);
    if (!spec) throw new Error(`internal: error code ${code} was never defined with defineErrors`);
    this.name = "MicroagentError";
    this.code = code;
    this.kind = spec.kind;
    this.retryable = spec.retryable ?? false;
    this.remediation = init.remediation ?? spec.remediation;
    this.details = init.details;
    this.correlationId = randomUUID();
  }

  toJSON(): ErrorObject {
    return {
      kind: this.kind,
      code: this.code,
      message: this.message,
      remediation: this.remediation,
      retryable: this.retryable,
      correlation_id: this.correlationId,
      ...(this.details ? { details: this.details } : {}),
    };
  }
}

/**
 * One code's constructor, which also names the code it makes: `Errors.CODE.is(e)` is the checked
 * form of `e.code === "CODE"` (a misspelt or removed code is a compile error, not a silent false).
 */
export type ErrorFactory<C extends string> = ((init: MicroagentErrorInit) => MicroagentError & { readonly code: C }) & {
  readonly code: C;
  /** True when `e` is a MicroagentError with this code. */
  is(e: unknown): e is MicroagentError & { readonly code: C };
};

/**
 * Declare a family of error codes. Returns one constructor function per code, so call sites read
 * `throw KernelErrors.SHA_MISMATCH({ message, details })` and test with `KernelErrors.SHA_MISMATCH.is(e)`.
 */
export function defineErrors<const T extends Record<string, ErrorSpec>>(specs: T): { [K in keyof T & string]: ErrorFactory<K> } {
  const out: Record<string, ErrorFactory<string>> = {};
  for (const [code, spec] of Object.entries(specs)) {
    const existing = registry.get(code);
    if (existing && existing !== spec) throw new Error(`internal: error code ${code} defined twice`);
    registry.set(code, spec);
    const make = (init: MicroagentErrorInit) => new MicroagentError(code, init);
    const is = (e: unknown): e is MicroagentError => e instanceof MicroagentError && e.code === code;
    out[code] = Object.assign(make, { code, is });
  }
  return out as { [K in keyof T & string]: ErrorFactory<K> };
}

/** Every code defined so far (for the table-driven test and `docs/errors`). */
export function definedErrorCodes(): ReadonlyMap<string, ErrorSpec> {
  return registry;
}

export function isMicroagentError(e: unknown): e is MicroagentError {
  return e instanceof MicroagentError;
}

/** Codes shared by every area. */
export const CommonErrors = defineErrors({
  USAGE: {
    kind: "permanent",
    remediation: "Run `microagent <command> --help` for the accepted flags.",
  },
  INVALID_ARGUMENT: {
    kind: "permanent",
    remediation: "Check the value against `microagent <command> --help`.",
  },
  INTERNAL: {
    kind: "permanent",
    remediation: "This is a bug in microagent: rerun with --json and report the output.",
  },
  INTERRUPTED: {
    kind: "transient",
    retryable: true,
    remediation: "The operation was interrupted; run it again.",
  },
  TOOL_MISSING: {
    kind: "unsupported",
    remediation: "Run scripts/setup, or install the named tool with your package manager.",
  },
  IO_FAILED: {
    kind: "permanent",
    remediation: "Check the path's permissions and free disk space.",
  },
  PATH_NOT_FOUND: {
    kind: "not_found",
    remediation: "Check that the named path exists.",
  },
  PERMISSION_DENIED: {
    kind: "policy_denied",
    remediation: "Check ownership of the path, or pass --state-dir to a directory you own.",
  },
  DISK_FULL: {
    kind: "resource_exhausted",
    remediation: "Free disk space under the state directory (e.g. `microagent image prune --delete`).",
  },
});

/**
 * Translate an unknown thrown value (a Node system error, a plain Error) into a MicroagentError.
 * Areas translate their own foreign errors first; this is the last-resort mapping.
 */
export function toMicroagentError(e: unknown): MicroagentError {
  if (e instanceof MicroagentError) return e;
  const err = e as NodeJS.ErrnoException;
  const message = err instanceof Error ? err.message : String(e);
  switch (err?.code) {
    case "ENOSPC":
      return CommonErrors.DISK_FULL({ message, cause: e });
    case "EACCES":
    case "EPERM":
      return CommonErrors.PERMISSION_DENIED({ message, cause: e });
    case "ENOENT":
      return CommonErrors.PATH_NOT_FOUND({ message, cause: e });
    default:
      return CommonErrors.INTERNAL({ message, cause: e });
  }
}
