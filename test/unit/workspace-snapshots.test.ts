/**
 * Snapshot files and the warm-run cache without a VM: tags, the temp-then-rename commit (a temp
 * directory is never listed and is swept), layer collection (only layers no chain needs go), the
 * divergence check naming the artifact, and the warm cache's key, hash verification and eviction.
 * The VM-backed behaviour is test/integration/snapshot.test.ts.
 */
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { mkdir, readdir, stat, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createHash } from "node:crypto";
import {
  beginSnapshot,
  collectLayers,
  commitSnapshot,
  defaultSnapshotTag,
  listSnapshots,
  parseSnapshotRef,
  snapshotDivergence,
  sweepSnapshotDebris,
  validateSnapshotTag,
  SNAPSHOT_MANIFEST_VERSION,
  type SnapshotManifest,
} from "../../src/workspace/snapshots.ts";
import { beginWarmEntry, commitWarmEntry, evictWarm, readWarmEntry, warmKey, warmRoot } from "../../src/workspace/warm.ts";
import { workspacePaths } from "../../src/workspace/paths.ts";
import { writeManifest, type Manifest } from "../../src/workspace/manifest.ts";

const root = mkdtempSync(join(tmpdir(), "ws-snapshots-"));
after(() => rmSync(root, { recursive: true, force: true }));
const sha = (s: string) => createHash("sha256").update(s).digest("hex");
const codeOf = (e: unknown) => (e as { code?: string }).code;

function manifestFor(name: string, dir: string, disk: string): Manifest {
  return {
    version: 1,
    name,
    createdAt: new Date().toISOString(),
    backend: "linux-qemu",
    arch: "amd64",
    image: { ref: "busybox", resolvedRef: "busybox@sha256:" + "a".repeat(64), digest: "sha256:" + "a".repeat(64) },
    resources: { profile: "tiny", memoryMib: 256, cpus: 1, sizeMib: 64 },
    network: { mode: "isolated" },
    boot: { argv: [], entrypoint: [], cmd: [], env: {}, cwd: "/", user: "root", setup: [], files: [], hostname: name, stopSignal: "SIGTERM", shell: ["/bin/sh"] },
    artifacts: {
      kernel: { path: join(dir, "vmlinuz"), sha256: sha("kernel") },
      initramfs: { path: join(dir, "initramfs"), sha256: sha("initramfs") },
      rootfsBase: { path: join(dir, "base"), sha256: sha("base") },
      bootConfig: { path: join(dir, "boot-config.json"), sha256: sha("{}") },
      disk: { path: disk, format: "qcow2" },
    },
  } as Manifest;
}

function snapManifest(tag: string, disk: string): SnapshotManifest {
  return {
    version: SNAPSHOT_MANIFEST_VERSION,
    tag,
    workspace: "w",
    createdAt: new Date().toISOString(),
    backend: "linux-qemu",
    arch: "amd64",
    artifacts: { kernel: { path: "/k", sha256: sha("kernel") }, initramfs: { path: "/i", sha256: sha("initramfs") } },
    image: { ref: "busybox", resolvedRef: "r", digest: "d" },
    resources: { memoryMib: 256, cpus: 1, sizeMib: 64 },
    network: { mode: "isolated", hostname: "w" },
    disk: { path: disk, format: "qcow2", virtualSizeBytes: 64 << 20 },
    state: { file: "state", bytes: 4 },
    guestConfigured: true,
    timings: { pauseMs: 1, freezeMs: 1, saveMs: 1, totalMs: 3 },
  };
}

test("snapshot tags: validated, defaulted from the time, SRC:TAG parsed", () => {
  for (const ok of ["base", "v1.2", "A_b-c", "snap-20261201-222110"]) assert.equal(validateSnapshotTag(ok), ok);
  for (const bad of ["", ".tmp-x", "-x", "a/b", "x".repeat(64), "a b"]) assert.throws(() => validateSnapshotTag(bad), (e) => codeOf(e) === "SNAPSHOT_INVALID_TAG", bad);
  assert.equal(defaultSnapshotTag(new Date("2026-12-01T22:21:10Z")), "snap-20261201-222110");
  assert.deepEqual(parseSnapshotRef("dev:before"), { workspace: "dev", tag: "before" });
  for (const bad of ["dev", ":t", "dev:", "dev:.x"]) assert.throws(() => parseSnapshotRef(bad), (e) => codeOf(e) === "SNAPSHOT_INVALID_TAG", bad);
});

test("snapshot files: a temp directory is never listed; commit renames it into place; an existing tag is refused; sweep removes debris", async () => {
  const stateDir = join(root, "s1");
  const paths = workspacePaths(stateDir, "w");
  await mkdir(paths.dir, { recursive: true });
  await writeFile(join(paths.dir, "disk.qcow2"), "layer");
  const tmp = await beginSnapshot(paths, "one");
  await writeFile(join(tmp, "state"), "mem!");
  assert.deepEqual(await listSnapshots(paths), [], "an incomplete snapshot is not listed");
  await commitSnapshot(paths, tmp, snapManifest("one", join(paths.dir, "disk.qcow2")));
  const listed = await listSnapshots(paths);
  assert.deepEqual(listed.map((s) => [s.tag, s.stateBytes]), [["one", 4]]);
  assert.equal((await stat(listed[0]!.dir)).mode & 0o777, 0o700);
  await assert.rejects(beginSnapshot(paths, "one"), (e) => codeOf(e) === "SNAPSHOT_EXISTS");
  // Debris of an interrupted capture: swept, never listed.
  const debris = await beginSnapshot(paths, "two");
  await writeFile(join(debris, "state"), "half");
  await writeManifest(paths, manifestFor("w", paths.dir, join(paths.dir, "disk.qcow2")));
  await sweepSnapshotDebris(paths, stateDir, async (p) => [p]);
  assert.deepEqual((await readdir(join(paths.dir, "snapshots"))).sort(), ["one"]);
});

test("disk layers: only layers no chain needs are removed; an unreadable chain keeps everything", async () => {
  const stateDir = join(root, "s2");
  const paths = workspacePaths(stateDir, "w");
  await mkdir(paths.dir, { recursive: true });
  const [l0, l1, l2, stray] = ["disk.qcow2", "disk-aaaa.qcow2", "disk-bbbb.qcow2", "disk-cccc.qcow2"].map((n) => join(paths.dir, n)) as [string, string, string, string];
  for (const f of [l0, l1, l2, stray]) await writeFile(f, "x");
  await writeManifest(paths, manifestFor("w", paths.dir, l2));
  // l2 (the top) -> l1 -> l0; a snapshot froze l1; `stray` is an overlay a crashed capture left.
  const chains: Record<string, string[]> = { [l2]: [l2, l1, l0], [l1]: [l1, l0] };
  const tmp = await beginSnapshot(paths, "s");
  await writeFile(join(tmp, "state"), "m");
  await commitSnapshot(paths, tmp, snapManifest("s", l1));
  assert.deepEqual(await collectLayers(paths, stateDir, async (p) => chains[p] ?? [p]), [stray]);
  assert.deepEqual(await collectLayers(paths, stateDir, async () => Promise.reject(new Error("qemu-img failed"))), [], "nothing removed when a chain cannot be read");
});

test("snapshot divergence names the kernel, the initramfs, then the init", async () => {
  const dir = join(root, "div");
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, "vmlinuz"), "kernel");
  await writeFile(join(dir, "initramfs"), "initramfs");
  const m = snapManifest("t", "/d");
  const current = { kernelPath: join(dir, "vmlinuz"), initramfsPath: join(dir, "initramfs") };
  assert.equal(await snapshotDivergence(m, current), undefined);
  await writeFile(join(dir, "vmlinuz"), "kernel, rebuilt");
  assert.equal((await snapshotDivergence(m, current))?.artifact, "kernel");
  await writeFile(join(dir, "vmlinuz"), "kernel");
  await writeFile(join(dir, "initramfs"), "other");
  assert.equal((await snapshotDivergence(m, current))?.artifact, "initramfs");
  await writeFile(join(dir, "initramfs"), "initramfs");
  await writeFile(join(dir, "manifest.json"), JSON.stringify({ init: { sha256: sha("new init") } }));
  assert.equal((await snapshotDivergence({ ...m, artifacts: { ...m.artifacts, init: { sha256: sha("old init") } } }, current))?.artifact, "init");
});

test("warm cache: the key follows kernel, init and resources; entries are hash-verified before use; the newest few are kept", async () => {
  const stateDir = join(root, "warm");
  const m = manifestFor("w", root, "/d");
  const k = warmKey(m, sha("init"));
  assert.equal(warmKey(m, sha("init")), k);
  assert.notEqual(warmKey({ ...m, artifacts: { ...m.artifacts, kernel: { ...m.artifacts.kernel, sha256: sha("k2") } } }, sha("init")), k);
  assert.notEqual(warmKey(m, sha("init2")), k);
  assert.notEqual(warmKey({ ...m, resources: { ...m.resources, memoryMib: 512 } }, sha("init")), k);

  const layer = join(root, "frozen.qcow2");
  await writeFile(layer, "frozen layer");
  const add = async (key: string) => {
    const tmp = await beginWarmEntry(stateDir, key);
    await writeFile(join(tmp, "state"), `state of ${key}`);
    await commitWarmEntry(stateDir, tmp, { key, imageDigest: "sha256:x", frozenLayer: layer, format: "qcow2", virtualSizeBytes: 1 << 20 });
  };
  await add(k);
  const hit = await readWarmEntry(stateDir, k);
  assert.ok(hit, "a complete entry is a hit");
  assert.equal(hit.entry.key, k);
  // A state file changed on disk is never loaded: the entry is dropped.
  await writeFile(join(hit.dir, "state"), "tampered");
  assert.equal(await readWarmEntry(stateDir, k), undefined);
  assert.deepEqual(await readdir(warmRoot(stateDir)), []);
  // Eviction keeps the newest.
  const keys = [1, 2, 3, 4, 5, 6].map((i) => sha(`key${i}`));
  for (const [i, key] of keys.entries()) {
    await add(key);
    const t = new Date(Date.now() - (10 - i) * 1000);
    await utimes(join(warmRoot(stateDir), key), t, t);
  }
  await evictWarm(stateDir, 4);
  assert.deepEqual((await readdir(warmRoot(stateDir))).sort(), keys.slice(2).sort());
});
