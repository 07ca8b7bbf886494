import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { formatImageTable, humanBytes } from "../../src/cli/commands/image.ts";
import { buildBusyboxImage } from "../helpers/oci-image.ts";
import { runCli } from "../helpers/cli.ts";

test("image-cli: load, list, tag, rm and prune through the CLI in JSON", async () => {
  const stateDir = await mkdtemp(join(tmpdir(), "microagent-image-cli-"));
  const image = await buildBusyboxImage({ noBusybox: true, files: { "/hello": "hi\n" }, cmd: ["/hello"] });
  try {
    const g = ["--state-dir", stateDir, "--json"];
    let r = await runCli([...g, "image", "list"]);
    assert.deepEqual(JSON.parse(r.out), { images: [] });
    r = await runCli([...g, "image", "load", image.layoutDir, "--ref", "demo/app:1"]);
    assert.equal(r.code, 0, r.out + r.err);
    const loaded = JSON.parse(r.out) as { ref: string; digest: string; layers: unknown[] };
    assert.equal(loaded.ref, "docker.io/demo/app:1");
    assert.equal(loaded.digest, image.manifestDigest);
    r = await runCli([...g, "image", "tag", "demo/app:1", "demo/app:2"]);
    assert.equal(r.code, 0, r.out);
    r = await runCli([...g, "image", "ls"]);
    const list = JSON.parse(r.out) as { images: Array<{ ref: string; complete: boolean; digest: string }> };
    assert.deepEqual(list.images.map((i) => i.ref), ["docker.io/demo/app:1", "docker.io/demo/app:2"]);
    assert.ok(list.images.every((i) => i.complete && i.digest === image.manifestDigest));
    r = await runCli([...g, "image", "rm", "demo/app:1"]);
    assert.deepEqual(JSON.parse(r.out), { removed: ["docker.io/demo/app:1 (linux/amd64)"] });
    r = await runCli([...g, "image", "rm", "demo/app:1"]);
    assert.equal(r.code, 1);
    assert.equal((JSON.parse(r.out) as { error: { code: string } }).error.code, "IMAGE_NOT_LOCAL");
    r = await runCli([...g, "image", "prune", "--delete"]);
    assert.deepEqual(JSON.parse(r.out), { droppedRecords: [], deletedBlobs: [], freedBytes: 0 });
    r = await runCli([...g, "image", "rm", "demo/app:2"]);
    r = await runCli([...g, "image", "prune", "--delete"]);
    const pruned = JSON.parse(r.out) as { deletedBlobs: string[]; freedBytes: number };
    assert.equal(pruned.deletedBlobs.length, 3, "manifest, config and one layer");
    r = await runCli(["--state-dir", stateDir, "image", "pull", "Not/Valid"]);
    assert.equal(r.code, 1);
    assert.match(r.err, /invalid image reference 'Not\/Valid'.*\n {2}fix: /);
  } finally {
    await image.cleanup();
    await rm(stateDir, { recursive: true, force: true });
  }
});

test("image-cli: text formatting", () => {
  assert.equal(humanBytes(512), "512 B");
  assert.equal(humanBytes(1536), "1.5 KiB");
  assert.equal(humanBytes(300 * 1024 * 1024), "300 MiB");
  assert.match(formatImageTable([]), /no images/);
  const t = formatImageTable([
    {
      ref: "docker.io/library/alpine:3",
      resolvedRef: "x",
      manifestDigest: `sha256:${"ab".repeat(32)}`,
      platform: { os: "linux", architecture: "arm64", variant: "v8" },
      sizeBytes: 3_500_000,
      source: "registry",
      createdAt: "2026-01-01T00:00:00.000Z",
      lastUsedAt: "2026-01-02T03:04:05.000Z",
      complete: false,
    },
  ]);
  assert.match(t, /^REF\s+DIGEST\s+PLATFORM\s+SIZE\s+LAST USED\n/);
  assert.match(t, /docker\.io\/library\/alpine:3 {2}abababababab \(incomplete\) {2}linux\/arm64\/v8 {2}3\.3 MiB {2}2026-01-02 03:04:05/);
});
