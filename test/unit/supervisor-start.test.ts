/**
 * `start` without a VM boot: a supervisor that dies at once (`--supervisor` override) and the real
 * supervisor handed a kernel QEMU cannot load. Both must fail `start` with the reason and leave the
 * workspace recorded `failed`, never `starting`. Workspaces come from create with small stand-in
 * providers (real files, real qemu-img overlay).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { chmod, mkdtemp, rm, truncate, writeFile } from "node:fs/promises";
import { createHash } from "node:crypto";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createWorkspace, type CreateProviders } from "../../src/workspace/create.ts";
import { workspacePaths } from "../../src/workspace/paths.ts";
import { readState } from "../../src/workspace/state.ts";
import { startWorkspace } from "../../src/api/lifecycle.ts";

const sha = (s: string | Buffer) => createHash("sha256").update(s).digest("hex");

async function providers(dir: string): Promise<CreateProviders> {
  await writeFile(join(dir, "vmlinuz"), "not a kernel");
  await writeFile(join(dir, "initramfs"), "not an initramfs");
  const base = join(dir, "base.ext4");
  await writeFile(base, "");
  await truncate(base, 4 * 1024 * 1024);
  const digest = `sha256:${"c".repeat(64)}`;
  return {
    resolveImage: async (ref) => ({ image: { ref }, info: { ref, resolvedRef: `${ref.split(":")[0]}@${digest}`, manifestDigest: digest, config: {} } }),
    ensureKernel: async () => ({ kernel: { path: join(dir, "vmlinuz"), sha256: sha("not a kernel") }, initramfs: { path: join(dir, "initramfs"), sha256: sha("not an initramfs") } }),
    ensureBaseRootfs: async () => ({ path: base, sha256: sha(Buffer.alloc(4 * 1024 * 1024)), sizeMib: 4, cacheHit: true }),
  };
}

test("supervisor: a supervisor that dies at once fails start with its last words and records failed", async () => {
  const dir = await mkdtemp(join(tmpdir(), "sup-start-"));
  try {
    const stateDir = join(dir, "state");
    await createWorkspace({ name: "w", image: "reg/img:1", stateDir, providers: await providers(dir), profile: "tiny" });
    const fake = join(dir, "fake-supervisor");
    await writeFile(fake, "#!/bin/sh\necho \"fake supervisor: refusing to run in $1\" >&2\nexit 3\n");
    await chmod(fake, 0o755);
    await assert.rejects(startWorkspace("w", { stateDir, supervisorPath: fake, timeoutMs: 20_000 }), (e: Error & { code?: string }) => {
      assert.equal(e.code, "SUPERVISOR_START_FAILED");
      assert.match(e.message, /fake supervisor: refusing to run in .*workspaces\/w/);
      return true;
    });
    const state = await readState(workspacePaths(stateDir, "w"));
    assert.equal(state?.state, "failed");
    assert.match(state?.detail ?? "", /exited before the workspace was running: fake supervisor: refusing/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("supervisor: QEMU refusing the kernel fails the boot with QEMU's reason; the workspace is failed", { timeout: 60_000 }, async () => {
  const dir = await mkdtemp(join(tmpdir(), "sup-start-"));
  try {
    const stateDir = join(dir, "state");
    await createWorkspace({ name: "w", image: "reg/img:1", stateDir, providers: await providers(dir), profile: "tiny" });
    await assert.rejects(startWorkspace("w", { stateDir, timeoutMs: 45_000 }), (e: Error & { code?: string }) => {
      assert.equal(e.code, "BOOT_FAILED");
      assert.match(e.message, /failed to boot: /);
      assert.match(e.message, /qemu: linux kernel too old/); // QEMU's own words
      return true;
    });
    const state = await readState(workspacePaths(stateDir, "w"));
    assert.equal(state?.state, "failed");
    assert.match(state?.detail ?? "", /failed to boot/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
