/** Retry with exponential backoff and jitter, for errors marked retryable. */
import { setTimeout as sleep } from "node:timers/promises";
import { isMicroagentError } from "../contract/errors.ts";

export interface RetryPolicy {
  /** Extra attempts after the first. */
  retries: number;
  /** First backoff, ms; doubles each attempt (with up to 50% jitter). */
  baseDelayMs: number;
  maxDelayMs?: number;
  signal?: AbortSignal | undefined;
}

export function isRetryable(e: unknown): boolean {
  return isMicroagentError(e) && e.retryable;
}

export function backoffMs(attempt: number, policy: RetryPolicy): number {
  const base = Math.min(policy.baseDelayMs * 2 ** attempt, policy.maxDelayMs ?? 10_000);
  return Math.round(base * (0.5 + Math.random() * 0.5));
}

export async function withRetry<T>(policy: RetryPolicy, fn: (attempt: number) => Promise<T>): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await fn(attempt);
    } catch (e) {
      if (attempt >= policy.retries || !isRetryable(e)) throw e;
      await sleep(backoffMs(attempt, policy), undefined, { signal: policy.signal });
    }
  }
}
