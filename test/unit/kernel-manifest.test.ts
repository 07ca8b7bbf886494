import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, mkdirSync, rmSync, writeFileSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { KernelManifestSchema, readManifest, writeManifest, kernelDir, type KernelManifest } from "../../src/kernel/manifest.ts";
import { kernelStatus, listKernels, verifyKernel, kernelMismatchError } from "../../src/kernel/status.ts";
import { isMicroagentError } from "../../src/contract/errors.ts";
import { sha256Bytes } from "../../src/util/hash.ts";
import { runCli } from "../helpers/cli.ts";

const H = (c: string) => c.repeat(64);

function manifest(over: Partial<KernelManifest> = {}): KernelManifest {
  return {
    schemaVersion: 1,
    backend: "linux-qemu",
    arch: "amd64",
    version: "6.1.0-56-cloud-amd64",
    kernel: { file: "vmlinuz", sha256: sha256Bytes("KERNEL"), sizeBytes: 6 },
    initramfs: { file: "initramfs.cpio", sha256: H("b"), sizeBytes: 10, compression: "none" },
    init: { sha256: H("c"), sizeBytes: 100, path: "/x/microagent-init" },
    modules: [{ path: "kernel/drivers/virtio/virtio.ko", sha256: H("d") }],
    builtinModules: ["ext4"],
    unavailableModules: [],
    source: { kind: "apt", metaPackage: "linux-image-cloud-amd64", package: "linux-image-6.1.0-56-cloud-amd64", version: "6.1.192-2", sha256: H("e"), extraPackages: [] },
    installedAt: "2026-01-01T00:00:00.000Z",
    ...over,
  };
}

function stateWithKernel(t: { after(fn: () => void): void }, kernelBytes = "KERNEL"): string {
  const stateDir = mkdtempSync(join(tmpdir(), "kernel-manifest-"));
  t.after(() => rmSync(stateDir, { recursive: true, force: true }));
  const dir = kernelDir(stateDir, "linux-qemu", "amd64");
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, "vmlinuz"), kernelBytes);
  writeFileSync(join(dir, "initramfs.cpio"), "INITRAMFS!");
  return stateDir;
}

test("kernel manifest: schema accepts a complete manifest and rejects bad fields", () => {
  assert.ok(KernelManifestSchema.safeParse(manifest()).success);
  assert.ok(KernelManifestSchema.safeParse(manifest({ source: { kind: "url", url: "https://example.test/k", sha256: H("f") } })).success);
  assert.ok(!KernelManifestSchema.safeParse(manifest({ kernel: { file: "vmlinuz", sha256: "abc", sizeBytes: 1 } })).success);
  assert.ok(!KernelManifestSchema.safeParse({ ...manifest(), backend: "nope" }).success);
  assert.ok(!KernelManifestSchema.safeParse({ ...manifest(), schemaVersion: 2 }).success);
  assert.ok(!KernelManifestSchema.safeParse({ ...manifest(), source: { kind: "file", path: "/k" } }).success);
});

test("kernel manifest: written atomically with mode 0600, read back; damage is KERNEL_MANIFEST_INVALID", async (t) => {
  const stateDir = stateWithKernel(t);
  const dir = kernelDir(stateDir, "linux-qemu", "amd64");
  await writeManifest(dir, manifest());
  assert.equal(statSync(join(dir, "manifest.json")).mode & 0o777, 0o600);
  assert.deepEqual(await readManifest(dir), manifest());
  assert.equal(await readManifest(join(dir, "nope")), undefined);
  writeFileSync(join(dir, "manifest.json"), "{not json");
  await assert.rejects(readManifest(dir), (e: unknown) => isMicroagentError(e) && e.code === "KERNEL_MANIFEST_INVALID");
  writeFileSync(join(dir, "manifest.json"), JSON.stringify({ ...manifest(), kernel: {} }));
  await assert.rejects(readManifest(dir), (e: unknown) => isMicroagentError(e) && e.code === "KERNEL_MANIFEST_INVALID" && /kernel/.test(e.message));
  const st = await kernelStatus({ stateDir });
  assert.equal(st.status, "error");
});

test("kernel status/list: missing, installed, and a deleted file is an error", async (t) => {
  const stateDir = stateWithKernel(t);
  assert.equal((await kernelStatus({ stateDir, backend: "linux-kvm" })).status, "missing");
  const dir = kernelDir(stateDir, "linux-qemu", "amd64");
  await writeManifest(dir, manifest());
  const st = await kernelStatus({ stateDir });
  assert.equal(st.status, "installed");
  assert.equal(st.path, join(dir, "vmlinuz"));
  assert.equal(st.sha256, sha256Bytes("KERNEL"));
  assert.equal(st.initramfsPath, join(dir, "initramfs.cpio"));
  assert.equal(st.version, "6.1.0-56-cloud-amd64");
  const list = await listKernels({ stateDir });
  assert.deepEqual(list.map((k) => `${k.backend}/${k.arch}/${k.status}`), ["linux-qemu/amd64/installed"]);
  rmSync(join(dir, "initramfs.cpio"));
  const broken = await kernelStatus({ stateDir });
  assert.equal(broken.status, "error");
  assert.match(broken.error ?? "", /initramfs .* is missing/);
});

test("kernel verify: sha256 printed; mismatch against --sha256 or the install record fails with the seed's remedy", async (t) => {
  const stateDir = stateWithKernel(t);
  const dir = kernelDir(stateDir, "linux-qemu", "amd64");
  await writeManifest(dir, manifest());
  const good = await verifyKernel({ stateDir });
  assert.deepEqual(good, { path: join(dir, "vmlinuz"), sha256: sha256Bytes("KERNEL"), expectedSha256: sha256Bytes("KERNEL"), expectedFrom: "manifest", ok: true });
  const wrong = await verifyKernel({ stateDir, sha256: `sha256:${H("A")}` });
  assert.equal(wrong.ok, false);
  assert.equal(wrong.expectedFrom, "flag");
  const err = kernelMismatchError(wrong);
  assert.equal(err.code, "KERNEL_SHA256_MISMATCH");
  assert.match(err.message, /does not match its expected SHA-256/);
  assert.match(err.remediation, /microagent kernel install/);
  assert.match(err.remediation, /--sha256/);
  // Tampering is caught without --sha256, from the install record.
  writeFileSync(join(dir, "vmlinuz"), "EVIL KERNEL");
  assert.equal((await verifyKernel({ stateDir })).ok, false);
  // An explicit path with no expectation just reports the hash.
  const p = await verifyKernel({ stateDir, path: join(dir, "initramfs.cpio") });
  assert.deepEqual(p, { path: join(dir, "initramfs.cpio"), sha256: sha256Bytes("INITRAMFS!"), ok: true });
  await assert.rejects(verifyKernel({ stateDir, sha256: "xyz" }), (e: unknown) => isMicroagentError(e) && e.code === "INVALID_ARGUMENT");
  await assert.rejects(verifyKernel({ stateDir, backend: "linux-kvm" }), (e: unknown) => isMicroagentError(e) && e.code === "KERNEL_NOT_INSTALLED");
  await assert.rejects(verifyKernel({ stateDir, path: join(dir, "nope") }), (e: unknown) => isMicroagentError(e) && e.code === "PATH_NOT_FOUND");
});

test("kernel verify CLI: exit 1 and the mismatch message; JSON carries the code", async (t) => {
  const stateDir = stateWithKernel(t);
  await writeManifest(kernelDir(stateDir, "linux-qemu", "amd64"), manifest());
  const run = (...argv: string[]) => runCli(["--state-dir", stateDir, ...argv]);

  const ok = await run("kernel", "verify", "--sha256", sha256Bytes("KERNEL"));
  assert.equal(ok.code, 0);
  assert.match(ok.out, new RegExp(`^${sha256Bytes("KERNEL")}  .*vmlinuz  \\(matches --sha256\\)`));
  const bad = await run("kernel", "verify", "--sha256", H("0"));
  assert.equal(bad.code, 1);
  assert.match(bad.err, /does not match its expected SHA-256/);
  assert.match(bad.err, /fix: .*microagent kernel install/);
  const json = await run("--json", "kernel", "verify", "--sha256", H("0"));
  assert.equal(json.code, 1);
  const body = JSON.parse(json.out) as { error: { code: string; kind: string; details: { actual: string } } };
  assert.equal(body.error.code, "KERNEL_SHA256_MISMATCH");
  assert.equal(body.error.details.actual, sha256Bytes("KERNEL"));
  const list = await run("--json", "kernel", "list");
  assert.equal(list.code, 0);
  assert.equal((JSON.parse(list.out) as { kernels: unknown[] }).kernels.length, 1);
});

test("kernel manifest: an install covers the guest's modules only when each is loaded, built in, or known absent", async () => {
  const { coversGuestModules } = await import("../../src/kernel/install.ts");
  const { GUEST_MODULES } = await import("../../src/kernel/modules.ts");
  const all = manifest({
    modules: [
      { path: "kernel/drivers/virtio/virtio_mmio.ko", sha256: "c".repeat(64) },
      { path: "kernel/drivers/char/hw_random/virtio-rng.ko", sha256: "c".repeat(64) },
    ],
    builtinModules: ["ext4"],
    unavailableModules: GUEST_MODULES.map((m) => m.name).filter((n) => !["virtio_mmio", "virtio_rng", "ext4"].includes(n)),
  });
  assert.equal(coversGuestModules(all), true);
  // An install from before a module was added to the guest's list does not cover it.
  const older = { ...all, unavailableModules: all.unavailableModules.filter((n) => n !== "button") };
  assert.equal(coversGuestModules(older), false);
});
