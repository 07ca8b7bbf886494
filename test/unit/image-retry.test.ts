import { test } from "node:test";
import assert from "node:assert/strict";
import { ImageErrors } from "../../src/image/errors.ts";
import { backoffMs, withRetry } from "../../src/image/retry.ts";
import { mapLimit } from "../../src/util/concurrency.ts";

test("image-retry: retryable errors are retried up to the limit, others at once", async () => {
  let calls = 0;
  const flaky = () => {
    calls++;
    if (calls < 3) throw ImageErrors.REGISTRY_UNAVAILABLE({ message: "503" });
    return Promise.resolve("ok");
  };
  assert.equal(await withRetry({ retries: 4, baseDelayMs: 1 }, async () => flaky()), "ok");
  assert.equal(calls, 3);
  calls = 0;
  await assert.rejects(
    withRetry({ retries: 1, baseDelayMs: 1 }, async () => {
      calls++;
      throw ImageErrors.REGISTRY_RATE_LIMITED({ message: "429" });
    }),
    /429/,
  );
  assert.equal(calls, 2);
  calls = 0;
  await assert.rejects(
    withRetry({ retries: 5, baseDelayMs: 1 }, async () => {
      calls++;
      throw ImageErrors.IMAGE_DIGEST_MISMATCH({ message: "bad" });
    }),
    /bad/,
  );
  assert.equal(calls, 1, "a digest mismatch is never retried");
});

test("image-retry: backoff doubles with jitter and a cap", () => {
  for (let i = 0; i < 50; i++) {
    const b0 = backoffMs(0, { retries: 3, baseDelayMs: 100 });
    const b3 = backoffMs(3, { retries: 3, baseDelayMs: 100 });
    assert.ok(b0 >= 50 && b0 <= 100, String(b0));
    assert.ok(b3 >= 400 && b3 <= 800, String(b3));
    assert.ok(backoffMs(20, { retries: 3, baseDelayMs: 100, maxDelayMs: 1000 }) <= 1000);
  }
});

test("image-retry: mapLimit bounds concurrency, keeps order, and surfaces the first failure", async () => {
  let inFlight = 0;
  let max = 0;
  const out = await mapLimit([5, 1, 4, 2, 3, 0], 2, async (ms, i) => {
    max = Math.max(max, ++inFlight);
    await new Promise((r) => setTimeout(r, ms));
    inFlight--;
    return i * 10;
  });
  assert.deepEqual(out, [0, 10, 20, 30, 40, 50]);
  assert.equal(max, 2);
  await assert.rejects(
    mapLimit([1, 2, 3], 3, async (x) => {
      if (x === 2) throw new Error("two");
      return x;
    }),
    /two/,
  );
});
