/**
 * `image load` of real images with no registry: an umoci-built OCI layout directory, a skopeo
 * `docker-archive` (docker save format), a multi-platform layout, and tampered inputs.
 */
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { execFile } from "node:child_process";
import { cp, mkdir, mkdtemp, readFile, readdir, rm, writeFile } from "node:fs/promises";
import { promisify } from "node:util";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { buildFeatureImage, buildMultiArchImage, dockerArchive, type MultiArchImage, type OciImage } from "../helpers/oci-image.ts";
import { loadImage } from "../../src/image/load.ts";
import { openLayerStream } from "../../src/image/layer.ts";
import { listImages, removeImage } from "../../src/image/images.ts";
import { resolveImage } from "../../src/image/pull.ts";
import { isMicroagentError } from "../../src/contract/errors.ts";

const execFileP = promisify(execFile);
let image: OciImage;
let multi: MultiArchImage;
let scratch: string;
let archive: string;

before(async () => {
  scratch = await mkdtemp(join(tmpdir(), "microagent-image-load-"));
  // docker archives can't carry zstd layers: keep the last layer gzip.
  image = await buildFeatureImage({ lastLayerCompression: "gzip", entrypoint: ["/bin/sh"], cmd: ["-c", "true"] });
  archive = join(scratch, "feature.tar");
  await dockerArchive(image, archive, "example.com/feature:1");
  multi = await buildMultiArchImage();
});
after(async () => {
  await image?.cleanup();
  await multi?.image.cleanup();
  if (scratch) await rm(scratch, { recursive: true, force: true });
});

async function diffIdsOk(img: Awaited<ReturnType<typeof loadImage>>): Promise<void> {
  for (const [i, layer] of img.layers.entries()) {
    const h = createHash("sha256");
    for await (const c of openLayerStream(layer)) h.update(c as Buffer);
    assert.equal(`sha256:${h.digest("hex")}`, img.diffIds[i], `layer ${i}`);
  }
}

test("image-load: an OCI layout directory loads with its manifest digest kept", async () => {
  const stateDir = join(scratch, "state-layout");
  const img = await loadImage(image.layoutDir, { stateDir, ref: "local/feature:dev" });
  assert.equal(img.ref, "docker.io/local/feature:dev");
  assert.equal(img.manifestDigest, image.manifestDigest);
  assert.equal(img.resolvedRef, `docker.io/local/feature@${image.manifestDigest}`);
  assert.deepEqual(img.config.Entrypoint, ["/bin/sh"]);
  assert.equal(img.layers.length, 4);
  await diffIdsOk(img);
  const again = await resolveImage("local/feature:dev", { stateDir, arch: "amd64", pull: false });
  assert.equal(again.manifestDigest, img.manifestDigest);
  const [rec] = await listImages({ stateDir });
  assert.equal(rec?.source, "oci-layout");
});

test("image-load: a docker save archive loads under its RepoTag, layers checked against diff_ids", async () => {
  const stateDir = join(scratch, "state-archive");
  const img = await loadImage(archive, { stateDir });
  assert.equal(img.ref, "example.com/feature:1");
  assert.deepEqual(img.config.Cmd, ["-c", "true"]);
  assert.equal(img.layers.length, 4);
  await diffIdsOk(img);
  assert.deepEqual(await readdir(join(stateDir, "images/tmp")), [], "the unpacked archive is cleaned up");
  assert.equal((await listImages({ stateDir }))[0]?.source, "docker-archive");
  await removeImage("example.com/feature:1", { stateDir });
});

test("image-load: a tar of an OCI layout loads like the directory; a tampered blob in it is refused", async () => {
  const stateDir = join(scratch, "state-layout-tar");
  const tarred = join(scratch, "layout.tar");
  await execFileP("tar", ["-cf", tarred, "-C", image.layoutDir, "."]);
  const img = await loadImage(tarred, { stateDir, ref: "local/tarred:1" });
  assert.equal(img.manifestDigest, image.manifestDigest);
  assert.equal(img.layers.length, 4);
  await diffIdsOk(img);
  assert.deepEqual(await readdir(join(stateDir, "images/tmp")), []);
  // The same layout with one layer blob altered (its name no longer matches its content).
  const bad = join(scratch, "layout-bad");
  await cp(image.layoutDir, bad, { recursive: true });
  const m = JSON.parse(await readFile(join(bad, "blobs/sha256", image.manifestDigest.slice(7)), "utf8")) as { layers: Array<{ digest: string }> };
  const p = join(bad, "blobs/sha256", (m.layers[2] as { digest: string }).digest.slice(7));
  const b = await readFile(p);
  b[b.length >> 1] = (b[b.length >> 1] as number) ^ 1;
  await writeFile(p, b);
  const badTar = join(scratch, "layout-bad.tar");
  await execFileP("tar", ["-cf", badTar, "-C", bad, "."]);
  const badState = join(scratch, "state-layout-tar-bad");
  await assert.rejects(loadImage(badTar, { stateDir: badState, ref: "local/bad:1" }), (e: unknown) => isMicroagentError(e) && e.code === "IMAGE_DIGEST_MISMATCH");
  assert.deepEqual(await listImages({ stateDir: badState }), []);
  assert.deepEqual(await readdir(join(badState, "images/tmp")), []);
});

test("image-load: a multi-platform layout picks --arch", async () => {
  const stateDir = join(scratch, "state-multi");
  const arm = await loadImage(multi.image.layoutDir, { stateDir, ref: "multi", arch: "arm64" });
  assert.equal(arm.manifestDigest, multi.perArch.arm64.manifestDigest);
  await assert.rejects(loadImage(multi.image.layoutDir, { stateDir }), (e: unknown) => isMicroagentError(e) && e.code === "IMAGE_LOAD_AMBIGUOUS");
});

test("image-load: tampered inputs are refused and nothing is recorded", async () => {
  const stateDir = join(scratch, "state-bad");
  // A layout whose biggest layer blob was altered.
  const bad = join(scratch, "bad-layout");
  await cp(image.layoutDir, bad, { recursive: true });
  const manifest = JSON.parse(await readFile(join(bad, "blobs/sha256", image.manifestDigest.slice(7)), "utf8")) as { layers: Array<{ digest: string }> };
  const layerPath = join(bad, "blobs/sha256", (manifest.layers[0] as { digest: string }).digest.slice(7));
  const b = await readFile(layerPath);
  b[b.length >> 1] = (b[b.length >> 1] as number) ^ 1;
  await writeFile(layerPath, b);
  await assert.rejects(loadImage(bad, { stateDir, ref: "bad:1" }), (e: unknown) => isMicroagentError(e) && e.code === "IMAGE_DIGEST_MISMATCH");
  // A docker archive whose layer no longer matches the config's diff_ids.
  const unpacked = join(scratch, "archive-unpacked");
  await mkdir(unpacked);
  await execFileP("tar", ["-xf", archive, "-C", unpacked]);
  const dm = JSON.parse(await readFile(join(unpacked, "manifest.json"), "utf8")) as Array<{ Layers: string[] }>;
  const tarLayer = join(unpacked, dm[0]?.Layers[1] as string);
  const lb = await readFile(tarLayer);
  lb[600] = (lb[600] as number) ^ 1; // inside the first entry's data block
  await writeFile(tarLayer, lb);
  const badArchive = join(scratch, "bad-archive.tar");
  await execFileP("tar", ["-cf", badArchive, "-C", unpacked, "."]);
  await assert.rejects(
    loadImage(badArchive, { stateDir }),
    (e: unknown) => isMicroagentError(e) && e.code === "IMAGE_DIGEST_MISMATCH" && /config expects sha256:/.test(e.message),
  );
  assert.equal((await readdir(join(stateDir, "images/blobs/sha256"))).length, 0, "no blob of the rejected archive was kept");
  // Not an image at all.
  const junk = join(scratch, "junk.tar");
  await writeFile(junk, "not a tar");
  await assert.rejects(loadImage(junk, { stateDir }), (e: unknown) => isMicroagentError(e) && e.code === "IMAGE_LOAD_INVALID");
  await assert.rejects(loadImage(join(scratch, "nope"), { stateDir }), (e: unknown) => isMicroagentError(e) && e.code === "IMAGE_LOAD_INVALID" && /no such file/.test(e.message));
  assert.deepEqual(await listImages({ stateDir }), []);
  assert.deepEqual(await readdir(join(stateDir, "images/tmp")), []);
});
