/**
 * Correctness reference for the rootfs builder: for a real multi-layer image (umoci-built: deletes,
 * an opaque replaced dir, hard links within and across layers, setuid/setgid/sticky, foreign owners,
 * relative and absolute symlinks, a FIFO and device nodes, a zstd layer), the ext4 tree read back
 * with debugfs equals what `umoci unpack` (as root, so owners are kept) produces. The same image is
 * then built as an unprivileged user, and must come out byte-identical to the root build; a rebuild
 * in a fresh state dir is byte-identical too (reproducible), and a second ensure is a cache hit that
 * reads no layer.
 */
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFile, execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { chmodSync, chownSync, cpSync, linkSync, mkdirSync, symlinkSync, unlinkSync, lstatSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { addTarLayer, addTreeLayer, buildBusyboxImage, buildFeatureImage, type OciImage } from "../helpers/oci-image.ts";
import { scratchDir } from "../helpers/scratch.ts";
import { ensureBaseRootfs, type BaseRootfs } from "../../src/rootfs/build.ts";
import { sha256File } from "../../src/util/hash.ts";
import { compressionOf } from "../../src/image/layer.ts";
import type { LocalImage } from "../../src/image/types.ts";

const execFileP = promisify(execFile);
const isRoot = process.getuid?.() === 0;
const DEBUGFS = ["/usr/sbin/debugfs", "/sbin/debugfs"].find((p) => {
  try {
    return lstatSync(p).isFile();
  } catch {
    return false;
  }
});

// --- image layout -> LocalImage (blobs read in place) ------------------------------------------

function localImageFromLayout(layoutDir: string, tag: string): LocalImage {
  const blob = (d: string) => join(layoutDir, "blobs/sha256", d.replace(/^sha256:/, ""));
  const index = JSON.parse(readFileSync(join(layoutDir, "index.json"), "utf8")) as {
    manifests: Array<{ digest: string; annotations?: Record<string, string> }>;
  };
  const desc = index.manifests.find((m) => m.annotations?.["org.opencontainers.image.ref.name"] === tag);
  if (!desc) throw new Error(`tag ${tag} not in ${layoutDir}`);
  const manifest = JSON.parse(readFileSync(blob(desc.digest), "utf8")) as {
    config: { digest: string; size: number };
    layers: Array<{ digest: string; mediaType: string; size: number }>;
  };
  const config = JSON.parse(readFileSync(blob(manifest.config.digest), "utf8")) as {
    architecture: string;
    os: string;
    config?: Record<string, unknown>;
    rootfs: { diff_ids: string[] };
  };
  return {
    ref: `localhost/feature:${tag}`,
    resolvedRef: `localhost/feature@${desc.digest}`,
    manifestDigest: desc.digest,
    platform: { os: config.os, architecture: config.architecture },
    config: (config.config ?? {}) as LocalImage["config"],
    configDigest: manifest.config.digest,
    layers: manifest.layers.map((l) => ({
      digest: l.digest,
      mediaType: l.mediaType,
      size: l.size,
      path: blob(l.digest),
      compression: compressionOf(l.mediaType) ?? "none",
    })),
    sizeBytes: manifest.config.size + manifest.layers.reduce((n, l) => n + l.size, 0),
    diffIds: config.rootfs.diff_ids,
  };
}

// --- tree snapshots ------------------------------------------------------------------------------

interface Node {
  type: string;
  mode: string;
  uid: number;
  gid: number;
  mtime?: number;
  target?: string;
  sha256?: string;
  dev?: string;
}

interface Tree {
  nodes: Map<string, Node>;
  /** Groups (size > 1) of paths sharing one inode, each sorted, the list sorted. */
  hardlinks: string[][];
}

function groupLinks(byIno: Map<string, string[]>): string[][] {
  return [...byIno.values()]
    .filter((g) => g.length > 1)
    .map((g) => g.sort())
    .sort((a, b) => (a[0]! < b[0]! ? -1 : 1));
}

const TYPE_OF_BITS: Record<number, string> = { 0o100000: "file", 0o040000: "dir", 0o120000: "symlink", 0o020000: "char", 0o060000: "block", 0o010000: "fifo" };

/** The host tree as `umoci unpack` left it (lstat, never following links). */
function hostTree(root: string): Tree {
  const nodes = new Map<string, Node>();
  const byIno = new Map<string, string[]>();
  const walk = (rel: string) => {
    const abs = rel === "" ? root : join(root, rel);
    const st = lstatSync(abs);
    const type = TYPE_OF_BITS[st.mode & 0o170000] ?? "other";
    const node: Node = { type, mode: (st.mode & 0o7777).toString(8), uid: st.uid, gid: st.gid };
    node.mtime = Math.floor(st.mtimeMs / 1000);
    if (type === "symlink") node.target = readlinkSync(abs);
    if (type === "file") node.sha256 = createHash("sha256").update(readFileSync(abs)).digest("hex");
    if (type === "char" || type === "block") node.dev = `${Math.floor(st.rdev / 256)}:${st.rdev % 256}`;
    nodes.set(`/${rel}`, node);
    if (type !== "dir") byIno.set(String(st.ino), [...(byIno.get(String(st.ino)) ?? []), `/${rel}`]);
    if (type === "dir") for (const name of readdirSync(abs)) walk(rel === "" ? name : `${rel}/${name}`);
  };
  walk("");
  return { nodes, hardlinks: groupLinks(byIno) };
}

const q = (p: string) => `"${p.replaceAll('"', '""')}"`;

/** Run a debugfs script read-only and split its output per command (each is echoed as "debugfs: CMD"). */
async function debugfsBatch(image: string, commands: string[], scratch: string): Promise<string[]> {
  const script = join(scratch, `batch-${Math.random().toString(36).slice(2)}.debugfs`);
  writeFileSync(script, `${commands.join("\n")}\n`);
  const { stdout } = await execFileP(DEBUGFS!, ["-f", script, image], { maxBuffer: 256 * 1024 * 1024 });
  const outputs: string[] = [];
  for (const line of stdout.split("\n")) {
    if (line.startsWith("debugfs: ")) outputs.push("");
    else if (outputs.length > 0) outputs[outputs.length - 1] += `${line}\n`;
  }
  assert.equal(outputs.length, commands.length, "debugfs answered every command");
  return outputs;
}

/** The ext4 tree read back with debugfs: `ls -p` for names/modes/owners/inodes, `stat` for times and devices, `rdump` for content. */
async function ext4Tree(image: string, scratch: string): Promise<Tree> {
  const nodes = new Map<string, Node>();
  const byIno = new Map<string, string[]>();
  const root: Node = { type: "dir", mode: "", uid: 0, gid: 0 };
  nodes.set("/", root);
  let level = ["/"];
  while (level.length > 0) {
    const outputs = await debugfsBatch(image, level.map((d) => `ls -p ${q(d)}`), scratch);
    const next: string[] = [];
    level.forEach((dir, i) => {
      for (const line of outputs[i]!.split("\n")) {
        if (!line.startsWith("/")) continue;
        const f = line.split("/");
        const [ino, modeText, uid, gid, name] = [f[1]!, f[2]!, Number(f[3]), Number(f[4]), f[5]!];
        const mode = parseInt(modeText, 8);
        const path = dir === "/" ? `/${name}` : `${dir}/${name}`;
        if (name === ".") {
          Object.assign(nodes.get(dir)!, { mode: (mode & 0o7777).toString(8), uid, gid });
          continue;
        }
        if (name === ".." || path === "/lost+found") continue;
        const type = TYPE_OF_BITS[mode & 0o170000] ?? "other";
        nodes.set(path, { type, mode: (mode & 0o7777).toString(8), uid, gid });
        if (type === "dir") next.push(path);
        else byIno.set(ino, [...(byIno.get(ino) ?? []), path]);
      }
    });
    level = next;
  }
  const all = [...nodes.entries()];
  const others = all.filter(([, n]) => n.type !== "dir");
  const stats = await debugfsBatch(image, all.map(([p]) => `stat ${q(p)}`), scratch);
  all.forEach(([, node], i) => {
    const text = stats[i]!;
    const m = /^ mtime: 0x([0-9a-f]+)/m.exec(text);
    if (m) node.mtime = parseInt(m[1]!, 16);
    const dev = /Device major\/minor number: ([0-9a-f]+):([0-9a-f]+)/.exec(text);
    if (dev) node.dev = `${parseInt(dev[1]!, 10)}:${parseInt(dev[2]!, 10)}`;
  });
  // rdump writes regular files and symlinks out (it skips device nodes and FIFOs).
  const dump = join(scratch, `rdump-${Math.random().toString(36).slice(2)}`);
  execFileSync("mkdir", [dump]);
  await execFileP(DEBUGFS!, ["-R", `rdump / ${dump}`, image]);
  for (const [path, node] of others) {
    if (node.type === "file") node.sha256 = createHash("sha256").update(readFileSync(join(dump, path))).digest("hex");
    if (node.type === "symlink") node.target = readlinkSync(join(dump, path));
  }
  return { nodes, hardlinks: groupLinks(byIno) };
}

function assertSameTree(actual: Tree, expected: Tree, what: string, opts: { ignoreMtime?: boolean } = {}): void {
  const show = (n: Node | undefined) => JSON.stringify(opts.ignoreMtime && n ? { ...n, mtime: undefined } : n);
  const a = [...actual.nodes.keys()].sort();
  const e = [...expected.nodes.keys()].sort();
  assert.deepEqual(a, e, `${what}: the same paths`);
  const diffs: string[] = [];
  for (const path of e) {
    const x = show(actual.nodes.get(path));
    const y = show(expected.nodes.get(path));
    if (x !== y) diffs.push(`${path}\n    ext4:  ${x}\n    umoci: ${y}`);
  }
  assert.deepEqual(diffs, [], `${what}: entries differ:\n${diffs.join("\n")}`);
  assert.deepEqual(actual.hardlinks, expected.hardlinks, `${what}: the same hard-link groups`);
}

// --- the test ------------------------------------------------------------------------------------

let image: OciImage;
let local: LocalImage;
let scratch: string;
let umociTree: Tree;
let rootBuild: BaseRootfs;

before(async () => {
  assert.ok(isRoot, "this test builds its reference with root-owned files and device nodes: run the integration suite as root");
  assert.ok(DEBUGFS, "debugfs (e2fsprogs) is required to read the ext4 back");
  scratch = scratchDir("rootfs-umoci");
  // umoci 0.4 cannot unpack zstd layers: the reference image uses gzip; a zstd twin is checked below.
  image = await buildFeatureImage({ lastLayerCompression: "gzip" });
  local = localImageFromLayout(image.layoutDir, image.tag);
  const bundle = join(scratch, "bundle");
  await execFileP("umoci", ["unpack", "--image", `${image.layoutDir}:${image.tag}`, bundle], { timeout: 120_000 });
  umociTree = hostTree(join(bundle, "rootfs"));
});

after(async () => {
  await image?.cleanup();
  if (scratch) rmSync(scratch, { recursive: true, force: true });
});

test("rootfs-umoci: the feature image exercises what it should", () => {
  const n = umociTree.nodes;
  assert.ok(!n.has("/etc/delete-me") && !n.has("/data/old"), "whiteouts applied by umoci");
  assert.deepEqual([...n.keys()].filter((p) => p.startsWith("/replaced/")), ["/replaced/new"]);
  assert.equal(n.get("/usr/bin/suid")?.mode, "4755");
  assert.equal(n.get("/shared")?.mode, "1777");
  assert.equal(n.get("/home-owned")?.uid, 1234);
  assert.equal(n.get("/data/null")?.type, "char");
  assert.equal(n.get("/data/fifo")?.type, "fifo");
  assert.ok(umociTree.hardlinks.some((g) => g.includes("/data/keep.txt") && g.includes("/data/keep-hardlink2.txt")));
});

test("rootfs-umoci: the ext4 built as root equals `umoci unpack` (names, types, modes, owners, links, content, devices, mtimes)", async () => {
  const stateDir = join(scratch, "state-root");
  rootBuild = await ensureBaseRootfs(local, { stateDir });
  assert.equal(rootBuild.cacheHit, false);
  assert.equal(rootBuild.path, join(stateDir, "build/base", `${local.manifestDigest.slice(7)}.ext4`));
  assert.equal(rootBuild.sha256, await sha256File(rootBuild.path));
  assert.equal(lstatSync(rootBuild.path).mode & 0o777, 0o600);
  const record = JSON.parse(readFileSync(rootBuild.path.replace(/\.ext4$/, ".json"), "utf8")) as Record<string, unknown>;
  assert.equal(record.sha256, rootBuild.sha256);
  assert.equal(record.manifestDigest, local.manifestDigest);
  assertSameTree(await ext4Tree(rootBuild.path, scratch), umociTree, "root build");
  // fsck agrees the filesystem is clean
  await execFileP("e2fsck", ["-fn", rootBuild.path]);
});

test("rootfs-umoci: a second ensure of the same digest is a cache hit that reads no layer", async () => {
  const missing = { ...local, layers: local.layers.map((l) => ({ ...l, path: join(scratch, "no-such-blob") })) };
  const t0 = performance.now();
  const again = await ensureBaseRootfs(missing, { stateDir: join(scratch, "state-root") });
  const ms = performance.now() - t0;
  assert.equal(again.cacheHit, true);
  assert.equal(again.sha256, rootBuild.sha256);
  assert.equal(again.path, rootBuild.path);
  assert.ok(ms < 1000, `cache hit took ${ms} ms`);
});

test("rootfs-umoci: building the same digest again in a fresh state dir gives the same bytes", async () => {
  const other = await ensureBaseRootfs(local, { stateDir: join(scratch, "state-repro") });
  assert.equal(other.cacheHit, false);
  assert.equal(other.sha256, rootBuild.sha256);
});

test("rootfs-umoci: the same image with a zstd layer gives the same tree", async () => {
  const zstd = await buildFeatureImage({ lastLayerCompression: "zstd" });
  try {
    const zlocal = localImageFromLayout(zstd.layoutDir, zstd.tag);
    assert.ok(zlocal.layers.some((l) => l.compression === "zstd"));
    const built = await ensureBaseRootfs(zlocal, { stateDir: join(scratch, "state-zstd") });
    // built a few seconds later than the reference: same tree except the mtimes
    assertSameTree(await ext4Tree(built.path, scratch), umociTree, "zstd twin", { ignoreMtime: true });
  } finally {
    await zstd.cleanup();
  }
});

test("rootfs-umoci: replacements across layers (file<->dir, dir->symlink, deleted link sources, chmod/chown-only changes) match umoci", async () => {
  const edge = await buildBusyboxImage({
    noBusybox: true,
    files: {
      "/a/file-becomes-dir": "f\n",
      "/a/dir-becomes-file/x": "x\n",
      "/a/dir-becomes-link/y": "y\n",
      "/a/link-source": "shared\n",
      "/a/mode-only": { content: "m\n", mode: 0o644 },
      "/a/owner-only": "o\n",
      "/keep/sub/deep": "deep\n",
    },
  });
  try {
    await addTreeLayer(edge, async (rootfs) => {
      const r = (p: string) => join(rootfs, p);
      linkSync(r("a/link-source"), r("a/link-copy"));
      unlinkSync(r("a/file-becomes-dir"));
      mkdirSync(r("a/file-becomes-dir"));
      rmSync(r("a/dir-becomes-file"), { recursive: true });
      writeFileSync(r("a/dir-becomes-file"), "now a file\n");
      rmSync(r("a/dir-becomes-link"), { recursive: true });
      symlinkSync("/keep/sub", r("a/dir-becomes-link"));
      chmodSync(r("a/mode-only"), 0o2711);
      chownSync(r("a/owner-only"), 4242, 4343);
    });
    await addTreeLayer(edge, async (rootfs) => {
      // the link's first name goes away: the other name keeps the content
      unlinkSync(join(rootfs, "a/link-source"));
      rmSync(join(rootfs, "keep/sub"), { recursive: true });
      mkdirSync(join(rootfs, "keep/sub"));
      writeFileSync(join(rootfs, "keep/sub/fresh"), "fresh\n");
    });
    await addTarLayer(edge, [{ path: "a/.wh.owner-only", type: "file" }, { path: "a/owner-only", type: "file", content: "recreated\n", uid: 9, gid: 9, mode: 0o600 }], { compression: "gzip" });
    const bundle = join(scratch, "edge-bundle");
    await execFileP("umoci", ["unpack", "--image", `${edge.layoutDir}:${edge.tag}`, bundle], { timeout: 120_000 });
    const reference = hostTree(join(bundle, "rootfs"));
    assert.equal(reference.nodes.get("/a/dir-becomes-link")?.type, "symlink");
    assert.equal(reference.nodes.get("/a/mode-only")?.mode, "2711");
    const built = await ensureBaseRootfs(localImageFromLayout(edge.layoutDir, edge.tag), { stateDir: join(scratch, "state-edge") });
    assertSameTree(await ext4Tree(built.path, scratch), reference, "edge image");
  } finally {
    await edge.cleanup();
  }
});

test("rootfs-umoci: built as an unprivileged user, the ext4 is byte-identical to the root build", async () => {
  const user = "mabuild";
  try {
    execFileSync("id", [user], { stdio: "ignore" });
  } catch {
    execFileSync("/usr/sbin/useradd", ["--system", "--no-create-home", "--shell", "/usr/sbin/nologin", user]);
  }
  // A work dir the user owns, outside the root-only scratch root: a copy of the layout and a state dir.
  const work = mkdtempSync(join(tmpdir(), "matest-rootfs-nonroot-"));
  try {
    cpSync(image.layoutDir, join(work, "layout"), { recursive: true });
    const userImage = localImageFromLayout(join(work, "layout"), image.tag);
    writeFileSync(join(work, "image.json"), JSON.stringify(userImage));
    const driver = join(work, "driver.ts");
    writeFileSync(
      driver,
      [
        `import { readFileSync } from "node:fs";`,
        `import { ensureBaseRootfs } from ${JSON.stringify(new URL("../../src/rootfs/build.ts", import.meta.url).pathname)};`,
        `const image = JSON.parse(readFileSync(process.argv[2], "utf8"));`,
        `const result = await ensureBaseRootfs(image, { stateDir: process.argv[3] });`,
        `console.log(JSON.stringify({ uid: process.getuid(), result }));`,
      ].join("\n"),
    );
    execFileSync("chown", ["-R", `${user}:${user}`, work]);
    chmodSync(work, 0o700);
    chownSync(work, Number(execFileSync("id", ["-u", user]).toString().trim()), Number(execFileSync("id", ["-g", user]).toString().trim()));
    const { stdout } = await execFileP("/usr/sbin/runuser", ["-u", user, "--", process.execPath, driver, join(work, "image.json"), join(work, "state")], {
      timeout: 300_000,
      env: { PATH: "/usr/local/bin:/usr/bin:/bin", HOME: work },
    });
    const out = JSON.parse(stdout.trim().split("\n").pop()!) as { uid: number; result: BaseRootfs };
    assert.notEqual(out.uid, 0, "the driver really ran unprivileged");
    assert.equal(out.result.cacheHit, false);
    assertSameTree(await ext4Tree(out.result.path, scratch), umociTree, "unprivileged build");
    assert.equal(out.result.sha256, rootBuild.sha256, "unprivileged and root builds are byte-identical");
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
});
