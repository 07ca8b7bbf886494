import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, lstatSync, mkdirSync, readFileSync, readdirSync, readlinkSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { makeTar, type TarEntry } from "../helpers/oci-image.ts";
import { scratchDir } from "../helpers/scratch.ts";
import { Stager } from "../../src/rootfs/stage.ts";
import { isMicroagentError } from "../../src/contract/errors.ts";

async function* once(buf: Buffer): AsyncGenerator<Buffer> {
  yield buf;
}

/** A sandbox: `stage/` is the staging root, `outside/` holds a sentinel a hostile layer must not touch. */
function sandbox(label: string) {
  const dir = scratchDir(`rootfs-stage-${label}`);
  const outside = join(dir, "outside");
  mkdirSync(outside);
  writeFileSync(join(outside, "sentinel"), "untouched\n");
  const stager = new Stager(join(dir, "stage"));
  const outsideUnchanged = () => {
    assert.deepEqual(readdirSync(outside), ["sentinel"]);
    assert.equal(readFileSync(join(outside, "sentinel"), "utf8"), "untouched\n");
    assert.deepEqual(readdirSync(dir).sort(), ["outside", "stage"]);
  };
  return { dir, outside, stager, outsideUnchanged, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

async function apply(stager: Stager, ...layers: TarEntry[][]): Promise<void> {
  for (const [i, entries] of layers.entries()) await stager.applyLayer(once(makeTar(entries)), `sha256:layer${i}`);
}

async function refused(stager: Stager, entries: TarEntry[]): Promise<{ code: string; message: string }> {
  try {
    await apply(stager, entries);
  } catch (e) {
    assert.ok(isMicroagentError(e), String(e));
    return { code: e.code, message: e.message };
  }
  assert.fail("the layer should have been refused");
}

test("rootfs-stage: '../' names are refused and nothing lands outside", async () => {
  const s = sandbox("dotdot");
  try {
    const err = await refused(s.stager, [{ path: "../outside/evil", type: "file", content: "pwned" }]);
    assert.equal(err.code, "ROOTFS_LAYER_UNSAFE");
    assert.match(err.message, /"\.\.\/outside\/evil"/);
    assert.match(err.message, /'\.\.'/);
    const err2 = await refused(s.stager, [{ path: "a/../../outside/evil2", type: "dir" }]);
    assert.equal(err2.code, "ROOTFS_LAYER_UNSAFE");
    s.outsideUnchanged();
  } finally {
    s.cleanup();
  }
});

test("rootfs-stage: absolute names stay inside the root", async () => {
  const s = sandbox("abs");
  try {
    await apply(s.stager, [{ path: `/${s.outside.slice(1)}/x`, type: "file", content: "inside" }]);
    s.outsideUnchanged();
    assert.equal(readFileSync(join(s.stager.root, s.outside, "x"), "utf8"), "inside");
  } finally {
    s.cleanup();
  }
});

test("rootfs-stage: a file through an absolute symlink is refused, the target is untouched", async () => {
  const s = sandbox("abs-symlink");
  try {
    const err = await refused(s.stager, [
      { path: "escape", type: "symlink", linkname: s.outside },
      { path: "escape/sentinel", type: "file", content: "pwned" },
    ]);
    assert.equal(err.code, "ROOTFS_LAYER_UNSAFE");
    assert.match(err.message, /"escape\/sentinel".*parent "escape" is a symlink/);
    s.outsideUnchanged();
  } finally {
    s.cleanup();
  }
});

test("rootfs-stage: a symlinked parent directory (even pointing inside) is refused across layers", async () => {
  const s = sandbox("rel-symlink");
  try {
    await apply(s.stager, [
      { path: "real/", type: "dir" },
      { path: "link", type: "symlink", linkname: "real" },
    ]);
    const err = await refused(s.stager, [{ path: "link/file", type: "file", content: "x" }]);
    assert.equal(err.code, "ROOTFS_LAYER_UNSAFE");
    assert.deepEqual(readdirSync(join(s.stager.root, "real")), []);
    s.outsideUnchanged();
  } finally {
    s.cleanup();
  }
});

test("rootfs-stage: whiteouts never delete through symlinks (no-op); hard links through them are refused", async () => {
  const s = sandbox("wh-symlink");
  try {
    await apply(s.stager, [{ path: "escape", type: "symlink", linkname: s.outside }]);
    // the lower path "escape/sentinel" does not exist in the tree (escape is a link): nothing to delete
    await apply(s.stager, [{ path: "escape/.wh.sentinel", type: "file" }]);
    await apply(s.stager, [{ path: "escape/.wh..wh..opq", type: "file" }]);
    s.outsideUnchanged();
    assert.ok(lstatSync(join(s.stager.root, "escape")).isSymbolicLink());
    const hl = await refused(s.stager, [{ path: "stolen", type: "hardlink", linkname: "escape/sentinel" }]);
    assert.equal(hl.code, "ROOTFS_LAYER_UNSAFE");
    const hl2 = await refused(s.stager, [{ path: "stolen", type: "hardlink", linkname: "../outside/sentinel" }]);
    assert.equal(hl2.code, "ROOTFS_LAYER_UNSAFE");
    s.outsideUnchanged();
  } finally {
    s.cleanup();
  }
});

test("rootfs-stage: replacing a symlink with a file writes the file, never the link's target", async () => {
  const s = sandbox("replace-link");
  try {
    await apply(s.stager, [{ path: "f", type: "symlink", linkname: join(s.outside, "sentinel") }], [{ path: "f", type: "file", content: "mine" }]);
    assert.ok(lstatSync(join(s.stager.root, "f")).isFile());
    s.outsideUnchanged();
  } finally {
    s.cleanup();
  }
});

test("rootfs-stage: a truncated layer is refused with the entry name", async () => {
  const s = sandbox("trunc");
  try {
    const tar = makeTar([{ path: "big", type: "file", content: Buffer.alloc(4096, 1) }]);
    await assert.rejects(s.stager.applyLayer(once(tar.subarray(0, 2000)), "sha256:cut"), (e: unknown) => {
      assert.ok(isMicroagentError(e));
      assert.equal(e.code, "ROOTFS_LAYER_INVALID");
      assert.match(e.message, /sha256:cut.*"big".*truncated/);
      return true;
    });
    s.outsideUnchanged();
  } finally {
    s.cleanup();
  }
});

test("rootfs-stage: whiteouts and opaque dirs hide lower layers only; replaced dirs and hard links", async () => {
  const s = sandbox("whiteouts");
  try {
    await apply(
      s.stager,
      [
        { path: "etc/", type: "dir" },
        { path: "etc/gone", type: "file", content: "1" },
        { path: "etc/kept", type: "file", content: "1" },
        { path: "opq/", type: "dir" },
        { path: "opq/old", type: "file", content: "old" },
        { path: "opq/sub/", type: "dir" },
        { path: "opq/sub/deep", type: "file", content: "old" },
        { path: "dir2file/", type: "dir" },
        { path: "dir2file/child", type: "file", content: "c" },
        { path: "data", type: "file", content: "shared", mode: 0o4755 },
        { path: "data-link", type: "hardlink", linkname: "data" },
      ],
      [
        { path: "etc/.wh.gone", type: "file" },
        // the new file comes before the marker: it must survive (same layer)
        { path: "opq/new", type: "file", content: "new" },
        { path: "opq/.wh..wh..opq", type: "file" },
        { path: "dir2file", type: "file", content: "now a file" },
        { path: "data", type: "file", content: "replaced" },
      ],
    );
    const root = s.stager.root;
    assert.ok(!existsSync(join(root, "etc/gone")));
    assert.ok(existsSync(join(root, "etc/kept")));
    assert.deepEqual(readdirSync(join(root, "opq")), ["new"]);
    assert.equal(readFileSync(join(root, "dir2file"), "utf8"), "now a file");
    // replacing "data" breaks the link: the old inode keeps its content under the other name
    assert.equal(readFileSync(join(root, "data"), "utf8"), "replaced");
    assert.equal(readFileSync(join(root, "data-link"), "utf8"), "shared");
    const tree = s.stager.finish();
    const rels = tree.entries.map((e) => e.rel);
    assert.deepEqual(rels, ["", "data", "data-link", "dir2file", "etc", "etc/kept", "opq", "opq/new"]);
    const link = tree.entries.find((e) => e.rel === "data-link")!;
    assert.equal(link.meta.mode, 0o4755);
    assert.equal(link.staged.perm & 0o7000, 0, "special bits are never staged (the replay sets them)");
  } finally {
    s.cleanup();
  }
});

test("rootfs-stage: device nodes and FIFOs become placeholders with their metadata kept", async () => {
  const s = sandbox("devices");
  try {
    await apply(s.stager, [
      { path: "dev/", type: "dir" },
      { path: "dev/null", type: "char", devmajor: 1, devminor: 3, mode: 0o666 },
      { path: "dev/fifo", type: "fifo", mode: 0o600, uid: 7 },
      { path: "ro/", type: "dir", mode: 0o555 },
      { path: "ro/secret", type: "file", mode: 0o000, content: "s" },
      { path: "abs-link", type: "symlink", linkname: "/etc/motd" },
    ]);
    const tree = s.stager.finish();
    const by = new Map(tree.entries.map((e) => [e.rel, e]));
    assert.deepEqual([by.get("dev/null")!.meta.kind, by.get("dev/null")!.meta.devmajor, by.get("dev/null")!.meta.devminor], ["char", 1, 3]);
    assert.equal(by.get("dev/fifo")!.meta.uid, 7);
    assert.ok(lstatSync(join(s.stager.root, "dev/null")).isFile());
    // staged copies stay readable/traversable whatever the image says
    assert.equal(by.get("ro")!.staged.perm, 0o755);
    assert.equal(by.get("ro/secret")!.staged.perm, 0o600);
    assert.equal(readlinkSync(join(s.stager.root, "abs-link")), "/etc/motd");
  } finally {
    s.cleanup();
  }
});

test("rootfs-stage: seeded fuzz: random entry sequences apply or fail with a typed error, never outside the root", async () => {
  const s = sandbox("fuzz");
  try {
    let a = 0xc0ffee;
    const rand = () => {
      a = (Math.imul(a, 1103515245) + 12345) >>> 0;
      return a / 4294967296;
    };
    const names = ["a", "b", "a/b", "a/b/c", "b/c", "../x", "a/../../x", "/a", "c", ".wh.a", "a/.wh.b", "a/.wh..wh..opq", ".wh..wh..opq", "l/x"];
    const types: TarEntry["type"][] = ["file", "dir", "symlink", "hardlink", "fifo", "char"];
    const pick = <T>(xs: readonly T[]) => xs[Math.floor(rand() * xs.length)] as T;
    let failures = 0;
    for (let layer = 0; layer < 200; layer++) {
      const entries: TarEntry[] = [];
      for (let i = 0; i < 1 + Math.floor(rand() * 6); i++) {
        const type = pick(types);
        entries.push({
          path: pick(names),
          type,
          content: "x",
          linkname: type === "symlink" ? pick([s.outside, "a", "../outside", "/"]) : pick(names),
          mode: Math.floor(rand() * 0o7777),
        });
      }
      try {
        await apply(s.stager, entries);
      } catch (e) {
        assert.ok(isMicroagentError(e), `layer ${layer}: untyped ${String(e)}`);
        failures++;
      }
      s.outsideUnchanged();
    }
    assert.ok(failures > 0);
    s.stager.finish();
  } finally {
    s.cleanup();
  }
});

test("rootfs-stage: whiteouts of '', '.' and '..' are refused as unsafe and remove nothing (D13)", async () => {
  for (const name of [".wh.", ".wh..", ".wh...", "opt/.wh...", "/.wh.", "opt/.wh."]) {
    const s = sandbox("wh-dots");
    try {
      await apply(s.stager, [
        { path: "opt/", type: "dir" },
        { path: "opt/keep", type: "file", content: "lower\n" },
        { path: "top", type: "file", content: "lower\n" },
      ]);
      const err = await refused(s.stager, [{ path: name, type: "file" }]);
      assert.equal(err.code, "ROOTFS_LAYER_UNSAFE", `${name}: ${err.message}`);
      assert.match(err.message, /names no file/);
      assert.match(err.message, new RegExp(`entry ${JSON.stringify(name).replace(/[.*+?^${}()|[\]\\/]/g, "\\$&")}`));
      assert.equal(readFileSync(join(s.dir, "stage/opt/keep"), "utf8"), "lower\n", name);
      assert.equal(readFileSync(join(s.dir, "stage/top"), "utf8"), "lower\n", name);
      s.outsideUnchanged();
    } finally {
      s.cleanup();
    }
  }
});
