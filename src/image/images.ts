/**
 * The local image index as a library: records -> LocalImage, lookup by reference, list, rm, tag,
 * prune. Pulls live in pull.ts, imports in load.ts; both end in `saveRecord`.
 */
import { stat } from "node:fs/promises";
import { hostArch, normalizeArch, type Arch } from "../contract/backend.ts";
import { ImageErrors } from "./errors.ts";
import { compressionOf } from "./layer.ts";
import { parseConfig } from "./manifest.ts";
import { formatImageRef, parseImageRef, refName, type ImageRef } from "./ref.ts";
import { ImageStore, defaultStateDir, recordBlobs, type ImageIndexFile, type ImageRecord } from "./store.ts";
import { ManifestSchema, type LocalImage } from "./types.ts";

export interface ImageStoreOptions {
  /** State directory (default `$MICROAGENT_STATE_DIR` or ~/.microagent). */
  stateDir?: string;
}

export function storeFor(options: ImageStoreOptions = {}): ImageStore {
  return new ImageStore(options.stateDir ?? defaultStateDir());
}

/** The architecture a call targets: explicit, else the host's. */
export function targetArch(arch: string | undefined): Arch {
  if (arch === undefined) return hostArch();
  const a = normalizeArch(arch);
  if (!a) throw ImageErrors.IMAGE_REF_INVALID({ message: `unknown architecture '${arch}'`, remediation: "Use --arch amd64 or --arch arm64." });
  return a;
}

/** Does `record` answer a request for `ref` on `arch`? Tags match by name; digests by manifest or index digest. */
export function recordMatches(record: ImageRecord, ref: ImageRef, arch: Arch | undefined): boolean {
  if (arch !== undefined && (normalizeArch(record.platform.architecture) ?? record.platform.architecture) !== arch) return false;
  if (ref.digest !== undefined) {
    if (!record.resolvedRef.startsWith(`${refName(ref)}@`)) return false;
    return record.manifestDigest === ref.digest || record.indexDigest === ref.digest;
  }
  return record.ref === formatImageRef(ref);
}

export function findRecord(index: ImageIndexFile, ref: ImageRef, arch: Arch | undefined): ImageRecord | undefined {
  return index.images.find((r) => recordMatches(r, ref, arch));
}

/** Build the LocalImage view of a record, reading its config from the store. */
export async function toLocalImage(store: ImageStore, record: ImageRecord): Promise<LocalImage> {
  const manifest = ManifestSchema.parse(JSON.parse((await store.readBlob(record.manifestDigest)).toString("utf8")));
  const config = parseConfig(await store.readBlob(record.configDigest), manifest, record.ref);
  const layers = [];
  for (const l of record.layers) {
    const path = store.blobPath(l.digest);
    if (!(await store.hasBlob(l.digest))) {
      throw ImageErrors.IMAGE_BLOB_MISSING({
        message: `layer ${l.digest} of ${record.ref} is missing from the image store`,
        details: { ref: record.ref, digest: l.digest, path },
      });
    }
    layers.push({ digest: l.digest, mediaType: l.mediaType, size: l.size, path, compression: compressionOf(l.mediaType) ?? "none" });
  }
  return {
    ref: record.ref,
    resolvedRef: record.resolvedRef,
    manifestDigest: record.manifestDigest,
    platform: record.platform,
    config: config.config ?? {},
    configDigest: record.configDigest,
    layers,
    sizeBytes: record.sizeBytes,
    diffIds: config.rootfs.diff_ids,
  };
}

/** What a pull or a load knows once every blob is stored; `recordImage` adds the rest. */
export interface NewImage {
  ref: string;
  resolvedRef: string;
  manifestDigest: string;
  indexDigest?: string | undefined;
  manifestMediaType: string;
  config: ReturnType<typeof parseConfig>;
  configDigest: string;
  configSize: number;
  layers: ImageRecord["layers"];
  source: ImageRecord["source"];
}

/** Record a freshly stored image (platform from its config, size, timestamps) and return it. */
export async function recordImage(store: ImageStore, image: NewImage): Promise<LocalImage> {
  const now = new Date().toISOString();
  const { config } = image;
  const record: ImageRecord = {
    ref: image.ref,
    resolvedRef: image.resolvedRef,
    manifestDigest: image.manifestDigest,
    ...(image.indexDigest !== undefined ? { indexDigest: image.indexDigest } : {}),
    manifestMediaType: image.manifestMediaType,
    platform: { os: config.os, architecture: config.architecture, ...(config.variant ? { variant: config.variant } : {}) },
    configDigest: image.configDigest,
    layers: image.layers,
    sizeBytes: image.configSize + image.layers.reduce((sum, l) => sum + l.size, 0),
    source: image.source,
    createdAt: now,
    lastUsedAt: now,
  };
  await saveRecord(store, record);
  return toLocalImage(store, record);
}

/** Insert or replace the record for (ref, architecture). */
export async function saveRecord(store: ImageStore, record: ImageRecord): Promise<void> {
  await store.updateIndex((index) => {
    index.images = index.images.filter((r) => !(r.ref === record.ref && r.platform.architecture === record.platform.architecture));
    index.images.push(record);
  });
}

export interface ImageSummary {
  ref: string;
  resolvedRef: string;
  manifestDigest: string;
  platform: { os: string; architecture: string; variant?: string };
  sizeBytes: number;
  source: ImageRecord["source"];
  createdAt: string;
  lastUsedAt: string;
  /** False when a blob the image needs is missing (prune drops such records). */
  complete: boolean;
}

export async function listImages(options: ImageStoreOptions = {}): Promise<ImageSummary[]> {
  const store = storeFor(options);
  const index = await store.readIndex();
  const out: ImageSummary[] = [];
  for (const r of index.images) {
    let complete = true;
    for (const d of recordBlobs(r)) if (!(await store.hasBlob(d))) complete = false;
    out.push({
      ref: r.ref,
      resolvedRef: r.resolvedRef,
      manifestDigest: r.manifestDigest,
      platform: r.platform,
      sizeBytes: r.sizeBytes,
      source: r.source,
      createdAt: r.createdAt,
      lastUsedAt: r.lastUsedAt,
      complete,
    });
  }
  return out.sort((a, b) => a.ref.localeCompare(b.ref) || a.platform.architecture.localeCompare(b.platform.architecture));
}

export interface RemoveImageOptions extends ImageStoreOptions {
  /** Only the record for this architecture (default: every architecture of the ref). */
  arch?: string;
}

/** Remove the index records named by `ref` (blobs stay until `pruneImages({delete: true})`). */
export async function removeImage(ref: string, options: RemoveImageOptions = {}): Promise<{ removed: string[] }> {
  const parsed = parseImageRef(ref);
  const arch = options.arch === undefined ? undefined : targetArch(options.arch);
  const store = storeFor(options);
  const removed = await store.updateIndex((index) => {
    const gone = index.images.filter((r) => recordMatches(r, parsed, arch));
    index.images = index.images.filter((r) => !gone.includes(r));
    return gone.map((r) => `${r.ref} (${r.platform.os}/${r.platform.architecture})`);
  });
  if (removed.length === 0) {
    throw ImageErrors.IMAGE_NOT_LOCAL({
      message: `no local image ${formatImageRef(parsed)}`,
      remediation: "Run `microagent image list` to see local images.",
    });
  }
  return { removed };
}

export interface TagImageOptions extends ImageStoreOptions {
  arch?: string;
}

/** Give a local image another reference (a tag or a digest-pinned name in the same store). */
export async function tagImage(source: string, target: string, options: TagImageOptions = {}): Promise<{ ref: string; resolvedRef: string }[]> {
  const src = parseImageRef(source);
  const dst = parseImageRef(target);
  if (dst.digest !== undefined) {
    throw ImageErrors.IMAGE_REF_INVALID({ message: `cannot tag as '${target}': a target names a tag, not a digest` });
  }
  const arch = options.arch === undefined ? undefined : targetArch(options.arch);
  const store = storeFor(options);
  const dstRef = formatImageRef(dst);
  const now = new Date().toISOString();
  const tagged = await store.updateIndex((index) => {
    const sources = index.images.filter((r) => recordMatches(r, src, arch));
    const added: ImageRecord[] = [];
    for (const s of sources) {
      const copy: ImageRecord = { ...s, ref: dstRef, resolvedRef: `${refName(dst)}@${s.manifestDigest}`, createdAt: now, lastUsedAt: now };
      index.images = index.images.filter((r) => !(r.ref === dstRef && r.platform.architecture === s.platform.architecture));
      index.images.push(copy);
      added.push(copy);
    }
    return added;
  });
  if (tagged.length === 0) {
    throw ImageErrors.IMAGE_NOT_LOCAL({ message: `no local image ${formatImageRef(src)} to tag`, remediation: "Run `microagent image list` to see local images." });
  }
  return tagged.map((r) => ({ ref: r.ref, resolvedRef: r.resolvedRef }));
}

export interface PruneImagesOptions extends ImageStoreOptions {
  /** Also delete blobs no remaining image uses (frees disk). */
  delete?: boolean;
}

export interface PruneResult {
  /** Records dropped because a blob they need is missing. */
  droppedRecords: string[];
  /** Blobs deleted (with delete: true). */
  deletedBlobs: string[];
  freedBytes: number;
}

export async function pruneImages(options: PruneImagesOptions = {}): Promise<PruneResult> {
  const store = storeFor(options);
  return store.updateIndex(async (index) => {
    const dropped: string[] = [];
    const keep: ImageRecord[] = [];
    for (const r of index.images) {
      let ok = true;
      for (const d of recordBlobs(r)) if (!(await store.hasBlob(d))) ok = false;
      if (ok) keep.push(r);
      else dropped.push(`${r.ref} (${r.platform.os}/${r.platform.architecture})`);
    }
    index.images = keep;
    const deleted: string[] = [];
    let freed = 0;
    if (options.delete) {
      const used = new Set(keep.flatMap(recordBlobs));
      for (const d of await store.listBlobs()) {
        if (used.has(d)) continue;
        try {
          freed += (await stat(store.blobPath(d))).size;
        } catch {
          // gone already
        }
        await store.removeBlob(d);
        deleted.push(d);
      }
      await store.cleanTemp();
    }
    return { droppedRecords: dropped, deletedBlobs: deleted, freedBytes: freed };
  });
}

/** Mark a record used now (best effort: a busy index lock just skips the update). */
export async function touchRecord(store: ImageStore, record: ImageRecord): Promise<void> {
  try {
    await store.updateIndex((index) => {
      const r = index.images.find((x) => x.ref === record.ref && x.platform.architecture === record.platform.architecture);
      if (r) r.lastUsedAt = new Date().toISOString();
    });
  } catch {
    // last-used is advisory
  }
}
