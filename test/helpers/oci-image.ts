/**
 * Test fixture: real OCI images built with standard tools (umoci, skopeo) and a small tar writer.
 *
 *   const img = await buildBusyboxImage({ files: { "/etc/motd": "hi\n" }, cmd: ["/bin/sh", "-c", "cat /etc/motd"] });
 *   await addTreeLayer(img, async (rootfs) => { await rm(join(rootfs, "etc/motd")); });   // umoci diff: a whiteout
 *   await addTarLayer(img, [{ path: "etc/.wh..wh..opq", type: "file" }], { compression: "zstd" });
 *   const pushed = await pushImage(img, reg, "demo:1");   // skopeo -> the test registry
 *   ... finally { await img.cleanup(); }
 *
 * - `buildBusyboxImage` : umoci init/new/unpack, busybox-static + applet symlinks + your files, repack,
 *   umoci config (entrypoint, cmd, env, workingDir, user, labels, stopSignal, architecture).
 * - `addTreeLayer`      : unpack the image, let the callback edit the tree, repack (umoci makes the diff,
 *   including whiteouts for deleted paths). Runs as root here, so chown/mknod/setuid in the tree stick.
 * - `addTarLayer`       : append a hand-written layer (any entries, including hostile ones: `../x`,
 *   absolute symlinks, opaque markers, device nodes) compressed as gzip, zstd or none.
 * - `buildFeatureImage` : a multi-layer image with deletes, an opaque dir, hard links, setuid/setgid/sticky,
 *   foreign owners, symlinks, a FIFO and device nodes (when root), and a zstd layer.
 * - `pushImage`, `dockerArchive`, `buildMultiArchImage` / `pushMultiArch` for registry, `docker save` and
 *   index tests.
 * - `makeTar(entries)` : the ustar/PAX writer behind addTarLayer, exported for layer-level tests.
 */
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { chmod, chown, link, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { promisify } from "node:util";
import { gzipSync, zstdCompressSync } from "node:zlib";
import type { TestRegistry } from "./registry.ts";

const execFileP = promisify(execFile);

export interface OciImage {
  /** The OCI image layout directory. */
  layoutDir: string;
  tag: string;
  /** Current manifest digest of `tag` (updated by addTreeLayer/addTarLayer). */
  manifestDigest: string;
  /** Removes the layout and every scratch directory. */
  cleanup(): Promise<void>;
}

export type FileSpec = string | Buffer | { content?: string | Buffer; mode?: number; uid?: number; gid?: number };

export interface BuildImageOptions {
  /** Layout directory to create (default: a new temp dir). An existing layout gets a new tag. */
  layoutDir?: string;
  /** Tag inside the layout (default "latest"). */
  tag?: string;
  /** Extra files in the first layer: absolute guest path -> content (string/Buffer) or spec. */
  files?: Record<string, FileSpec>;
  /** Leave busybox out (an image with only `files`). */
  noBusybox?: boolean;
  entrypoint?: string[];
  cmd?: string[];
  env?: Record<string, string>;
  workingDir?: string;
  user?: string;
  labels?: Record<string, string>;
  stopSignal?: string;
  /** Config architecture (default amd64). */
  architecture?: "amd64" | "arm64";
}

async function run(cmd: string, args: string[], what: string): Promise<string> {
  try {
    const { stdout } = await execFileP(cmd, args, { maxBuffer: 64 * 1024 * 1024, timeout: 120_000 });
    return stdout;
  } catch (e) {
    const err = e as NodeJS.ErrnoException & { stderr?: string };
    if (err.code === "ENOENT") throw new Error(`${what}: ${cmd} not found (run scripts/setup)`);
    throw new Error(`${what}: ${cmd} ${args.join(" ")} failed: ${err.stderr || err.message}`);
  }
}

const BUSYBOX = "/bin/busybox";
const isRoot = process.getuid?.() === 0;

export async function buildBusyboxImage(options: BuildImageOptions = {}): Promise<OciImage> {
  const scratch = await mkdtemp(join(tmpdir(), "microagent-oci-"));
  const layoutDir = options.layoutDir ?? join(scratch, "layout");
  const tag = options.tag ?? "latest";
  const image: OciImage = {
    layoutDir,
    tag,
    manifestDigest: "",
    // A layout the caller passed in is the caller's to remove; ours lives in `scratch`.
    cleanup: async () => {
      await rm(scratch, { recursive: true, force: true });
    },
  };
  try {
    let exists = true;
    try {
      await readFile(join(layoutDir, "index.json"));
    } catch {
      exists = false;
    }
    if (!exists) await run("umoci", ["init", "--layout", layoutDir], "init layout");
    await run("umoci", ["new", "--image", `${layoutDir}:${tag}`], "new image");
    await addTreeLayer(image, async (rootfs) => {
      if (!options.noBusybox) {
        await mkdir(join(rootfs, "bin"), { recursive: true });
        await writeFile(join(rootfs, "bin/busybox"), await readFile(BUSYBOX), { mode: 0o755 });
        const applets = (await run(BUSYBOX, ["--list"], "busybox applets")).split("\n").filter(Boolean);
        for (const applet of applets) if (applet !== "busybox") await symlink("busybox", join(rootfs, "bin", applet));
        for (const d of ["etc", "tmp", "root", "proc", "sys", "dev", "var", "run"]) await mkdir(join(rootfs, d), { recursive: true });
        await chmod(join(rootfs, "tmp"), 0o1777);
        await writeFile(join(rootfs, "etc/passwd"), "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n");
        await writeFile(join(rootfs, "etc/group"), "root:x:0:\nnogroup:x:65534:\n");
      }
      for (const [path, spec] of Object.entries(options.files ?? {})) await writeSpec(rootfs, path, spec);
    });
    const args = ["config", "--image", `${layoutDir}:${tag}`, "--architecture", options.architecture ?? "amd64", "--os", "linux"];
    if (options.entrypoint) {
      if (options.entrypoint.length === 0) args.push("--clear", "config.entrypoint");
      for (const a of options.entrypoint) args.push("--config.entrypoint", a);
    }
    for (const a of options.cmd ?? []) args.push("--config.cmd", a);
    for (const [k, v] of Object.entries(options.env ?? {})) args.push("--config.env", `${k}=${v}`);
    if (options.workingDir) args.push("--config.workingdir", options.workingDir);
    if (options.user) args.push("--config.user", options.user);
    for (const [k, v] of Object.entries(options.labels ?? {})) args.push("--config.label", `${k}=${v}`);
    if (options.stopSignal) args.push("--config.stopsignal", options.stopSignal);
    await run("umoci", args, "configure image");
    image.manifestDigest = await manifestDigestOf(layoutDir, tag);
    return image;
  } catch (e) {
    await image.cleanup();
    throw e;
  }
}

async function writeSpec(rootfs: string, path: string, spec: FileSpec): Promise<void> {
  const target = join(rootfs, path);
  await mkdir(dirname(target), { recursive: true });
  const s = typeof spec === "string" || Buffer.isBuffer(spec) ? { content: spec } : spec;
  await writeFile(target, s.content ?? "");
  if (s.mode !== undefined) await chmod(target, s.mode);
  if (s.uid !== undefined || s.gid !== undefined) {
    if (!isRoot) throw new Error(`oci-image fixture: owner ${s.uid}:${s.gid} for ${path} needs root; use addTarLayer instead`);
    await chown(target, s.uid ?? 0, s.gid ?? 0);
  }
}

/**
 * Unpack the image's tree, let `edit` change it, and repack: umoci computes the diff layer
 * (whiteouts for deleted paths, full entries for changed ones). As root the tree keeps real
 * owners, setuid bits and device nodes; otherwise umoci runs rootless.
 */
export async function addTreeLayer(image: OciImage, edit: (rootfs: string) => Promise<void>): Promise<void> {
  const bundle = await mkdtemp(join(tmpdir(), "microagent-bundle-"));
  await rm(bundle, { recursive: true });
  try {
    const ref = `${image.layoutDir}:${image.tag}`;
    await run("umoci", ["unpack", ...(isRoot ? [] : ["--rootless"]), "--image", ref, bundle], "unpack image");
    await edit(join(bundle, "rootfs"));
    await run("umoci", ["repack", "--image", ref, bundle], "repack image");
    image.manifestDigest = await manifestDigestOf(image.layoutDir, image.tag);
  } finally {
    await rm(bundle, { recursive: true, force: true });
  }
}

// --- hand-written layers ------------------------------------------------------------------------

export interface TarEntry {
  /** Path as written into the tar (no normalization: `../x` and `/abs` are kept for hostile tests). */
  path: string;
  type: "file" | "dir" | "symlink" | "hardlink" | "char" | "block" | "fifo";
  content?: string | Buffer;
  /** Permission bits incl. setuid/setgid/sticky (default 0644 files, 0755 dirs, 0777 symlinks). */
  mode?: number;
  uid?: number;
  gid?: number;
  /** Symlink target or hard-link source path. */
  linkname?: string;
  devmajor?: number;
  devminor?: number;
  /** Seconds since the epoch (default 1700000000). */
  mtime?: number;
  /** Extra PAX records, e.g. `{"SCHILY.xattr.user.k": "v"}`. */
  pax?: Record<string, string>;
  /** Override the header's size field (to forge a huge declared size); content is written as given. */
  declaredSize?: number;
}

const TYPEFLAG: Record<TarEntry["type"], string> = {
  file: "0", hardlink: "1", symlink: "2", char: "3", block: "4", dir: "5", fifo: "6",
};

function octal(n: number, width: number): string {
  return n.toString(8).padStart(width - 1, "0") + "\0";
}

function header(name: string, typeflag: string, size: number, e: Partial<TarEntry>, linkname = ""): Buffer {
  const h = Buffer.alloc(512);
  h.write(name.slice(0, 100), 0, "utf8");
  h.write(octal(e.mode ?? 0o644, 8), 100);
  h.write(octal(e.uid ?? 0, 8), 108);
  h.write(octal(e.gid ?? 0, 8), 116);
  h.write(size > 0o77777777777 ? "\0".repeat(12) : octal(size, 12), 124);
  if (size > 0o77777777777) {
    // base-256 encoding for sizes beyond 8 GiB
    h[124] = 0x80;
    let v = BigInt(size);
    for (let i = 135; i > 124; i--) {
      h[i] = Number(v & 0xffn);
      v >>= 8n;
    }
  }
  h.write(octal(e.mtime ?? 1_700_000_000, 12), 136);
  h.write("        ", 148);
  h.write(typeflag, 156);
  h.write(linkname.slice(0, 100), 157, "utf8");
  h.write("ustar\u000000", 257, "binary");
  h.write(octal(e.devmajor ?? 0, 8), 329);
  h.write(octal(e.devminor ?? 0, 8), 337);
  let sum = 0;
  for (const b of h) sum += b;
  h.write(octal(sum, 7) + " ", 148);
  return h;
}

function pad(n: number): Buffer {
  return Buffer.alloc((512 - (n % 512)) % 512);
}

function paxRecords(records: Record<string, string>): Buffer {
  let out = "";
  for (const [k, v] of Object.entries(records)) {
    const body = ` ${k}=${v}\n`;
    let len = Buffer.byteLength(body) + 1;
    while (String(len).length + Buffer.byteLength(body) !== len) len = String(len).length + Buffer.byteLength(body);
    out += `${len}${body}`;
  }
  return Buffer.from(out);
}

/** A tar archive (ustar, PAX for long names and extra records) of exactly these entries. */
export function makeTar(entries: readonly TarEntry[]): Buffer {
  const parts: Buffer[] = [];
  for (const e of entries) {
    const content = e.type === "file" ? Buffer.from(e.content ?? "") : Buffer.alloc(0);
    const pax: Record<string, string> = { ...(e.pax ?? {}) };
    if (Buffer.byteLength(e.path) > 100) pax.path = e.path;
    if (e.linkname && Buffer.byteLength(e.linkname) > 100) pax.linkpath = e.linkname;
    if (Object.keys(pax).length > 0) {
      const body = paxRecords(pax);
      parts.push(header("PaxHeader", "x", body.length, {}), body, pad(body.length));
    }
    const defaultMode = e.type === "dir" ? 0o755 : e.type === "symlink" ? 0o777 : 0o644;
    parts.push(header(e.path, TYPEFLAG[e.type], e.declaredSize ?? content.length, { ...e, mode: e.mode ?? defaultMode }, e.linkname ?? ""));
    parts.push(content, pad(content.length));
  }
  parts.push(Buffer.alloc(1024));
  return Buffer.concat(parts);
}

const sha256 = (b: Buffer) => `sha256:${createHash("sha256").update(b).digest("hex")}`;

async function writeBlob(layoutDir: string, data: Buffer): Promise<string> {
  const digest = sha256(data);
  await writeFile(join(layoutDir, "blobs/sha256", digest.slice(7)), data);
  return digest;
}

async function readBlobJson(layoutDir: string, digest: string): Promise<Record<string, unknown>> {
  return JSON.parse(await readFile(join(layoutDir, "blobs/sha256", digest.replace(/^sha256:/, "")), "utf8")) as Record<string, unknown>;
}

interface LayoutIndex {
  schemaVersion: number;
  manifests: Array<{ mediaType: string; digest: string; size: number; annotations?: Record<string, string>; platform?: unknown }>;
}

async function readIndex(layoutDir: string): Promise<LayoutIndex> {
  return JSON.parse(await readFile(join(layoutDir, "index.json"), "utf8")) as LayoutIndex;
}

async function manifestDigestOf(layoutDir: string, tag: string): Promise<string> {
  const index = await readIndex(layoutDir);
  const entry = index.manifests.find((m) => m.annotations?.["org.opencontainers.image.ref.name"] === tag);
  if (!entry) throw new Error(`oci-image fixture: tag ${tag} not in ${layoutDir}/index.json`);
  return entry.digest;
}

async function setTag(layoutDir: string, tag: string, descriptor: LayoutIndex["manifests"][number]): Promise<void> {
  const index = await readIndex(layoutDir);
  index.manifests = index.manifests.filter((m) => m.annotations?.["org.opencontainers.image.ref.name"] !== tag);
  index.manifests.push({ ...descriptor, annotations: { ...(descriptor.annotations ?? {}), "org.opencontainers.image.ref.name": tag } });
  await writeFile(join(layoutDir, "index.json"), JSON.stringify(index));
}

/**
 * Append a layer made of exactly `entries` (or a ready tar buffer) to the image, compressed as asked.
 * Edits the layout's JSON directly (manifest, config diff_ids and history, index.json), which is how
 * we get zstd and uncompressed layers that umoci 0.4 can't write.
 */
export async function addTarLayer(
  image: OciImage,
  layer: readonly TarEntry[] | Buffer,
  options: { compression?: "gzip" | "zstd" | "none" } = {},
): Promise<{ digest: string; diffId: string; mediaType: string; size: number }> {
  const compression = options.compression ?? "gzip";
  const tar = Buffer.isBuffer(layer) ? layer : makeTar(layer);
  const blob = compression === "gzip" ? gzipSync(tar) : compression === "zstd" ? zstdCompressSync(tar) : tar;
  const mediaType = `application/vnd.oci.image.layer.v1.tar${compression === "gzip" ? "+gzip" : compression === "zstd" ? "+zstd" : ""}`;
  const digest = await writeBlob(image.layoutDir, blob);
  const diffId = sha256(tar);
  const manifest = (await readBlobJson(image.layoutDir, image.manifestDigest)) as {
    config: { digest: string; size: number; mediaType: string };
    layers: Array<{ mediaType: string; digest: string; size: number }>;
  };
  const config = (await readBlobJson(image.layoutDir, manifest.config.digest)) as {
    rootfs: { diff_ids: string[] };
    history?: Array<Record<string, unknown>>;
  };
  config.rootfs.diff_ids.push(diffId);
  config.history?.push({ created: "2023-11-14T22:13:20Z", created_by: "microagent test fixture: addTarLayer" });
  const configBytes = Buffer.from(JSON.stringify(config));
  manifest.config = { ...manifest.config, digest: await writeBlob(image.layoutDir, configBytes), size: configBytes.length };
  manifest.layers.push({ mediaType, digest, size: blob.length });
  const manifestBytes = Buffer.from(JSON.stringify(manifest));
  const manifestDigest = await writeBlob(image.layoutDir, manifestBytes);
  await setTag(image.layoutDir, image.tag, {
    mediaType: "application/vnd.oci.image.manifest.v1+json",
    digest: manifestDigest,
    size: manifestBytes.length,
  });
  image.manifestDigest = manifestDigest;
  return { digest, diffId, mediaType, size: blob.length };
}

/**
 * A multi-layer image exercising what layer application must get right:
 * layer 1 (busybox + tree): files, a dir to be replaced, hard links, setuid/setgid/sticky, foreign
 *   owners (1234:5678), symlinks (relative and absolute), a FIFO, and device nodes when root;
 * layer 2 (umoci diff): deletes /etc/delete-me and /data/old (whiteouts), changes /etc/motd;
 * layer 3 (hand-written, zstd): an opaque marker on /replaced with one new file, a hard link across layers.
 */
export async function buildFeatureImage(
  options: BuildImageOptions & { /** Layer 3's compression (default zstd; docker archives need gzip). */ lastLayerCompression?: "gzip" | "zstd" | "none" } = {},
): Promise<OciImage> {
  const image = await buildBusyboxImage({
    ...options,
    files: {
      "/etc/motd": "first\n",
      "/etc/delete-me": "gone soon\n",
      "/data/old/a.txt": "old a\n",
      "/data/keep.txt": "keep\n",
      "/replaced/old1": "old1\n",
      "/replaced/sub/old2": "old2\n",
      "/usr/bin/suid": { content: "#!/bin/sh\necho suid\n", mode: 0o4755 },
      "/usr/bin/sgid": { content: "#!/bin/sh\necho sgid\n", mode: 0o2755 },
      ...options.files,
    },
  });
  try {
    await addTreeLayer(image, async (rootfs) => {
      await link(join(rootfs, "data/keep.txt"), join(rootfs, "data/keep-hardlink.txt"));
      await symlink("keep.txt", join(rootfs, "data/rel-link"));
      await symlink("/etc/motd", join(rootfs, "data/abs-link"));
      await mkdir(join(rootfs, "shared"), { recursive: true });
      await chmod(join(rootfs, "shared"), 0o1777);
      await writeFile(join(rootfs, "home-owned"), "owned\n");
      if (isRoot) {
        await chown(join(rootfs, "home-owned"), 1234, 5678);
        await run("mkfifo", [join(rootfs, "data/fifo")], "mkfifo");
        await run("mknod", ["-m", "0666", join(rootfs, "data/null"), "c", "1", "3"], "mknod");
        await run("mknod", ["-m", "0660", join(rootfs, "data/blk"), "b", "7", "0"], "mknod");
      }
    });
    await addTreeLayer(image, async (rootfs) => {
      await rm(join(rootfs, "etc/delete-me"));
      await rm(join(rootfs, "data/old"), { recursive: true });
      await writeFile(join(rootfs, "etc/motd"), "second\n");
    });
    await addTarLayer(
      image,
      [
        { path: "replaced/", type: "dir", mode: 0o750, uid: 1234, gid: 5678 },
        { path: "replaced/.wh..wh..opq", type: "file" },
        { path: "replaced/new", type: "file", content: "new\n", mode: 0o600, uid: 1234, gid: 5678 },
        { path: "data/keep-hardlink2.txt", type: "hardlink", linkname: "data/keep.txt" },
      ],
      { compression: options.lastLayerCompression ?? "zstd" },
    );
    return image;
  } catch (e) {
    await image.cleanup();
    throw e;
  }
}

// --- registries, archives, indexes ----------------------------------------------------------------

function credsArgs(registry: TestRegistry): string[] {
  return registry.username ? ["--dest-creds", `${registry.username}:${registry.password}`] : [];
}

export interface PushedImage {
  /** `127.0.0.1:PORT/name:tag` */
  ref: string;
  /** Manifest digest the registry stores (skopeo may rewrite the manifest; this is what it returns). */
  digest: string;
}

/** Push `image` to the test registry as `nameTag` (`name:tag`) with skopeo. */
export async function pushImage(image: OciImage, registry: TestRegistry, nameTag: string, extra: string[] = []): Promise<PushedImage> {
  const scratch = await mkdtemp(join(tmpdir(), "microagent-push-"));
  try {
    const digestFile = join(scratch, "digest");
    const ref = `${registry.host}/${nameTag}`;
    await run(
      "skopeo",
      ["copy", "-q", "--dest-tls-verify=false", ...credsArgs(registry), "--digestfile", digestFile, ...extra, `oci:${image.layoutDir}:${image.tag}`, `docker://${ref}`],
      "push image",
    );
    return { ref, digest: (await readFile(digestFile, "utf8")).trim() };
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
}

/** Write a `docker save`-style archive of `image` (skopeo docker-archive) tagged `nameTag`. No zstd layers. */
export async function dockerArchive(image: OciImage, outPath: string, nameTag: string): Promise<void> {
  await run("skopeo", ["copy", "-q", `oci:${image.layoutDir}:${image.tag}`, `docker-archive:${outPath}:${nameTag}`], "docker archive");
}

export interface MultiArchImage {
  image: OciImage;
  /** Tag in the layout whose index.json entry is an image index. */
  indexTag: string;
  indexDigest: string;
  perArch: Record<"amd64" | "arm64", { manifestDigest: string; tag: string }>;
}

/**
 * One layout holding an amd64 and an arm64 image (each with `/etc/arch` naming its architecture)
 * and an OCI image index over both under `indexTag` (default "multi").
 */
export async function buildMultiArchImage(options: { indexTag?: string } = {}): Promise<MultiArchImage> {
  const amd = await buildBusyboxImage({ tag: "amd64", architecture: "amd64", files: { "/etc/arch": "amd64\n" } });
  try {
    const arm = await buildBusyboxImage({
      layoutDir: amd.layoutDir,
      tag: "arm64",
      architecture: "arm64",
      files: { "/etc/arch": "arm64\n" },
    });
    await arm.cleanup();
    const index = await readIndex(amd.layoutDir);
    const entry = (tag: string) => {
      const m = index.manifests.find((d) => d.annotations?.["org.opencontainers.image.ref.name"] === tag);
      if (!m) throw new Error(`oci-image fixture: ${tag} missing`);
      return m;
    };
    const descriptor = (tag: "amd64" | "arm64") => ({
      mediaType: entry(tag).mediaType,
      digest: entry(tag).digest,
      size: entry(tag).size,
      platform: { architecture: tag, os: "linux", ...(tag === "arm64" ? { variant: "v8" } : {}) },
    });
    const indexBytes = Buffer.from(
      JSON.stringify({ schemaVersion: 2, mediaType: "application/vnd.oci.image.index.v1+json", manifests: [descriptor("amd64"), descriptor("arm64")] }),
    );
    const indexDigest = await writeBlob(amd.layoutDir, indexBytes);
    const indexTag = options.indexTag ?? "multi";
    await setTag(amd.layoutDir, indexTag, { mediaType: "application/vnd.oci.image.index.v1+json", digest: indexDigest, size: indexBytes.length });
    return {
      image: { ...amd, tag: indexTag, manifestDigest: indexDigest },
      indexTag,
      indexDigest,
      perArch: {
        amd64: { manifestDigest: entry("amd64").digest, tag: "amd64" },
        arm64: { manifestDigest: entry("arm64").digest, tag: "arm64" },
      },
    };
  } catch (e) {
    await amd.cleanup();
    throw e;
  }
}

/**
 * Push a multi-arch image: each platform image with skopeo, then the index itself with a plain
 * registry API PUT. `format: "oci"` (default) keeps the OCI manifests and pushes the layout's own
 * index byte-identical (its digest is `indexDigest`); `format: "docker"` converts each image to Docker
 * schema 2 (`skopeo --format v2s2`) and pushes a Docker manifest list over them. Auth "none" or "basic".
 */
export async function pushMultiArch(
  multi: MultiArchImage,
  registry: TestRegistry,
  nameTag: string,
  options: { format?: "oci" | "docker" } = {},
): Promise<PushedImage & { perArch: Record<"amd64" | "arm64", string> }> {
  const format = options.format ?? "oci";
  const [name, tag] = nameTag.split(":") as [string, string];
  if (registry.auth === "token") throw new Error("oci-image fixture: pushMultiArch supports auth none/basic");
  const perArch = {} as Record<"amd64" | "arm64", string>;
  const sizes = {} as Record<"amd64" | "arm64", number>;
  for (const arch of ["amd64", "arm64"] as const) {
    const image: OciImage = { ...multi.image, tag: multi.perArch[arch].tag, manifestDigest: multi.perArch[arch].manifestDigest };
    const pushed = await pushImage(image, registry, `${name}:${arch}`, format === "docker" ? ["--format", "v2s2"] : ["--preserve-digests"]);
    perArch[arch] = pushed.digest;
    const res = await fetch(`http://${registry.host}/v2/${name}/manifests/${pushed.digest}`, {
      method: "HEAD",
      headers: { accept: "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json", ...authHeader(registry) },
    });
    sizes[arch] = Number(res.headers.get("content-length"));
  }
  let body: Buffer;
  let mediaType: string;
  if (format === "oci") {
    body = await readFile(join(multi.image.layoutDir, "blobs/sha256", multi.indexDigest.slice(7)));
    mediaType = "application/vnd.oci.image.index.v1+json";
  } else {
    mediaType = "application/vnd.docker.distribution.manifest.list.v2+json";
    body = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType,
        manifests: (["amd64", "arm64"] as const).map((arch) => ({
          mediaType: "application/vnd.docker.distribution.manifest.v2+json",
          digest: perArch[arch],
          size: sizes[arch],
          platform: { architecture: arch, os: "linux", ...(arch === "arm64" ? { variant: "v8" } : {}) },
        })),
      }),
    );
  }
  const res = await fetch(`http://${registry.host}/v2/${name}/manifests/${tag}`, { method: "PUT", headers: { "content-type": mediaType, ...authHeader(registry) }, body });
  if (res.status !== 201) throw new Error(`push index: HTTP ${res.status} ${await res.text()}`);
  return { ref: `${registry.host}/${nameTag}`, digest: sha256(body), perArch };
}

function authHeader(registry: TestRegistry): Record<string, string> {
  return registry.auth === "basic" ? { authorization: `Basic ${Buffer.from(`${registry.username}:${registry.password}`).toString("base64")}` } : {};
}
