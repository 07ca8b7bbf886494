import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, readlinkSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gunzipSync } from "node:zlib";
import { writeCpio } from "../../src/kernel/cpio.ts";
import { buildInitramfs, LOAD_ORDER_PATH } from "../../src/kernel/initramfs.ts";

test("kernel cpio: one file entry is byte-exact newc", () => {
  const out = writeCpio([{ path: "a", type: "file", mode: 0o644, data: "hi\n" }]);
  // Header: magic + 13 fields of 8 hex digits; ino 1, mode 0100644, uid 0, gid 0, nlink 1, mtime 0,
  // filesize 3, dev 0/0, rdev 0/0, namesize 2 ("a\0"), check 0.
  const header =
    "070701" +
    ["00000001", "000081A4", "00000000", "00000000", "00000001", "00000000", "00000003", "00000000", "00000000", "00000000", "00000000", "00000002", "00000000"].join("");
  // 110 header + 2 name = 112, already 4-aligned; 3 data bytes + 1 pad.
  const expectedFirst = Buffer.concat([Buffer.from(header + "a\0", "latin1"), Buffer.from("hi\n"), Buffer.alloc(1)]);
  assert.deepEqual(out.subarray(0, expectedFirst.length), expectedFirst);
  const trailer = out.subarray(expectedFirst.length).toString("latin1");
  assert.ok(trailer.startsWith("070701"));
  assert.ok(trailer.includes("TRAILER!!!\0"));
  assert.equal(out.length % 4, 0);
});

test("kernel cpio: deterministic regardless of input order, parents added and sorted", () => {
  const a = writeCpio([
    { path: "lib/modules/x.ko", type: "file", data: Buffer.from([1, 2, 3]) },
    { path: "init", type: "file", mode: 0o755, data: "init" },
  ]);
  const b = writeCpio([
    { path: "init", type: "file", mode: 0o755, data: "init" },
    { path: "lib/modules/x.ko", type: "file", data: Buffer.from([1, 2, 3]) },
  ]);
  assert.deepEqual(a, b);
  const names = [...a.toString("latin1").matchAll(/070701[0-9A-F]{104}([^\0]+)\0/g)].map((m) => m[1]);
  assert.deepEqual(names, ["init", "lib", "lib/modules", "lib/modules/x.ko", "TRAILER!!!"]);
});

test("kernel cpio: rejects unsafe and duplicate paths", () => {
  assert.throws(() => writeCpio([{ path: "../etc/passwd", type: "file" }]), /unsafe path/);
  assert.throws(() => writeCpio([{ path: "a/./b", type: "file" }]), /unsafe path/);
  assert.throws(() => writeCpio([{ path: "a", type: "file" }, { path: "/a", type: "file" }]), /duplicate/);
  assert.throws(() => writeCpio([{ path: "a", type: "file" }, { path: "a/b", type: "file" }]), /parent directory/);
});

test("kernel cpio: the cpio tool extracts what we wrote (files, modes, symlinks, dirs)", (t) => {
  const dir = mkdtempSync(join(tmpdir(), "kernel-cpio-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const big = Buffer.alloc(70_001, 7);
  const archive = writeCpio([
    { path: "init", type: "file", mode: 0o755, data: "#!/bin/sh\n" },
    { path: "etc/odd", type: "file", mode: 0o600, data: "x" },
    { path: "data/big", type: "file", data: big },
    { path: "bin/sh", type: "symlink", data: "busybox" },
    { path: "tmp", type: "dir", mode: 0o1777 },
  ]);
  writeFileSync(join(dir, "a.cpio"), archive);
  const list = spawnSync("cpio", ["-it", "--quiet"], { input: archive });
  assert.equal(list.status, 0, list.stderr.toString());
  assert.deepEqual(list.stdout.toString().trim().split("\n"), ["bin", "bin/sh", "data", "data/big", "etc", "etc/odd", "init", "tmp"]);
  const out = join(dir, "x");
  const ex = spawnSync("sh", ["-c", `mkdir -p '${out}' && cd '${out}' && cpio -idm --no-absolute-filenames --quiet < ../a.cpio`]);
  assert.equal(ex.status, 0, ex.stderr.toString());
  assert.equal(readFileSync(join(out, "init"), "utf8"), "#!/bin/sh\n");
  assert.equal(statSync(join(out, "init")).mode & 0o7777, 0o755);
  assert.equal(statSync(join(out, "etc/odd")).mode & 0o7777, 0o600);
  assert.deepEqual(readFileSync(join(out, "data/big")), big);
  assert.equal(readlinkSync(join(out, "bin/sh")), "busybox");
  assert.equal(statSync(join(out, "tmp")).mode & 0o7777, 0o1777);
  assert.equal(statSync(join(out, "init")).mtimeMs, 0);
});

test("kernel initramfs: layout contract with microagent-init", () => {
  const init = Buffer.from("\x7fELF fake init");
  const img = buildInitramfs({
    init,
    modules: [
      { path: "kernel/drivers/virtio/virtio.ko", data: Buffer.from("v") },
      { path: "kernel/drivers/virtio/virtio_mmio.ko", data: Buffer.from("m") },
    ],
  });
  const list = spawnSync("cpio", ["-itv", "--quiet"], { input: img });
  assert.equal(list.status, 0, list.stderr.toString());
  const text = list.stdout.toString();
  assert.match(text, /^-rwxr-xr-x .* init$/m);
  assert.match(text, /^crw------- .* 5, +1 .* dev\/console$/m);
  assert.match(text, / lib\/modules\/kernel\/drivers\/virtio\/virtio_mmio\.ko$/m);
  const order = spawnSync("cpio", ["-i", "--to-stdout", "--quiet", LOAD_ORDER_PATH], { input: img });
  assert.equal(order.stdout.toString(), "kernel/drivers/virtio/virtio.ko\nkernel/drivers/virtio/virtio_mmio.ko\n");
  // Same inputs, same bytes; gzip variant decompresses to the same archive.
  assert.deepEqual(buildInitramfs({ init, modules: [] }), buildInitramfs({ init, modules: [] }));
  assert.deepEqual(gunzipSync(buildInitramfs({ init, modules: [], compression: "gzip" })), buildInitramfs({ init, modules: [] }));
  assert.throws(() => buildInitramfs({ init, modules: [{ path: "../x.ko", data: Buffer.alloc(0) }] }), /bad module path/);
});
