import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync, appendFileSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadPrepared, preparedDir, preparedKey, savePrepared } from "../../src/kernel/prepared.ts";

test("kernel prepared cache: round trip, keyed by source hashes, damaged entries ignored", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "kernel-prepared-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const kernel = join(dir, "bzImage");
  writeFileSync(kernel, "KERNEL BYTES");
  const key = preparedKey(["a".repeat(64)]);
  assert.notEqual(key, preparedKey(["b".repeat(64)]));
  assert.equal(key, preparedKey(["a".repeat(64)]));
  const entry = preparedDir(join(dir, "cache"), key);
  assert.equal(await loadPrepared(entry), undefined);
  const modules = [
    { path: "kernel/drivers/virtio/virtio.ko", data: Buffer.from("virtio") },
    { path: "kernel/drivers/virtio/virtio_mmio.ko", data: Buffer.from("mmio") },
  ];
  await savePrepared(entry, { kernelPath: kernel, version: "6.1.0-test", modules, builtin: ["ext4"], unavailable: [] });
  const got = await loadPrepared(entry);
  assert.ok(got);
  assert.equal(got.version, "6.1.0-test");
  assert.deepEqual(got.modules, modules);
  assert.deepEqual(got.builtin, ["ext4"]);
  assert.ok(existsSync(got.kernelPath));
  appendFileSync(join(entry, "modules", "kernel/drivers/virtio/virtio.ko"), "x");
  assert.equal(await loadPrepared(entry), undefined, "a module that no longer matches its hash voids the entry");
  await savePrepared(entry, { kernelPath: kernel, version: "6.1.0-test", modules, builtin: [], unavailable: [] });
  assert.ok(await loadPrepared(entry), "saving again repairs it");
  writeFileSync(join(entry, "vmlinuz"), "other");
  assert.equal(await loadPrepared(entry), undefined);
});
