import { test } from "node:test";
import assert from "node:assert/strict";
import { appendFile, mkdtemp, rm, unlink, writeFile } from "node:fs/promises";
import { createHash } from "node:crypto";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { isMicroagentError } from "../../src/contract/errors.ts";
import { readManifest, writeManifest, type Manifest } from "../../src/workspace/manifest.ts";
import { assertBootArtifactsVerified, verifyManifest } from "../../src/workspace/verify.ts";
import { mergeBootSpec } from "../../src/workspace/boot-spec.ts";

const sha = (s: string) => createHash("sha256").update(s).digest("hex");

async function fixture() {
  const dir = await mkdtemp(join(tmpdir(), "ws-verify-"));
  const files = { kernel: "KERNEL v1", initramfs: "INITRAMFS with init", rootfs: "EXT4 base", config: '{"argv":[]}' };
  for (const [k, v] of Object.entries(files)) await writeFile(join(dir, k), v);
  const manifest: Manifest = {
    version: 1,
    name: "w",
    createdAt: new Date().toISOString(),
    backend: "linux-qemu",
    arch: "amd64",
    image: { ref: "reg/busybox:1", resolvedRef: `reg/busybox@sha256:${"a".repeat(64)}`, digest: `sha256:${"a".repeat(64)}` },
    resources: { profile: "small", memoryMib: 512, cpus: 2, sizeMib: 1024 },
    network: { mode: "isolated" },
    boot: mergeBootSpec("w", {}, {}),
    artifacts: {
      kernel: { path: join(dir, "kernel"), sha256: sha(files.kernel) },
      initramfs: { path: join(dir, "initramfs"), sha256: sha(files.initramfs) },
      rootfsBase: { path: join(dir, "rootfs"), sha256: sha(files.rootfs), sizeMib: 1 },
      bootConfig: { path: join(dir, "config"), sha256: sha(files.config) },
      disk: { path: join(dir, "disk.qcow2"), format: "qcow2" },
    },
  };
  return { dir, manifest };
}

test("workspace: manifest round-trips through its schema; a bad manifest is WORKSPACE_CORRUPT", async () => {
  const { dir, manifest } = await fixture();
  try {
    const paths = { manifest: join(dir, "manifest.json"), name: "w" };
    await writeManifest(paths, manifest);
    assert.deepEqual(await readManifest(paths), manifest);
    // The disk format is the backend's choice: qcow2 (every manifest so far) and raw read; others do not.
    const withFormat = (format: string) => ({ ...manifest, artifacts: { ...manifest.artifacts, disk: { ...manifest.artifacts.disk, format } } });
    await writeFile(paths.manifest, JSON.stringify(withFormat("raw")));
    assert.equal((await readManifest(paths)).artifacts.disk.format, "raw");
    await writeFile(paths.manifest, JSON.stringify(withFormat("vmdk")));
    await assert.rejects(readManifest(paths), (e: unknown) => isMicroagentError(e) && e.code === "WORKSPACE_CORRUPT");
    await writeFile(paths.manifest, JSON.stringify({ ...manifest, version: 7 }));
    await assert.rejects(readManifest(paths), (e: unknown) => isMicroagentError(e) && e.code === "WORKSPACE_CORRUPT" && /version/.test(e.message));
    await assert.rejects(readManifest({ manifest: join(dir, "nope.json"), name: "zz" }), (e: unknown) => isMicroagentError(e) && e.code === "WORKSPACE_NOT_FOUND");
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("workspace: verification is ok on untouched artifacts and reports every tampered one", async () => {
  const { dir, manifest } = await fixture();
  try {
    const ok = await verifyManifest(manifest, "prepared");
    assert.equal(ok.ok, true);
    assert.deepEqual(ok.divergence, []);
    assert.equal(ok.imageDigest, manifest.image.digest);
    assert.equal(ok.rootfs.checked, true);

    await appendFile(join(dir, "kernel"), "tampered");
    await writeFile(join(dir, "rootfs"), "other base");
    const bad = await verifyManifest(manifest, "prepared");
    assert.equal(bad.ok, false);
    assert.deepEqual(
      bad.divergence.map((d) => [d.artifact, d.field, d.expected]),
      [
        ["kernel", "sha256", manifest.artifacts.kernel.sha256],
        ["rootfs", "sha256", manifest.artifacts.rootfsBase.sha256],
      ],
    );
    assert.equal(bad.divergence[0]?.actual, sha("KERNEL v1tampered"));

    // After a boot the rootfs is not compared (the guest writes to its disk).
    const afterBoot = await verifyManifest(manifest, "halted");
    assert.deepEqual(afterBoot.divergence.map((d) => d.artifact), ["kernel"]);
    assert.equal(afterBoot.rootfs.checked, false);

    await unlink(join(dir, "initramfs"));
    const missing = await verifyManifest(manifest, "halted");
    assert.deepEqual(missing.divergence.find((d) => d.artifact === "init"), {
      artifact: "init",
      field: "exists",
      expected: "present",
      actual: "missing",
      path: join(dir, "initramfs"),
      error: missing.divergence.find((d) => d.artifact === "init")?.error,
    });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("workspace: start refuses a diverged kernel unless forced", async () => {
  const { dir, manifest } = await fixture();
  try {
    await assertBootArtifactsVerified("w", manifest, "halted");
    await writeFile(join(dir, "kernel"), "someone else's kernel");
    await assert.rejects(assertBootArtifactsVerified("w", manifest, "halted"), (e: unknown) => {
      assert.ok(isMicroagentError(e));
      assert.equal(e.code, "WORKSPACE_DIVERGED");
      assert.match(e.message, /kernel diverged/);
      return true;
    });
    const forced = await assertBootArtifactsVerified("w", manifest, "halted", { force: true });
    assert.equal(forced.ok, false);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
