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

/** Run `fn` over `items` with at most `limit` in flight; the first failure rejects (others finish). */
export async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T, i: number) => Promise<R>): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  let failed: { e: unknown } | undefined;
  const worker = async () => {
    while (!failed && next < items.length) {
      const i = next++;
      try {
        results[i] = await fn(items[i] as T, i);
      } catch (e) {
        failed ??= { e };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, worker));
  if (failed) throw failed.e;
  return results;
}
