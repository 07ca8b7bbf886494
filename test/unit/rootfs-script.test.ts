import { test } from "node:test";
import assert from "node:assert/strict";
import { buildDebugfsScript, quote } from "../../src/rootfs/script.ts";
import type { EntryMeta, StagedEntry } from "../../src/rootfs/stage.ts";
import { estimateSize, derivedUuid } from "../../src/rootfs/mkfs.ts";

function entry(rel: string, meta: Partial<EntryMeta>, staged = { uid: 0, gid: 0, perm: 0o644 }, size = 0): StagedEntry {
  return {
    rel,
    meta: { kind: "file", mode: 0o644, uid: 0, gid: 0, mtime: 1000, devmajor: 0, devminor: 0, xattrs: [], ...meta },
    staged,
    ino: rel.length + 1,
    size,
  };
}

test("rootfs-script: quoting doubles embedded quotes (debugfs's escape)", () => {
  assert.equal(quote('/a"b c'), '"/a""b c"');
  assert.equal(quote("/plain"), '"/plain"');
});

test("rootfs-script: only what the staged copy lacks is replayed (plus ctime), relative to the cwd; specials become mknod", () => {
  const script = buildDebugfsScript(
    [
      entry("", { kind: "dir", mode: 0o755 }, { uid: 0, gid: 0, perm: 0o700 }),
      entry("same", {}),
      entry("suid", { mode: 0o4755 }, { uid: 0, gid: 0, perm: 0o755 }),
      entry("owned", { uid: 1234, gid: 5678 }),
      entry("link", { kind: "symlink", mode: 0o777, uid: 5 }, { uid: 0, gid: 0, perm: 0o777 }),
      entry('dev/my "null"', { kind: "char", mode: 0o666, devmajor: 1, devminor: 3 }, { uid: 0, gid: 0, perm: 0o600 }),
      entry("fifo", { kind: "fifo", mode: 0o600 }, { uid: 0, gid: 0, perm: 0o600 }),
      entry("cap", { xattrs: [["security.capability", Buffer.from([1, 0, 0, 2])]] }),
      // debugfs would read "<2>" as inode 2 (the root): such names are addressed by absolute path
      entry("d/<2>", { uid: 9 }),
    ],
    (i) => `/work/x${i}`,
  );
  assert.equal(
    script.text,
    [
      'sif "/" mode 040755',
      'sif "/" uid 0',
      'sif "/" gid 0',
      'sif "/" mtime @1000',
      'sif "/" atime @1000',
      'sif "/" ctime @1000',
      'sif "same" ctime @1000',
      'sif "suid" mode 0104755',
      'sif "suid" ctime @1000',
      'sif "owned" uid 1234',
      'sif "owned" gid 5678',
      'sif "owned" ctime @1000',
      'sif "link" uid 5',
      'sif "link" ctime @1000',
      'cd "/dev"',
      'rm "/dev/my ""null"""',
      'mknod "my ""null""" c 1 3',
      'sif "my ""null""" mode 020666',
      'sif "my ""null""" uid 0',
      'sif "my ""null""" gid 0',
      'sif "my ""null""" mtime @1000',
      'sif "my ""null""" atime @1000',
      'sif "my ""null""" ctime @1000',
      'cd "/"',
      'rm "/fifo"',
      'mknod "fifo" p',
      'sif "fifo" mode 010600',
      'sif "fifo" uid 0',
      'sif "fifo" gid 0',
      'sif "fifo" mtime @1000',
      'sif "fifo" atime @1000',
      'sif "fifo" ctime @1000',
      'sif "cap" ctime @1000',
      'ea_set -f "/work/x0" "cap" "security.capability"',
      'sif "/d/<2>" uid 9',
      'sif "/d/<2>" ctime @1000',
      "",
    ].join("\n"),
  );
  assert.deepEqual(script.xattrValues, [Buffer.from([1, 0, 0, 2])]);
});

test("rootfs-script: size estimate adds at least 64 MiB of headroom and grows with content", () => {
  const small = estimateSize({ root: "/x", contentBytes: 10, entries: [entry("", { kind: "dir" }), entry("f", {}, undefined, 10)] });
  assert.ok(small.defaultMib >= 64 && small.defaultMib <= 96, `small image: ${small.defaultMib} MiB`);
  assert.ok(small.minimumMib < small.defaultMib);
  const big = estimateSize({ root: "/x", contentBytes: 1 << 30, entries: [entry("", { kind: "dir" }), entry("f", {}, undefined, 1 << 30)] });
  assert.ok(big.defaultMib >= 1536 && big.defaultMib < 1700, `1 GiB of content: ${big.defaultMib} MiB`);
  assert.ok(big.minimumMib >= 1024 && big.minimumMib < 1100, `1 GiB minimum: ${big.minimumMib} MiB`);
});

test("rootfs-script: derived UUIDs are stable per seed and well-formed", () => {
  const a = derivedUuid("sha256:abc", "uuid");
  assert.equal(a, derivedUuid("sha256:abc", "uuid"));
  assert.notEqual(a, derivedUuid("sha256:abd", "uuid"));
  assert.notEqual(a, derivedUuid("sha256:abc", "hash_seed"));
  assert.match(a, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
});
