/**
 * Idempotency keys for mutating calls (create, run): a key names one request. A repeat with the same
 * key and the same body gets the first call's result (a concurrent repeat waits for it); the same key
 * with a different body is IDEMPOTENCY_KEY_REUSED. Only successes are remembered, so a failed call
 * may be retried under its key. In memory, bounded in count and time: it protects against a client
 * retrying over a dropped connection, not against a daemon restart.
 */
import { createHash } from "node:crypto";
import { ServerErrors } from "./errors.ts";

export interface IdempotencyOptions {
  ttlMs?: number;
  maxEntries?: number;
  now?: () => number;
}

interface Entry {
  fingerprint: string;
  expiresAt: number;
  result: Promise<unknown>;
}

export class IdempotencyStore {
  readonly #entries = new Map<string, Entry>();
  readonly #ttlMs: number;
  readonly #max: number;
  readonly #now: () => number;

  constructor(o: IdempotencyOptions = {}) {
    this.#ttlMs = o.ttlMs ?? 15 * 60_000;
    this.#max = o.maxEntries ?? 1024;
    this.#now = o.now ?? Date.now;
  }

  get size(): number {
    return this.#entries.size;
  }

  /**
   * Run `fn` once per (scope, key). `body` is what the key promises to stand for (compared by a hash
   * of its canonical JSON). Resolves with the result and whether it was a replay.
   */
  async run<T>(scope: string, key: string | undefined, body: unknown, fn: () => Promise<T>): Promise<{ result: T; replayed: boolean }> {
    if (!key) return { result: await fn(), replayed: false };
    this.#expire();
    const id = `${scope}\0${key}`;
    const fingerprint = fingerprintOf(body);
    const hit = this.#entries.get(id);
    if (hit) {
      if (hit.fingerprint !== fingerprint) {
        throw ServerErrors.IDEMPOTENCY_KEY_REUSED({
          message: `Idempotency-Key '${key}' was already used for a different ${scope} request`,
          details: { key, scope },
        });
      }
      return { result: (await hit.result) as T, replayed: true };
    }
    const result = fn();
    this.#entries.set(id, { fingerprint, expiresAt: this.#now() + this.#ttlMs, result });
    while (this.#entries.size > this.#max) this.#entries.delete(this.#entries.keys().next().value as string);
    try {
      return { result: await result, replayed: false };
    } catch (e) {
      if (this.#entries.get(id)?.result === result) this.#entries.delete(id);
      throw e;
    }
  }

  #expire(): void {
    const now = this.#now();
    for (const [id, e] of this.#entries) if (e.expiresAt <= now) this.#entries.delete(id);
  }
}

/** A hash of the value's JSON with object keys sorted (so key order does not change the fingerprint). */
export function fingerprintOf(value: unknown): string {
  return createHash("sha256").update(canonical(value)).digest("hex");
}

function canonical(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(",")}]`;
  if (v && typeof v === "object") {
    const entries = Object.entries(v as Record<string, unknown>).filter(([, x]) => x !== undefined).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, x]) => `${JSON.stringify(k)}:${canonical(x)}`).join(",")}}`;
  }
  return JSON.stringify(v) ?? "null";
}
