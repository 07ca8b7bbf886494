import { test } from "node:test";
import assert from "node:assert/strict";
import { definedErrorCodes, MicroagentError, ERROR_KINDS } from "../../src/contract/errors.ts";
import { httpStatusFor, errorBody } from "../../src/server/common/status.ts";
import { IdempotencyStore, fingerprintOf } from "../../src/server/common/idempotency.ts";
import { ServerErrors } from "../../src/server/common/errors.ts";
import { ErrorResultSchema } from "../../src/contract/results.ts";
// Every area's codes, so the status table covers all of them.
import "../../src/api/errors.ts";
import "../../src/workspace/errors.ts";
import "../../src/supervisor/errors.ts";

test("server-common: every kind maps to its status, and the precise codes to theirs", () => {
  const byKind: Record<string, number> = { not_found: 404, conflict: 409, permanent: 422, policy_denied: 403, resource_exhausted: 429, unsupported: 501, transient: 503 };
  assert.deepEqual(Object.keys(byKind).sort(), [...ERROR_KINDS].sort());
  const exact: Record<string, number> = { INVALID_ARGUMENT: 400, USAGE: 400, INTERNAL: 500, IO_FAILED: 500, UNAUTHORIZED: 401, IDEMPOTENCY_KEY_REUSED: 422, DISK_FULL: 507, WORKSPACE_NOT_FOUND: 404 };
  for (const [code, spec] of definedErrorCodes()) {
    const e = new MicroagentError(code, { message: "m" });
    const want = exact[code] ?? byKind[spec.kind];
    assert.equal(httpStatusFor(e), want, code);
    assert.ok(want !== undefined && want >= 400 && want < 600, code);
  }
});

test("server-common: the error body is the contract's error result, foreign errors included", () => {
  const { status, body } = errorBody(Object.assign(new Error("gone"), { code: "ENOENT" }));
  assert.equal(status, 404);
  assert.equal(body.error.code, "PATH_NOT_FOUND");
  assert.ok(ErrorResultSchema.safeParse(body).success);
  assert.equal(errorBody(ServerErrors.UNAUTHORIZED({ message: "no" })).status, 401);
});

test("server-common: idempotency replays the same body, refuses another, forgets failures and expired keys", async () => {
  let now = 0;
  const store = new IdempotencyStore({ ttlMs: 1000, maxEntries: 2, now: () => now });
  let calls = 0;
  const fn = async () => ({ n: ++calls });
  assert.deepEqual(await store.run("create", "k1", { a: 1, b: 2 }, fn), { result: { n: 1 }, replayed: false });
  // Key order does not matter; the result is the first one.
  assert.deepEqual(await store.run("create", "k1", { b: 2, a: 1 }, fn), { result: { n: 1 }, replayed: true });
  await assert.rejects(store.run("create", "k1", { a: 2 }, fn), (e: MicroagentError) => e.code === "IDEMPOTENCY_KEY_REUSED" && e.kind === "conflict");
  // Scopes are separate, and no key means no memory.
  assert.equal((await store.run("run", "k1", { a: 9 }, fn)).replayed, false);
  assert.equal((await store.run("create", undefined, { a: 1, b: 2 }, fn)).result.n, 3);
  // Concurrent repeats coalesce onto one call.
  let slow = 0;
  const [x, y] = await Promise.all([
    store.run("create", "k2", {}, async () => (await new Promise((r) => setTimeout(r, 20)), ++slow)),
    store.run("create", "k2", {}, async () => ++slow),
  ]);
  assert.deepEqual([x.result, y.result, y.replayed, slow], [1, 1, true, 1]);
  // A failure is not remembered: the retry runs.
  await assert.rejects(store.run("create", "k3", {}, async () => Promise.reject(new Error("boom"))));
  assert.equal((await store.run("create", "k3", {}, async () => "ok")).replayed, false);
  // Bounded and expiring.
  assert.ok(store.size <= 2, `size ${store.size}`);
  now += 1001;
  assert.equal((await store.run("create", "k3", {}, async () => "again")).result, "again");
  assert.notEqual(fingerprintOf({ a: [1, 2] }), fingerprintOf({ a: [2, 1] }));
});
