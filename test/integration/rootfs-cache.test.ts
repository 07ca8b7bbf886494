/**
 * The base cache and the builder's failure paths through the real pipeline (staging, mke2fs, debugfs):
 * concurrent ensures of one digest build once; a dead holder's lock is taken over; hostile and
 * corrupt layers fail with clear errors and leave nothing behind in the store (no published image, no
 * record, no staging tree) and nothing outside it; a diff_id mismatch is caught; xattrs (file
 * capabilities) and large uids reach the ext4; a cancelled build publishes nothing.
 */
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { makeTar, type TarEntry } from "../helpers/oci-image.ts";
import { scratchDir } from "../helpers/scratch.ts";
import { baseCachePaths, ensureBaseRootfs } from "../../src/rootfs/build.ts";
import { isMicroagentError } from "../../src/contract/errors.ts";
import type { LocalImage } from "../../src/image/types.ts";

const execFileP = promisify(execFile);
const sha = (b: Buffer | string) => createHash("sha256").update(b).digest("hex");

let scratch: string;
let counter = 0;

before(() => {
  scratch = scratchDir("rootfs-cache");
});

after(() => {
  /* the scratch root is removed by the suite's teardown */
});

/** A LocalImage of uncompressed layers written to files; the manifest digest is unique per call. */
function imageOf(layers: TarEntry[][], opts: { diffIds?: string[] } = {}): LocalImage {
  const dir = join(scratch, `img-${++counter}`);
  mkdirSync(dir);
  const tars = layers.map((l) => makeTar(l));
  const files = tars.map((t, i) => {
    const path = join(dir, `layer${i}.tar`);
    writeFileSync(path, t);
    return path;
  });
  const digest = `sha256:${sha(`${dir}\n${tars.map((t) => sha(t)).join("\n")}`)}`;
  return {
    ref: `test/cache:${counter}`,
    resolvedRef: `test/cache@${digest}`,
    manifestDigest: digest,
    platform: { os: "linux", architecture: "amd64" },
    config: {},
    configDigest: digest,
    layers: tars.map((t, i) => ({
      digest: `sha256:${sha(t)}`,
      mediaType: "application/vnd.oci.image.layer.v1.tar",
      size: t.length,
      path: files[i]!,
      compression: "none" as const,
    })),
    sizeBytes: tars.reduce((n, t) => n + t.length, 0),
    diffIds: opts.diffIds ?? tars.map((t) => `sha256:${sha(t)}`),
  };
}

const SIMPLE: TarEntry[] = [
  { path: "etc/", type: "dir" },
  { path: "etc/hostname", type: "file", content: "cache\n" },
];

function assertNothingLeft(stateDir: string, image: LocalImage): void {
  const paths = baseCachePaths(stateDir, image.manifestDigest);
  assert.ok(!existsSync(paths.image), "no image published");
  assert.ok(!existsSync(paths.record), "no record written");
  assert.ok(!existsSync(paths.lock), "lock released");
  if (existsSync(paths.dir)) assert.deepEqual(readdirSync(paths.dir).filter((f) => f.includes(paths.name)), [], "no temp image left");
  const tmp = join(stateDir, "build", "tmp");
  if (existsSync(tmp)) assert.deepEqual(readdirSync(tmp), [], "no staging tree left");
}

async function rejectsWith(p: Promise<unknown>, code: string, pattern?: RegExp): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(isMicroagentError(e), String(e));
    assert.equal(e.code, code, e.message);
    if (pattern) assert.match(e.message, pattern);
    return true;
  });
}

test("rootfs-cache: concurrent ensures of one digest build once and agree", async () => {
  const stateDir = join(scratch, "state-concurrent");
  const image = imageOf([SIMPLE]);
  const results = await Promise.all([ensureBaseRootfs(image, { stateDir }), ensureBaseRootfs(image, { stateDir }), ensureBaseRootfs(image, { stateDir })]);
  assert.equal(results.filter((r) => !r.cacheHit).length, 1, "exactly one build");
  assert.equal(new Set(results.map((r) => r.sha256)).size, 1);
  assert.equal(new Set(results.map((r) => r.path)).size, 1);
  const record = JSON.parse(readFileSync(baseCachePaths(stateDir, image.manifestDigest).record, "utf8")) as { sha256: string; builderVersion: string };
  assert.equal(record.sha256, results[0]!.sha256);
  assert.ok(record.builderVersion.length > 0);
});

test("rootfs-cache: a lock left by a dead process is taken over", async () => {
  const stateDir = join(scratch, "state-stale");
  const image = imageOf([SIMPLE]);
  const paths = baseCachePaths(stateDir, image.manifestDigest);
  mkdirSync(paths.dir, { recursive: true });
  writeFileSync(paths.lock, "999999999\n");
  const r = await ensureBaseRootfs(image, { stateDir, lockTimeoutMs: 5000 });
  assert.equal(r.cacheHit, false);
  assert.ok(!existsSync(paths.lock));
});

test("rootfs-cache: a live holder that never finishes makes ROOTFS_CACHE_BUSY (retryable) after the timeout", async () => {
  const stateDir = join(scratch, "state-busy");
  const image = imageOf([SIMPLE]);
  const paths = baseCachePaths(stateDir, image.manifestDigest);
  mkdirSync(paths.dir, { recursive: true });
  writeFileSync(paths.lock, `${process.ppid}\n`); // alive for the whole test
  await assert.rejects(ensureBaseRootfs(image, { stateDir, lockTimeoutMs: 400 }), (e: unknown) => {
    assert.ok(isMicroagentError(e));
    assert.equal(e.code, "ROOTFS_CACHE_BUSY");
    assert.equal(e.retryable, true);
    return true;
  });
});

test("rootfs-cache: hostile layers fail cleanly through the whole pipeline, nothing left behind", async () => {
  const stateDir = join(scratch, "state-hostile");
  const outside = join(scratch, "outside");
  mkdirSync(outside);
  writeFileSync(join(outside, "sentinel"), "untouched\n");
  const cases: Array<[string, TarEntry[][], string, RegExp]> = [
    ["dot-dot", [[{ path: "../../../outside/evil", type: "file", content: "x" }]], "ROOTFS_LAYER_UNSAFE", /'\.\.'/],
    [
      "absolute symlink then a file through it",
      [SIMPLE, [{ path: "esc", type: "symlink", linkname: outside }, { path: "esc/sentinel", type: "file", content: "pwned" }]],
      "ROOTFS_LAYER_UNSAFE",
      /"esc\/sentinel".*symlink/,
    ],
    [
      "symlinked parent dir across layers",
      [[{ path: "real/", type: "dir" }, { path: "lnk", type: "symlink", linkname: "real" }], [{ path: "lnk/f", type: "file", content: "x" }]],
      "ROOTFS_LAYER_UNSAFE",
      /parent "lnk" is a symlink/,
    ],
    ["huge declared size", [[{ path: "huge", type: "file", content: "small", declaredSize: 2 ** 40 }]], "ROOTFS_LAYER_INVALID", /"huge".*truncated/],
    ["hard link to a directory", [[{ path: "d/", type: "dir" }, { path: "hl", type: "hardlink", linkname: "d" }]], "ROOTFS_LAYER_UNSAFE", /hard link to a directory/],
  ];
  for (const [name, layers, code, pattern] of cases) {
    const image = imageOf(layers, { diffIds: [] });
    await rejectsWith(ensureBaseRootfs(image, { stateDir }), code, pattern).catch((e: Error) => {
      throw new Error(`${name}: ${e.message}`);
    });
    assertNothingLeft(stateDir, image);
  }
  // a layer cut short on disk (a truncated blob)
  const good = imageOf([[{ path: "big", type: "file", content: Buffer.alloc(100_000, 7) }]], { diffIds: [] });
  const blob = good.layers[0]!.path;
  writeFileSync(blob, readFileSync(blob).subarray(0, 50_000));
  await rejectsWith(ensureBaseRootfs(good, { stateDir }), "ROOTFS_LAYER_INVALID", /truncated/);
  assertNothingLeft(stateDir, good);
  assert.deepEqual(readdirSync(outside), ["sentinel"]);
  assert.equal(readFileSync(join(outside, "sentinel"), "utf8"), "untouched\n");
});

test("rootfs-cache: a layer whose content does not match the image's diff_id is refused", async () => {
  const stateDir = join(scratch, "state-diffid");
  const image = imageOf([SIMPLE], { diffIds: [`sha256:${"1".repeat(64)}`] });
  await rejectsWith(ensureBaseRootfs(image, { stateDir }), "ROOTFS_LAYER_INVALID", /does not match|image config says/);
  assertNothingLeft(stateDir, image);
});

test("rootfs-cache: xattrs (file capabilities), large uids and odd names reach the ext4", async () => {
  const stateDir = join(scratch, "state-xattr");
  // security.capability v2: CAP_NET_BIND_SERVICE (bit 10) permitted+effective
  const cap = Buffer.from([0x01, 0x00, 0x00, 0x02, 0x00, 0x04, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
  const image = imageOf([
    [
      { path: "bin/", type: "dir" },
      { path: "bin/ping", type: "file", content: "ELF", mode: 0o755, pax: { "SCHILY.xattr.security.capability": cap.toString("latin1"), "SCHILY.xattr.user.note": "hello" } },
      { path: "home/", type: "dir" },
      { path: "home/big", type: "dir", uid: 100000, gid: 200000, mode: 0o700 },
      { path: 'home/a "quoted" name', type: "file", content: "q", uid: 7 },
      // debugfs reads "<2>" as inode 2 (the root): the replay must not touch the root through it
      { path: "home/<2>", type: "file", content: "not the root", uid: 4242, mode: 0o600 },
      { path: "dev/", type: "dir" },
      { path: "dev/console", type: "char", devmajor: 5, devminor: 1, mode: 0o600 },
    ],
  ]);
  const built = await ensureBaseRootfs(image, { stateDir });
  const { stdout: ea } = await execFileP("debugfs", ["-R", "ea_list /bin/ping", built.path]);
  assert.match(ea, /security\.capability \(20\) = 01 00 00 02 00 04 00 00/);
  assert.match(ea, /user\.note \(5\) = "hello"/);
  const { stdout: big } = await execFileP("debugfs", ["-R", "stat /home/big", built.path]);
  assert.match(big, /User:\s+100000\s+Group:\s+200000/);
  assert.match(big, /Mode:\s+0700/);
  const { stdout: quoted } = await execFileP("debugfs", ["-R", 'stat "/home/a ""quoted"" name"', built.path]);
  assert.match(quoted, /User:\s+7\s/);
  const { stdout: odd } = await execFileP("debugfs", ["-R", "stat /home/<2>", built.path]);
  assert.match(odd, /User:\s+4242\s/);
  const { stdout: root } = await execFileP("debugfs", ["-R", "stat /", built.path]);
  assert.match(root, /User:\s+0\s+Group:\s+0/);
  assert.match(root, /Mode:\s+0755/);
  const { stdout: dev } = await execFileP("debugfs", ["-R", "stat /dev/console", built.path]);
  assert.match(dev, /Type: character special/);
  assert.match(dev, /Device major\/minor number: 05:01/);
  await execFileP("e2fsck", ["-fn", built.path]);
});

test("rootfs-cache: a cancelled build publishes nothing", async () => {
  const stateDir = join(scratch, "state-abort");
  const image = imageOf([SIMPLE]);
  const controller = new AbortController();
  controller.abort(new Error("user pressed ^C"));
  await rejectsWith(ensureBaseRootfs(image, { stateDir, signal: controller.signal }), "INTERRUPTED");
  assertNothingLeft(stateDir, image);
});

test("rootfs-cache: leftovers of a killed builder of the same base are swept on the next build", async () => {
  const stateDir = join(scratch, "state-sweep");
  const image = imageOf([SIMPLE]);
  const paths = baseCachePaths(stateDir, image.manifestDigest);
  const tmp = join(stateDir, "build", "tmp");
  mkdirSync(paths.dir, { recursive: true });
  mkdirSync(join(tmp, `${paths.name}-999999999-abcd1234`, "stage"), { recursive: true });
  writeFileSync(join(paths.dir, `.${paths.name}.ext4.tmp-999999999-abcd1234`), "half an image");
  const live = join(tmp, `${paths.name}-${process.pid}-00000000`);
  mkdirSync(live);
  const r = await ensureBaseRootfs(image, { stateDir });
  assert.equal(r.cacheHit, false);
  // the finished build deletes its own staging tree in the background: wait for it (bounded)
  const deadline = Date.now() + 30_000;
  while (readdirSync(tmp).length > 1 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  assert.deepEqual(readdirSync(tmp), [`${paths.name}-${process.pid}-00000000`], "only the live process's dir stays");
  assert.deepEqual(readdirSync(paths.dir).filter((f) => f.startsWith(".")), []);
});

test("rootfs-cache: a corrupt gzip layer fails with the image area's typed error, nothing left behind", async () => {
  const { gzipSync } = await import("node:zlib");
  const stateDir = join(scratch, "state-gzip");
  const image = imageOf([[{ path: "f", type: "file", content: Buffer.alloc(200_000, 3) }]], { diffIds: [] });
  const layer = image.layers[0]!;
  const gz = gzipSync(readFileSync(layer.path));
  gz.fill(0x55, 200, 260); // damage the deflate stream
  writeFileSync(layer.path, gz);
  const broken: LocalImage = { ...image, layers: [{ ...layer, compression: "gzip", mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", size: gz.length }] };
  await assert.rejects(ensureBaseRootfs(broken, { stateDir }), (e: unknown) => {
    assert.ok(isMicroagentError(e), String(e));
    assert.match(e.code, /^(IMAGE_LAYER_CORRUPT|ROOTFS_LAYER_INVALID)$/);
    assert.match(e.message, new RegExp(layer.digest.slice(7, 19)));
    return true;
  });
  assertNothingLeft(stateDir, broken);
});

test("rootfs-cache: two processes ensuring one digest at once build it once", async () => {
  const stateDir = join(scratch, "state-procs");
  const image = imageOf([SIMPLE, [{ path: "etc/more", type: "file", content: Buffer.alloc(3_000_000, 9) }]]);
  const imageFile = join(scratch, `procs-image-${counter}.json`);
  writeFileSync(imageFile, JSON.stringify(image));
  const driver = join(scratch, "procs-driver.ts");
  writeFileSync(
    driver,
    [
      `import { readFileSync } from "node:fs";`,
      `import { ensureBaseRootfs } from ${JSON.stringify(new URL("../../src/rootfs/build.ts", import.meta.url).pathname)};`,
      `const r = await ensureBaseRootfs(JSON.parse(readFileSync(process.argv[2], "utf8")), { stateDir: process.argv[3] });`,
      `console.log(JSON.stringify(r));`,
    ].join("\n"),
  );
  const run = () => execFileP(process.execPath, [driver, imageFile, stateDir], { timeout: 120_000 }).then((o) => JSON.parse(o.stdout) as { cacheHit: boolean; sha256: string });
  const [a, b] = await Promise.all([run(), run()]);
  assert.deepEqual([a.cacheHit, b.cacheHit].sort(), [false, true], "one built, the other waited and hit the cache");
  assert.equal(a.sha256, b.sha256);
});

test("rootfs-cache: when mke2fs runs out of space at the estimated size, the builder grows and retries", async () => {
  const stateDir = join(scratch, "state-grow");
  const image = imageOf([SIMPLE]);
  // An mke2fs that refuses anything under 150 MiB the way the real one does when content doesn't fit.
  const wrapper = join(scratch, "small-mke2fs");
  const real = ["/usr/sbin/mke2fs", "/sbin/mke2fs"].find((p) => existsSync(p))!;
  writeFileSync(
    wrapper,
    `#!/bin/sh\nfor a in "$@"; do last="$a"; done\nsize=\${last%M}\nif [ "$size" -lt 150 ]; then echo "__populate_fs: Could not allocate block in ext2 filesystem while writing file" >&2; exit 1; fi\nexec ${real} "$@"\n`,
    { mode: 0o755 },
  );
  const built = await ensureBaseRootfs(image, { stateDir, mke2fs: wrapper, debugfs: ["/usr/sbin/debugfs", "/sbin/debugfs"].find((p) => existsSync(p))! });
  assert.ok(built.sizeMib >= 150, `grew to ${built.sizeMib} MiB`);
  // an explicit size is never grown: the error names a larger size
  await rejectsWith(ensureBaseRootfs(image, { stateDir, mke2fs: wrapper, sizeMib: 100 }), "ROOTFS_TOO_SMALL", /100 MiB .* needs at least 128 MiB/);
});
