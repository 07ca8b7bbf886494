/**
 * The response shape shared by lifecycle and host commands. Each command fills the fields that
 * apply to it; absent fields are omitted from JSON, never null-padded.
 */
import type { ErrorObject } from "./errors.ts";
import type { BackendName } from "./backend.ts";

export type Verdict = "ok" | "degraded" | "failed";

export interface Response<Result = unknown> {
  ok: boolean;
  /** Only on doctor/host: ok, degraded (optional checks failed) or failed. */
  verdict?: Verdict;
  backend?: BackendName;
  host?: unknown;
  kernel?: unknown;
  event?: unknown;
  verification?: unknown;
  readiness?: unknown;
  result?: Result;
  error?: ErrorObject;
}
