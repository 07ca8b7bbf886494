/**
 * `loadImage(path)`: import an image without a registry, from an OCI image layout directory
 * (`oci-layout`, `index.json`, `blobs/sha256/...`) or a `docker save` tar archive (`manifest.json`
 * + config + layer tars; also the OCI layout that newer Docker versions put inside the tar).
 * Every blob is verified against its digest on the way into the store, and a docker archive's
 * layers against the config's diff_ids.
 */
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { mkdtemp, readFile, realpath, rm, stat } from "node:fs/promises";
import { basename, join, resolve, sep } from "node:path";
import * as zlib from "node:zlib";
import { z } from "zod";
import { ImageArchive } from "./archive.ts";
import { ImageErrors } from "./errors.ts";
import { recordImage, storeFor, targetArch, type ImageStoreOptions, type NewImage } from "./images.ts";
import { sniffFileCompression } from "./layer.ts";
import { parseConfig, parseManifest } from "./manifest.ts";
import { selectPlatform } from "./platform.ts";
import { formatImageRef, parseImageRef, refName } from "./ref.ts";
import type { ImageRecord, ImageStore } from "./store.ts";
import { IndexSchema, MEDIA, type Descriptor, type LocalImage } from "./types.ts";
import { DigestVerifier, sha256Digest, type ExpectedBlob } from "./verify.ts";
import { hostArch } from "../contract/backend.ts";
import { isErrno } from "../util/fs.ts";

export interface LoadImageOptions extends ImageStoreOptions {
  /**
   * The reference to record the image under. Also picks the image when the input holds several
   * (matched against the layout's ref names or the archive's RepoTags). Default: the name the
   * input carries, else `localhost/<file name>:latest`.
   */
  ref?: string;
  /** Platform to pick from a multi-platform layout (default: the host's). */
  arch?: string;
}

const MAX_JSON = 4 * 1024 * 1024;
const REF_NAME = "org.opencontainers.image.ref.name";
const CONTAINERD_NAME = "io.containerd.image.name";

export async function loadImage(path: string, options: LoadImageOptions = {}): Promise<LocalImage> {
  const abs = resolve(path);
  let st;
  try {
    st = await stat(abs);
  } catch (e) {
    if (isErrno(e, "ENOENT")) throw ImageErrors.IMAGE_LOAD_INVALID({ message: `nothing to load at ${abs}: no such file or directory`, details: { path: abs } });
    throw e;
  }
  const store = storeFor(options);
  await store.init();
  if (st.isDirectory()) return loadLayout(store, layoutFiles(abs, abs), abs, "oci-layout", options);
  // A tar archive: read once, each file streamed (and hashed) into a temp dir beside the blob store
  // (same filesystem, so a referenced layer moves in by rename; cleaned up after). The pid in the
  // name tells `image prune` whether its owner is still running.
  const dir = await mkdtemp(join(store.tmpDir, `${LOAD_TEMP_PREFIX}${process.pid}-`));
  try {
    const archive = await ImageArchive.read(abs, dir);
    const files: ImageFiles = {
      locate: async (rel) => {
        const f = archive.file(rel);
        return { path: f.path, hashed: { digest: f.digest, size: f.size } };
      },
    };
    if (archive.has("manifest.json")) return await loadDockerArchive(store, files, abs, options);
    if (archive.has("index.json")) return await loadLayout(store, files, abs, "oci-layout", options);
    throw ImageErrors.IMAGE_LOAD_INVALID({ message: `${abs} has neither manifest.json (docker save) nor index.json (OCI layout)`, details: { path: abs } });
  } finally {
    // A failed cleanup must not replace the load's own error; `image prune` sweeps what stays.
    await rm(dir, { recursive: true, force: true, maxRetries: 3 }).catch(() => undefined);
  }
}

/**
 * The files of the image being loaded, by their names inside it: a layout directory's files, or
 * the temp copies of an archive's (which were hashed while they were written).
 */
interface ImageFiles {
  /** The file's path on disk; refuses a name (or link) leading outside the image, and a missing file. */
  locate(rel: string): Promise<{ path: string; hashed?: ExpectedBlob }>;
}

function layoutFiles(root: string, source: string): ImageFiles {
  return { locate: async (rel) => ({ path: await inside(root, rel, source) }) };
}

/**
 * Put a file of the image into the store as `expected`. An archive's temp copy was hashed while it
 * was written: it is checked against `expected` and moved in; a layout's file is copied (and
 * hashed while copying).
 */
async function storeFile(store: ImageStore, file: { path: string; hashed?: ExpectedBlob }, expected: ExpectedBlob): Promise<void> {
  if (file.hashed === undefined) {
    await store.putFile(file.path, expected);
    return;
  }
  await store.adoptFile(file.path, expected, file.hashed);
}

/** Prefix of the temp dirs archive loads unpack into (`load-<pid>-XXXXXX` under images/tmp). */
export const LOAD_TEMP_PREFIX = "load-";

/** Resolve `rel` inside `root`, refusing anything (including symlinks) that leads outside it. */
async function inside(root: string, rel: string, source: string): Promise<string> {
  const realRoot = await realpath(root);
  let real: string;
  try {
    real = await realpath(join(root, rel));
  } catch (e) {
    if (isErrno(e, "ENOENT")) throw ImageErrors.IMAGE_LOAD_INVALID({ message: `${source} refers to ${rel}, which it does not contain`, details: { path: rel } });
    throw e;
  }
  if (real !== realRoot && !real.startsWith(realRoot + sep)) {
    throw ImageErrors.IMAGE_LOAD_INVALID({ message: `${source}: ${rel} points outside the image (${real})`, details: { path: rel } });
  }
  return real;
}

async function readSmallJson(path: string, what: string): Promise<unknown> {
  const st = await stat(path);
  if (st.size > MAX_JSON) throw ImageErrors.IMAGE_LOAD_INVALID({ message: `${what} is larger than ${MAX_JSON} bytes` });
  try {
    return JSON.parse(await readFile(path, "utf8"));
  } catch (e) {
    throw ImageErrors.IMAGE_LOAD_INVALID({ message: `${what} is not valid JSON`, cause: e });
  }
}

/** Read a small blob of a layout and check it against its descriptor. */
async function layoutBlob(files: ImageFiles, d: Pick<Descriptor, "digest" | "size">, source: string): Promise<Buffer> {
  if (d.size > MAX_JSON) throw ImageErrors.IMAGE_LOAD_INVALID({ message: `${source}: ${d.digest} declares ${d.size} bytes; refusing more than ${MAX_JSON}` });
  const { path } = await files.locate(blobName(d.digest));
  const data = await readFile(path);
  const v = new DigestVerifier(d);
  v.update(data.subarray(0, Math.min(data.length, d.size + 1)));
  v.finish();
  return data;
}

function nameFrom(annotations: Record<string, string> | undefined, fallbackName: string): string {
  const full = annotations?.[CONTAINERD_NAME];
  if (full) return formatImageRef(parseImageRef(full));
  const tag = annotations?.[REF_NAME];
  if (tag && /[/:]/.test(tag)) return formatImageRef(parseImageRef(tag));
  return formatImageRef(parseImageRef(`localhost/${fallbackName}:${tag && /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/.test(tag) ? tag : "latest"}`));
}

function fallbackName(source: string): string {
  const base = basename(source).replace(/\.(tar|tar\.gz|tgz|oci)$/i, "").toLowerCase().replace(/[^a-z0-9._-]+/g, "-").replace(/^[^a-z0-9]+|[^a-z0-9]+$/g, "");
  return base || "image";
}

/** Where a layout keeps the blob `digest`. */
function blobName(digest: string): string {
  return join("blobs", "sha256", digest.slice(7));
}

async function loadLayout(store: ImageStore, files: ImageFiles, source: string, kind: ImageRecord["source"], options: LoadImageOptions): Promise<LocalImage> {
  const parsed = IndexSchema.safeParse(await readSmallJson((await files.locate("index.json")).path, `${source}/index.json`));
  if (!parsed.success) throw ImageErrors.IMAGE_LOAD_INVALID({ message: `${source}/index.json is not an OCI image index: ${parsed.error.issues[0]?.message}` });
  const entries = parsed.data.manifests;
  if (entries.length === 0) throw ImageErrors.IMAGE_LOAD_INVALID({ message: `${source} holds no images (index.json lists none)` });
  let entry = entries[0] as Descriptor;
  if (entries.length > 1) {
    const want = options.ref;
    const names = entries.map((e) => e.annotations?.[CONTAINERD_NAME] ?? e.annotations?.[REF_NAME] ?? e.digest);
    const match = want
      ? entries.find((e) => {
          const wantRef = formatImageRef(parseImageRef(want));
          const n = e.annotations?.[CONTAINERD_NAME];
          const t = e.annotations?.[REF_NAME];
          return (n && formatImageRef(parseImageRef(n)) === wantRef) || t === want || (t && parseImageRef(want).tag === t) || e.digest === want;
        })
      : undefined;
    if (!match) {
      throw ImageErrors.IMAGE_LOAD_AMBIGUOUS({
        message: `${source} holds ${entries.length} images (${names.join(", ")}); ${want ? `none matches '${want}'` : "say which with --ref"}`,
        details: { images: names },
      });
    }
    entry = match;
  }
  const topAnnotations = entry.annotations;
  const arch = options.arch === undefined ? hostArch() : targetArch(options.arch);
  let body = await layoutBlob(files, entry, source);
  let doc = parseManifest(body, entry.mediaType, source);
  let indexDigest: string | undefined;
  if (doc.kind === "index") {
    indexDigest = entry.digest;
    const indexBody = body;
    const chosen = selectPlatform(doc.index.manifests, { os: "linux", architecture: arch }, source);
    body = await layoutBlob(files, chosen, source);
    doc = parseManifest(body, chosen.mediaType, source);
    if (doc.kind !== "manifest") throw ImageErrors.IMAGE_LOAD_INVALID({ message: `${source}: nested image indexes are not supported` });
    await store.putBytes(indexBody, { digest: indexDigest, size: indexBody.length });
    entry = chosen;
  }
  const manifest = doc.manifest;
  const configBody = await layoutBlob(files, manifest.config, source);
  const config = parseConfig(configBody, manifest, source);
  for (const layer of manifest.layers) await storeFile(store, await files.locate(blobName(layer.digest)), layer);
  await store.putBytes(body, { digest: entry.digest, size: body.length });
  await store.putBytes(configBody, manifest.config);
  const ref = options.ref ? formatImageRef(parseImageRef(options.ref)) : nameFrom(topAnnotations, fallbackName(source));
  return record(store, ref, {
    manifestDigest: entry.digest,
    indexDigest,
    manifestMediaType: doc.mediaType,
    config,
    configDigest: manifest.config.digest,
    layers: manifest.layers.map((l) => ({ digest: l.digest, mediaType: l.mediaType, size: l.size })),
    source: kind,
  });
}

const DockerManifestSchema = z.array(
  z.object({ Config: z.string(), RepoTags: z.array(z.string()).nullish(), Layers: z.array(z.string()) }).loose(),
);

async function loadDockerArchive(store: ImageStore, files: ImageFiles, source: string, options: LoadImageOptions): Promise<LocalImage> {
  const parsed = DockerManifestSchema.safeParse(await readSmallJson((await files.locate("manifest.json")).path, `${source} manifest.json`));
  if (!parsed.success) throw ImageErrors.IMAGE_LOAD_INVALID({ message: `${source}: manifest.json is not a docker save manifest: ${parsed.error.issues[0]?.message}` });
  const images = parsed.data;
  if (images.length === 0) throw ImageErrors.IMAGE_LOAD_INVALID({ message: `${source} holds no images` });
  let image = images[0] as (typeof images)[number];
  if (images.length > 1) {
    const want = options.ref ? formatImageRef(parseImageRef(options.ref)) : undefined;
    const match = want ? images.find((i) => (i.RepoTags ?? []).some((t) => formatImageRef(parseImageRef(t)) === want)) : undefined;
    if (!match) {
      const names = images.flatMap((i) => i.RepoTags ?? [i.Config]);
      throw ImageErrors.IMAGE_LOAD_AMBIGUOUS({
        message: `${source} holds ${images.length} images (${names.join(", ")}); ${want ? `none is tagged '${want}'` : "say which with --ref"}`,
        details: { images: names },
      });
    }
    image = match;
  }
  // The config: docker names it by its digest (`<hex>.json` or `blobs/sha256/<hex>`); check that claim.
  const configFile = await files.locate(image.Config);
  if ((await stat(configFile.path)).size > MAX_JSON) throw ImageErrors.IMAGE_LOAD_INVALID({ message: `${source}: config ${image.Config} is larger than ${MAX_JSON} bytes` });
  const configBody = await readFile(configFile.path);
  const configDigest = sha256Digest(configBody);
  const named = /(?:^|\/)([a-f0-9]{64})(?:\.json)?$/.exec(image.Config)?.[1];
  if (named && `sha256:${named}` !== configDigest) {
    throw ImageErrors.IMAGE_DIGEST_MISMATCH({ message: `${source}: config ${image.Config} has digest ${configDigest}`, details: { expected: `sha256:${named}`, actual: configDigest } });
  }
  // Hash every layer (as stored and uncompressed) and check the diff_ids before anything is stored.
  const layerDescriptors: Array<{ digest: string; mediaType: string; size: number }> = [];
  const layerFiles: Array<{ path: string; hashed?: ExpectedBlob }> = [];
  const diffIds: string[] = [];
  for (const rel of image.Layers) {
    const file = await files.locate(rel);
    const compression = await sniffFileCompression(file.path);
    // An uncompressed layer's digest is its diff_id: an archive's was computed while unpacking.
    const { digest, diffId, size } =
      compression === "none" && file.hashed ? { digest: file.hashed.digest, diffId: file.hashed.digest, size: file.hashed.size } : await hashLayer(file.path, compression);
    diffIds.push(diffId);
    layerFiles.push(file);
    const mediaType = compression === "gzip" ? "application/vnd.docker.image.rootfs.diff.tar.gzip" : compression === "zstd" ? "application/vnd.oci.image.layer.v1.tar+zstd" : "application/vnd.docker.image.rootfs.diff.tar";
    layerDescriptors.push({ digest, mediaType, size });
  }
  const manifestObj = {
    schemaVersion: 2 as const,
    mediaType: MEDIA.dockerManifest,
    config: { mediaType: MEDIA.dockerConfig, digest: configDigest, size: configBody.length },
    layers: layerDescriptors,
  };
  const config = parseConfig(configBody, manifestObj, source);
  config.rootfs.diff_ids.forEach((want, i) => {
    if (diffIds[i] !== want) {
      throw ImageErrors.IMAGE_DIGEST_MISMATCH({
        message: `${source}: layer ${image.Layers[i]} has content ${diffIds[i]}, but the config expects ${want}`,
        details: { expected: want, actual: diffIds[i], layer: image.Layers[i] },
      });
    }
  });
  for (const [i, d] of layerDescriptors.entries()) await storeFile(store, layerFiles[i] as { path: string; hashed?: ExpectedBlob }, d);
  const manifestBody = Buffer.from(JSON.stringify(manifestObj));
  const manifestDigest = sha256Digest(manifestBody);
  await store.putBytes(configBody, { digest: configDigest, size: configBody.length });
  await store.putBytes(manifestBody, { digest: manifestDigest, size: manifestBody.length });
  const repoTag = image.RepoTags?.[0];
  const ref = options.ref
    ? formatImageRef(parseImageRef(options.ref))
    : repoTag
      ? formatImageRef(parseImageRef(repoTag))
      : formatImageRef(parseImageRef(`localhost/${fallbackName(source)}:latest`));
  return record(store, ref, {
    manifestDigest,
    indexDigest: undefined,
    manifestMediaType: MEDIA.dockerManifest,
    config,
    configDigest,
    layers: layerDescriptors,
    source: "docker-archive",
  });
}

/** sha256 of the file as stored and of its uncompressed content, in one pass. */
async function hashLayer(path: string, compression: "gzip" | "zstd" | "none"): Promise<{ digest: string; diffId: string; size: number }> {
  const outer = createHash("sha256");
  const inner = createHash("sha256");
  let size = 0;
  const file = createReadStream(path);
  if (compression === "none") {
    for await (const chunk of file) {
      outer.update(chunk as Buffer);
      size += (chunk as Buffer).length;
    }
    const d = `sha256:${outer.digest("hex")}`;
    return { digest: d, diffId: d, size };
  }
  const decompress = compression === "gzip" ? zlib.createGunzip() : zlib.createZstdDecompress();
  file.on("data", (chunk) => {
    outer.update(chunk as Buffer);
    size += (chunk as Buffer).length;
  });
  file.pipe(decompress);
  try {
    for await (const chunk of decompress) inner.update(chunk as Buffer);
  } catch (e) {
    throw ImageErrors.IMAGE_LOAD_INVALID({ message: `layer ${path} could not be decompressed (${compression}): ${(e as Error).message}`, cause: e });
  }
  return { digest: `sha256:${outer.digest("hex")}`, diffId: `sha256:${inner.digest("hex")}`, size };
}

/** Record the loaded image (the config was stored first: its size is the blob's). */
async function record(store: ImageStore, ref: string, r: Omit<NewImage, "ref" | "resolvedRef" | "configSize">): Promise<LocalImage> {
  const configSize = (await stat(store.blobPath(r.configDigest))).size;
  return recordImage(store, { ...r, ref, resolvedRef: `${refName(parseImageRef(ref))}@${r.manifestDigest}`, configSize });
}
