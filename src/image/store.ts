/**
 * The local image store under `<state-dir>/images/`:
 *   blobs/sha256/<hex>   content-addressed blobs (manifests, configs, layers as pulled), 0600
 *   tmp/                 in-flight downloads; renamed into blobs/ only after verification
 *   index.json           the image records (zod), rewritten atomically under index.lock
 */
import { randomBytes } from "node:crypto";
import { createReadStream } from "node:fs";
import { lstat, open, readFile, readdir, rename, rm, stat } from "node:fs/promises";
import { homedir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { z } from "zod";
import { CommonErrors } from "../contract/errors.ts";
import { ensurePrivateDir, isErrno, writeFileAtomic } from "../util/fs.ts";
import { readJsonFile } from "../util/json-file.ts";
import { acquireLock, type LockErrors } from "../util/lock.ts";
import { pidExists } from "../util/process.ts";
import { ImageErrors } from "./errors.ts";
import { DigestSchema } from "./types.ts";
import { DigestVerifier, type ExpectedBlob } from "./verify.ts";

const indexLockErrors: LockErrors = {
  busy: ({ holder, timeoutMs }) =>
    ImageErrors.IMAGE_IN_USE_CONFLICT({
      message: `image index is locked by another process: pid ${holder.pid} (${holder.purpose}, since ${holder.acquiredAt}); gave up after ${timeoutMs} ms`,
    }),
  busyHere: ({ path, purpose, timeoutMs }) =>
    ImageErrors.IMAGE_IN_USE_CONFLICT({
      message: `image index lock ${path} is held by another operation of this process (${purpose}); gave up after ${timeoutMs} ms`,
    }),
  heldBySelf: ({ path, holder }) =>
    CommonErrors.INTERNAL({ message: `lock ${path} is already held by this process (${holder.purpose}); pass the held lock instead of acquiring it again` }),
};

export function defaultStateDir(): string {
  return process.env.MICROAGENT_STATE_DIR || join(homedir(), ".microagent");
}

export const ImageRecordSchema = z.object({
  /** Normalized reference the image is known by (`docker.io/library/alpine:latest`). */
  ref: z.string(),
  /** `registry/repo@sha256:<manifest digest>` */
  resolvedRef: z.string(),
  manifestDigest: DigestSchema,
  /** The index / manifest list the manifest was chosen from, when there was one. */
  indexDigest: DigestSchema.optional(),
  manifestMediaType: z.string(),
  platform: z.object({ os: z.string(), architecture: z.string(), variant: z.string().optional() }),
  configDigest: DigestSchema,
  layers: z.array(z.object({ digest: DigestSchema, mediaType: z.string(), size: z.number().int().nonnegative() })),
  /** Config + layers, stored (compressed) bytes. */
  sizeBytes: z.number().int().nonnegative(),
  source: z.enum(["registry", "oci-layout", "docker-archive"]),
  createdAt: z.string(),
  lastUsedAt: z.string(),
});
export type ImageRecord = z.infer<typeof ImageRecordSchema>;

export const ImageIndexFileSchema = z.object({
  version: z.literal(1),
  images: z.array(ImageRecordSchema),
});
export type ImageIndexFile = z.infer<typeof ImageIndexFileSchema>;

/** Every blob a record needs (manifest, config, layers, and the index it came from). */
export function recordBlobs(r: ImageRecord): string[] {
  return [r.manifestDigest, r.configDigest, ...r.layers.map((l) => l.digest), ...(r.indexDigest ? [r.indexDigest] : [])];
}

export class ImageStore {
  readonly root: string;
  readonly blobsDir: string;
  readonly tmpDir: string;
  readonly indexPath: string;
  readonly lockPath: string;

  constructor(stateDir: string = defaultStateDir()) {
    this.root = join(stateDir, "images");
    this.blobsDir = join(this.root, "blobs", "sha256");
    this.tmpDir = join(this.root, "tmp");
    this.indexPath = join(this.root, "index.json");
    this.lockPath = join(this.root, "index.lock");
  }

  async init(): Promise<void> {
    await ensurePrivateDir(this.root);
    await ensurePrivateDir(join(this.root, "blobs"));
    await ensurePrivateDir(this.blobsDir);
    await ensurePrivateDir(this.tmpDir);
  }

  blobPath(digest: string): string {
    const parsed = DigestSchema.safeParse(digest);
    if (!parsed.success) throw ImageErrors.IMAGE_MANIFEST_INVALID({ message: `invalid digest '${digest}'` });
    return join(this.blobsDir, digest.slice("sha256:".length));
  }

  async hasBlob(digest: string, size?: number): Promise<boolean> {
    try {
      const st = await stat(this.blobPath(digest));
      return size === undefined || st.size === size;
    } catch (e) {
      if (isErrno(e, "ENOENT")) return false;
      throw e;
    }
  }

  async readBlob(digest: string, maxBytes = 4 * 1024 * 1024): Promise<Buffer> {
    const path = this.blobPath(digest);
    let st;
    try {
      st = await stat(path);
    } catch (e) {
      if (isErrno(e, "ENOENT")) {
        throw ImageErrors.IMAGE_BLOB_MISSING({ message: `blob ${digest} is missing from the image store (${path})`, details: { digest, path } });
      }
      throw e;
    }
    if (st.size > maxBytes) throw ImageErrors.IMAGE_MANIFEST_INVALID({ message: `blob ${digest} is larger than ${maxBytes} bytes` });
    return readFile(path);
  }

  tempPath(): string {
    return join(this.tmpDir, `${process.pid}-${randomBytes(6).toString("hex")}.partial`);
  }

  /** Move a verified temp file into place (idempotent: the same digest is the same content). */
  async commitBlob(tmp: string, digest: string): Promise<string> {
    const path = this.blobPath(digest);
    await rename(tmp, path);
    return path;
  }

  /**
   * Move `path` (a file in tmpDir whose bytes hashed to `actual` as they were written) into the
   * store as `expected`: refused unless the two agree; a blob already stored is kept and `path` left
   * for its owner to delete.
   */
  async adoptFile(path: string, expected: ExpectedBlob, actual: ExpectedBlob): Promise<string> {
    if (actual.size !== expected.size)
      throw ImageErrors.IMAGE_SIZE_MISMATCH({
        message: `blob ${expected.digest} has ${actual.size} bytes, not its declared ${expected.size}`,
        details: { digest: expected.digest, declaredSize: expected.size, receivedBytes: actual.size },
      });
    if (actual.digest !== expected.digest)
      throw ImageErrors.IMAGE_DIGEST_MISMATCH({
        message: `blob content does not match its digest: expected ${expected.digest}, got ${actual.digest}`,
        details: { expected: expected.digest, actual: actual.digest },
      });
    if (await this.hasBlob(expected.digest, expected.size)) return this.blobPath(expected.digest);
    const fh = await open(path, "r");
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
    return this.commitBlob(path, expected.digest);
  }

  /**
   * Store bytes from `source` as `expected.digest`, verified while streaming; the blob appears in
   * the store only if it matched. Returns the blob path.
   */
  async putStream(source: Readable, expected: ExpectedBlob): Promise<string> {
    if (await this.hasBlob(expected.digest, expected.size)) {
      source.destroy();
      return this.blobPath(expected.digest);
    }
    const tmp = this.tempPath();
    const fh = await open(tmp, "wx", 0o600);
    const verifier = new DigestVerifier(expected);
    let committed = false;
    try {
      for await (const chunk of source) {
        verifier.update(chunk as Uint8Array);
        await fh.write(chunk as Uint8Array);
      }
      verifier.finish();
      await fh.sync();
      await fh.close();
      const path = await this.commitBlob(tmp, expected.digest);
      committed = true;
      return path;
    } finally {
      source.destroy();
      if (!committed) {
        await fh.close().catch(() => undefined);
        await rm(tmp, { force: true });
      }
    }
  }

  async putBytes(data: Buffer, expected: ExpectedBlob): Promise<string> {
    return this.putStream(Readable.from([data]), expected);
  }

  async putFile(path: string, expected: ExpectedBlob): Promise<string> {
    return this.putStream(createReadStream(path), expected);
  }

  async listBlobs(): Promise<string[]> {
    try {
      return (await readdir(this.blobsDir)).filter((n) => /^[a-f0-9]{64}$/.test(n)).map((n) => `sha256:${n}`);
    } catch (e) {
      if (isErrno(e, "ENOENT")) return [];
      throw e;
    }
  }

  async removeBlob(digest: string): Promise<void> {
    await rm(this.blobPath(digest), { force: true });
  }

  /**
   * Remove leftovers of interrupted downloads and archive loads: `<pid>-<hex>.partial` files and
   * `load-<pid>-XXXXXX` dirs (recursively). An entry whose owner pid is still alive is never
   * touched, so a concurrent pull or load keeps its files; one without a pid in its name (older
   * versions) goes once it is older than `maxAgeMs`. Returns the names removed.
   */
  async cleanTemp(maxAgeMs = 3600_000): Promise<string[]> {
    let names: string[];
    try {
      names = await readdir(this.tmpDir);
    } catch {
      return [];
    }
    const removed: string[] = [];
    for (const n of names) {
      const p = join(this.tmpDir, n);
      try {
        const pid = Number(/^(?:load-)?(\d+)-/.exec(n)?.[1]);
        const owned = Number.isInteger(pid) && pid > 0;
        if (owned && pidExists(pid)) continue;
        if (!owned && Date.now() - (await lstat(p)).mtimeMs <= maxAgeMs) continue;
        await rm(p, { recursive: true, force: true });
        removed.push(n);
      } catch {
        // raced with its owner: fine
      }
    }
    return removed;
  }

  async readIndex(): Promise<ImageIndexFile> {
    const path = this.indexPath;
    const index = await readJsonFile(path, ImageIndexFileSchema, (p) =>
      ImageErrors.IMAGE_INDEX_CORRUPT({
        message: p.kind === "json" ? `image index ${path} is not valid JSON` : `image index ${path} is invalid: ${p.problem}`,
        cause: p.cause,
        details: { path, ...(p.field ? { field: p.field } : {}) },
      }),
    );
    return index ?? { version: 1, images: [] };
  }


  /** Read-modify-write of the index under its lock; `fn` returns the value to pass back. */
  async updateIndex<T>(fn: (index: ImageIndexFile) => Promise<T> | T): Promise<T> {
    await this.init();
    const lock = await acquireLock(this.lockPath, { purpose: "image index update", timeoutMs: 30_000 }, indexLockErrors);
    try {
      const index = await this.readIndex();
      const result = await fn(index);
      await writeFileAtomic(this.indexPath, `${JSON.stringify(index, null, 2)}\n`);
      return result;
    } finally {
      await lock.release();
    }
  }
}
