/**
 * Pulls from a real registry (Debian's docker-registry on loopback, started here) of real images
 * built with umoci and pushed with skopeo: a multi-layer image with a zstd layer, concurrent
 * layer downloads, a resumed download through a proxy that cuts the first transfer, index
 * platform selection, digest references, and the local index commands (list, tag, rm, prune).
 */
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdtemp, readdir, rm, stat } from "node:fs/promises";
import { createServer, request as httpRequest, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startRegistry, type TestRegistry } from "../helpers/registry.ts";
import { buildFeatureImage, buildMultiArchImage, pushImage, pushMultiArch, type MultiArchImage, type OciImage, type PushedImage } from "../helpers/oci-image.ts";
import { pullImage, resolveImage, type PullProgress } from "../../src/image/pull.ts";
import { listImages, pruneImages, removeImage, tagImage } from "../../src/image/images.ts";
import { openLayerStream } from "../../src/image/layer.ts";
import { isMicroagentError } from "../../src/contract/errors.ts";

let reg: TestRegistry;
let image: OciImage;
let multi: MultiArchImage;
let pushed: PushedImage;
let pushedMulti: PushedImage;
let stateDir: string;

before(async () => {
  reg = await startRegistry();
  image = await buildFeatureImage({ cmd: ["/bin/sh", "-c", "cat /etc/motd"], env: { GREETING: "hi" }, workingDir: "/data", user: "1234:5678" });
  pushed = await pushImage(image, reg, "feature/app:1");
  multi = await buildMultiArchImage();
  pushedMulti = await pushMultiArch(multi, reg, "multi:1");
  stateDir = await mkdtemp(join(tmpdir(), "microagent-image-pull-"));
});

after(async () => {
  await reg?.stop();
  await image?.cleanup();
  await multi?.image.cleanup();
  if (stateDir) await rm(stateDir, { recursive: true, force: true });
});

async function sha256OfStream(s: NodeJS.ReadableStream): Promise<string> {
  const h = createHash("sha256");
  for await (const c of s) h.update(c as Buffer);
  return `sha256:${h.digest("hex")}`;
}

test("image-pull: anonymous pull of a multi-layer image with a zstd layer, layers concurrently, every layer's tar matches its diff_id", async () => {
  const events: PullProgress[] = [];
  let inFlight = 0;
  let maxInFlight = 0;
  const img = await pullImage(pushed.ref, {
    stateDir,
    arch: "amd64",
    concurrency: 3,
    onProgress: (e) => {
      events.push(e);
      if (e.type === "layer-start") maxInFlight = Math.max(maxInFlight, ++inFlight);
      if (e.type === "layer-done") inFlight--;
    },
  });
  assert.equal(img.ref, `${reg.host}/feature/app:1`);
  assert.equal(img.resolvedRef, `${reg.host}/feature/app@${pushed.digest}`);
  assert.equal(img.manifestDigest, pushed.digest);
  assert.deepEqual(img.platform, { os: "linux", architecture: "amd64" });
  assert.deepEqual(img.config.Cmd, ["/bin/sh", "-c", "cat /etc/motd"]);
  assert.ok(img.config.Env?.includes("GREETING=hi"));
  assert.equal(img.config.WorkingDir, "/data");
  assert.equal(img.config.User, "1234:5678");
  assert.deepEqual(img.layers.map((l) => l.compression), ["gzip", "gzip", "gzip", "zstd"]);
  assert.ok(maxInFlight >= 2, `layers should download concurrently (max in flight ${maxInFlight})`);
  assert.equal(events.filter((e) => e.type === "layer-done").length, 4);
  for (const [i, layer] of img.layers.entries()) {
    assert.ok(layer.path.startsWith(join(stateDir, "images/blobs/sha256/")));
    assert.equal(await sha256OfStream(openLayerStream(layer)), img.diffIds[i], `layer ${i} uncompressed = diff_id`);
  }
  const configSize = (await stat(join(stateDir, "images/blobs/sha256", img.configDigest.slice(7)))).size;
  assert.equal(img.sizeBytes, img.layers.reduce((s, l) => s + l.size, 0) + configSize);
  assert.deepEqual(await readdir(join(stateDir, "images/tmp")), []);

  // Second pull: every layer is already in the store.
  const again: PullProgress[] = [];
  await pullImage(pushed.ref, { stateDir, arch: "amd64", onProgress: (e) => again.push(e) });
  assert.equal(again.filter((e) => e.type === "layer-cached").length, 4);
  assert.equal(again.filter((e) => e.type === "layer-start").length, 0);
});

test("image-pull: resolveImage uses the local index first, by tag and by digest, and never pulls with pull:false", async () => {
  const byTag = await resolveImage(pushed.ref, { stateDir, arch: "amd64", pull: false });
  assert.equal(byTag.manifestDigest, pushed.digest);
  const byDigest = await resolveImage(`${reg.host}/feature/app@${pushed.digest}`, { stateDir, arch: "amd64", pull: false });
  assert.equal(byDigest.resolvedRef, byTag.resolvedRef);
  await assert.rejects(
    resolveImage(`${reg.host}/feature/app:2`, { stateDir, arch: "amd64", pull: false }),
    (e: unknown) => isMicroagentError(e) && e.code === "IMAGE_NOT_LOCAL" && e.kind === "not_found",
  );
  await assert.rejects(
    pullImage(`${reg.host}/feature/app:nope`, { stateDir, arch: "amd64", retries: 0 }),
    (e: unknown) => isMicroagentError(e) && e.code === "IMAGE_NOT_FOUND" && e.kind === "not_found" && /HTTP 404/.test(e.message),
  );
});

test("image-pull: an index picks the requested platform; a missing platform lists the available ones", async () => {
  const arm = await pullImage(pushedMulti.ref, { stateDir, arch: "arm64" });
  assert.equal(arm.manifestDigest, multi.perArch.arm64.manifestDigest);
  assert.equal(arm.platform.architecture, "arm64");
  const amd = await pullImage(`${reg.host}/multi@${pushedMulti.digest}`, { stateDir, arch: "x86_64" });
  assert.equal(amd.manifestDigest, multi.perArch.amd64.manifestDigest);
  // The tag records the arm64 pull; the amd64 pull by digest is a record of its own.
  const records = (await listImages({ stateDir })).filter((i) => i.ref === `${reg.host}/multi:1`);
  assert.deepEqual(records.map((r) => r.platform.architecture), ["arm64"]);
  // A single-platform image refuses another architecture.
  const dir = await mkdtemp(join(tmpdir(), "microagent-image-arch-"));
  try {
    await assert.rejects(
      pullImage(pushed.ref, { stateDir: dir, arch: "arm64" }),
      (e: unknown) => isMicroagentError(e) && e.code === "IMAGE_PLATFORM_UNAVAILABLE" && /linux\/amd64/.test(e.message),
    );
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("image-pull: a Docker manifest list over Docker schema 2 images (skopeo v2s2)", async () => {
  const docker = await pushMultiArch(multi, reg, "dockerlist:1", { format: "docker" });
  const dir = await mkdtemp(join(tmpdir(), "microagent-image-docker-"));
  try {
    const arm = await pullImage(docker.ref, { stateDir: dir, arch: "arm64" });
    assert.equal(arm.manifestDigest, docker.perArch.arm64);
    assert.equal(arm.platform.architecture, "arm64");
    assert.ok(arm.layers.every((l) => l.mediaType === "application/vnd.docker.image.rootfs.diff.tar.gzip" && l.compression === "gzip"));
    for (const [i, layer] of arm.layers.entries()) assert.equal(await sha256OfStream(openLayerStream(layer)), arm.diffIds[i]);
    const [record] = await listImages({ stateDir: dir });
    assert.equal(record?.resolvedRef, `${reg.host}/dockerlist@${docker.perArch.arm64}`);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("image-pull: a transfer cut mid-layer resumes with a Range request", async () => {
  // A plain forwarding proxy in front of the real registry that drops the first big blob transfer halfway.
  const seen: string[] = [];
  let cut = false;
  const proxy: Server = createServer((req, res) => {
    if (req.headers.range) seen.push(req.headers.range);
    const upstream = httpRequest({ host: "127.0.0.1", port: Number(reg.host.split(":")[1]), path: req.url, method: req.method, headers: req.headers }, (up) => {
      const big = Number(up.headers["content-length"] ?? 0) > 500_000;
      res.writeHead(up.statusCode ?? 502, up.headers);
      if (big && !cut) {
        cut = true;
        let sent = 0;
        up.on("data", (chunk: Buffer) => {
          if (sent > 300_000) return;
          sent += chunk.length;
          res.write(chunk);
          if (sent > 300_000) {
            up.destroy();
            res.socket?.destroy();
          }
        });
        return;
      }
      up.pipe(res);
    });
    req.pipe(upstream);
  });
  await new Promise<void>((r) => proxy.listen(0, "127.0.0.1", r));
  const port = (proxy.address() as AddressInfo).port;
  const dir = await mkdtemp(join(tmpdir(), "microagent-image-resume-"));
  try {
    const retries: PullProgress[] = [];
    const img = await pullImage(`127.0.0.1:${port}/feature/app:1`, {
      stateDir: dir,
      arch: "amd64",
      retryBaseDelayMs: 10,
      onProgress: (e) => e.type === "layer-retry" && retries.push(e),
    });
    assert.ok(cut, "the proxy cut a transfer");
    assert.equal(retries.length, 1, "one retry");
    assert.equal(seen.length, 1, `one ranged request (saw ${seen.join(", ")})`);
    assert.match(seen[0] as string, /^bytes=\d{6,}-$/);
    for (const [i, layer] of img.layers.entries()) assert.equal(await sha256OfStream(openLayerStream(layer)), img.diffIds[i]);
  } finally {
    proxy.closeAllConnections();
    await new Promise<void>((r) => proxy.close(() => r()));
    await rm(dir, { recursive: true, force: true });
  }
});

test("image-pull: a redirect or token realm to plain HTTP on another host is refused", async () => {
  // A loopback "registry" front that answers like a real one would when misconfigured.
  const front: Server = createServer((req, res) => {
    if (req.url?.includes("/manifests/redirect")) {
      res.writeHead(307, { location: "http://registry.example.invalid:5000/v2/x/manifests/1" }).end();
    } else {
      res.writeHead(401, { "www-authenticate": 'Bearer realm="http://auth.example.invalid/token",service="x"', "content-type": "application/json" }).end("{}");
    }
  });
  await new Promise<void>((r) => front.listen(0, "127.0.0.1", r));
  const host = `127.0.0.1:${(front.address() as AddressInfo).port}`;
  const dir = await mkdtemp(join(tmpdir(), "microagent-image-insecure-"));
  try {
    for (const ref of [`${host}/x:redirect`, `${host}/x:token`]) {
      await assert.rejects(
        pullImage(ref, { stateDir: dir, arch: "amd64", insecureRegistries: [], retries: 0 }),
        (e: unknown) => isMicroagentError(e) && e.code === "REGISTRY_INSECURE_REFUSED" && e.kind === "policy_denied" && /example\.invalid/.test(e.message),
        ref,
      );
    }
  } finally {
    front.closeAllConnections();
    await new Promise<void>((r) => front.close(() => r()));
    await rm(dir, { recursive: true, force: true });
  }
});

test("image-pull: tag, list, rm and prune --delete", async () => {
  const tagged = await tagImage(pushed.ref, "local/mine:v1", { stateDir });
  assert.deepEqual(tagged, [{ ref: "docker.io/local/mine:v1", resolvedRef: `docker.io/local/mine@${pushed.digest}` }]);
  const tagImg = await resolveImage("local/mine:v1", { stateDir, arch: "amd64", pull: false });
  assert.equal(tagImg.manifestDigest, pushed.digest);
  let list = await listImages({ stateDir });
  assert.ok(list.some((i) => i.ref === "docker.io/local/mine:v1" && i.complete));

  await removeImage(pushed.ref, { stateDir });
  // The tag still holds the blobs: prune --delete keeps them.
  const p1 = await pruneImages({ stateDir, delete: true });
  assert.deepEqual(p1.droppedRecords, []);
  assert.ok((await resolveImage("local/mine:v1", { stateDir, arch: "amd64", pull: false })).layers.length === 4);

  // Delete a blob behind the store's back: prune drops the record; --delete frees what nobody uses.
  await rm(tagImg.layers[0]?.path as string);
  list = await listImages({ stateDir });
  assert.equal(list.find((i) => i.ref === "docker.io/local/mine:v1")?.complete, false);
  const p2 = await pruneImages({ stateDir, delete: true });
  assert.deepEqual(p2.droppedRecords, ["docker.io/local/mine:v1 (linux/amd64)"]);
  assert.ok(p2.deletedBlobs.length >= 3 && p2.freedBytes > 0);
  await assert.rejects(removeImage("local/mine:v1", { stateDir }), (e: unknown) => isMicroagentError(e) && e.code === "IMAGE_NOT_LOCAL");
  // The multi-arch records are untouched.
  assert.ok((await listImages({ stateDir })).every((i) => i.ref.includes("/multi")));
});
