/**
 * Hostile or broken registry content, served by a real registry whose storage we tamper with:
 * a layer whose bytes don't match its digest, a truncated layer, an oversize layer, a missing
 * blob. Each is a clear error, and nothing corrupt (no blob, no temp file, no record) is kept.
 */
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { appendFile, mkdtemp, readFile, readdir, rm, truncate, writeFile } from "node:fs/promises";
import { randomBytes } from "node:crypto";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startRegistry, type TestRegistry } from "../helpers/registry.ts";
import { addTarLayer, buildBusyboxImage, pushImage, type OciImage } from "../helpers/oci-image.ts";
import { pullImage } from "../../src/image/pull.ts";
import { listImages } from "../../src/image/images.ts";
import { isMicroagentError } from "../../src/contract/errors.ts";

let reg: TestRegistry;
let image: OciImage;
let layerDigest: string;
const dirs: string[] = [];

before(async () => {
  reg = await startRegistry();
  image = await buildBusyboxImage({ noBusybox: true, files: { "/etc/base": "base\n" } });
  const layer = await addTarLayer(image, [{ path: "data/", type: "dir" }, { path: "data/payload", type: "file", content: randomBytes(200_000) }], { compression: "gzip" });
  layerDigest = layer.digest;
});
after(async () => {
  await reg?.stop();
  await image?.cleanup();
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

/** Push under a fresh name, run `tamper` on the registry's copy of the layer, pull, and check nothing stayed. */
async function pullTampered(name: string, tamper: (blobPath: string) => Promise<void>, check: (e: unknown) => boolean): Promise<void> {
  const pushed = await pushImage(image, reg, `${name}:1`);
  const blob = reg.blobPath(layerDigest);
  const original = await readFile(blob);
  await tamper(blob);
  const stateDir = await mkdtemp(join(tmpdir(), "microagent-image-corrupt-"));
  dirs.push(stateDir);
  try {
    await assert.rejects(pullImage(pushed.ref, { stateDir, arch: "amd64", retries: 1, retryBaseDelayMs: 10 }), check);
    const blobs = await readdir(join(stateDir, "images/blobs/sha256"));
    assert.ok(!blobs.includes(layerDigest.slice(7)), "the bad layer is not in the store");
    assert.deepEqual(await readdir(join(stateDir, "images/tmp")), [], "no temp file left");
    assert.deepEqual(await listImages({ stateDir }), [], "no record");
  } finally {
    await writeFile(blob, original); // restore for the next case (blobs are shared across names)
  }
}

test("image-corrupt: a tampered layer fails the digest check", async () => {
  await pullTampered(
    "tampered",
    async (p) => {
      const b = await readFile(p);
      b[b.length - 2000] = (b[b.length - 2000] as number) ^ 0xff;
      await writeFile(p, b);
    },
    (e) => isMicroagentError(e) && e.code === "IMAGE_DIGEST_MISMATCH" && e.kind === "permanent" && e.message.includes(layerDigest),
  );
});

test("image-corrupt: a truncated layer is rejected as truncated", async () => {
  await pullTampered(
    "truncated",
    (p) => truncate(p, 1000),
    (e) => isMicroagentError(e) && e.code === "IMAGE_SIZE_MISMATCH" && /truncated: received 1000 of \d+ bytes/.test(e.message),
  );
});

test("image-corrupt: a layer bigger than declared is cut off and rejected", async () => {
  await pullTampered(
    "oversize",
    (p) => appendFile(p, Buffer.alloc(5000, 0x62)),
    (e) => isMicroagentError(e) && e.code === "IMAGE_SIZE_MISMATCH" && /bigger than its declared/.test(e.message),
  );
});

test("image-corrupt: a blob missing from the registry is a clear not_found", async () => {
  await pullTampered(
    "missing",
    (p) => rm(p),
    (e) => isMicroagentError(e) && e.kind === "not_found" && e.message.includes(layerDigest),
  );
});
