/**
 * A registry (on loopback, made by the test) that announces a 10 GiB manifest and then stalls: the
 * pull is refused at once from the declared length (IMAGE_MANIFEST_INVALID, permanent), instead of
 * waiting out the body timeout on every retry (306 s in the reliability campaign).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { createServer, type ServerResponse } from "node:http";
import type { Socket } from "node:net";
import { join } from "node:path";
import { scratchDir } from "../helpers/scratch.ts";
import { pullImage } from "../../src/image/pull.ts";
import { isMicroagentError } from "../../src/contract/errors.ts";

test("image-hostile-registry: a manifest whose Content-Length exceeds the 4 MiB cap is refused at once, without retries", async () => {
  const sockets = new Set<Socket>();
  const stalled: ServerResponse[] = [];
  let manifestRequests = 0;
  const server = createServer((req, res) => {
    if (req.url === "/v2/") {
      res.writeHead(200, { "content-type": "application/json" }).end("{}");
      return;
    }
    if (req.url?.includes("/manifests/")) {
      manifestRequests++;
      res.writeHead(200, { "content-type": "application/vnd.oci.image.manifest.v1+json", "content-length": String(10 * 1024 ** 3) });
      res.write("{");
      stalled.push(res); // never ends
      return;
    }
    res.writeHead(404).end();
  });
  server.on("connection", (s) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as { port: number }).port;
  const t0 = Date.now();
  try {
    await pullImage(`127.0.0.1:${port}/hostile/big:1`, { stateDir: join(scratchDir("image-hostile-registry"), "state"), retryBaseDelayMs: 10 });
    assert.fail("the pull should have been refused");
  } catch (e) {
    assert.ok(isMicroagentError(e), String(e));
    assert.equal(e.code, "IMAGE_MANIFEST_INVALID", e.message);
    assert.match(e.message, /declares 10737418240 bytes \(Content-Length\); refusing more than 4194304/);
  } finally {
    for (const s of sockets) s.destroy();
    await new Promise<void>((r) => server.close(() => r()));
  }
  assert.ok(Date.now() - t0 < 10_000, `refused in ${Date.now() - t0} ms`);
  assert.equal(manifestRequests, 1, "not retried");
});
