/**
 * The rootfs builder's public face: image layers -> ext4, and the base cache keyed by manifest
 * digest that `create`/`run` use (`ensureBaseRootfs`).
 *
 * Cache layout: `<state-dir>/build/base/<hex>.ext4` plus `<hex>.json` (the record). The image is
 * published first and the record last, both by atomic rename, so a record always names a complete
 * image; a hit needs both and a matching size. Builders of the same digest serialize on a lock file
 * (`<hex>.lock`, the shared lock of src/util/lock.ts: a dead holder's lock is taken over); the loser of the race finds
 * the winner's record and returns it as a hit.
 */
import { createHash, randomBytes } from "node:crypto";
import { chmodSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { rm } from "node:fs/promises";
import { homedir } from "node:os";
import { join, resolve } from "node:path";
import { z } from "zod";
import { openLayerStream } from "../image/layer.ts";
import type { LocalImage, LocalLayer } from "../image/types.ts";
import { packageVersion } from "../version.ts";
import { CommonErrors } from "../contract/errors.ts";
import { RootfsErrors } from "./errors.ts";
import { copySparse } from "./copy.ts";
import { makeExt4 } from "./mkfs.ts";
import { Stager } from "./stage.ts";
import { resolveE2fsTools, type E2fsTools } from "./tools.ts";
import { sha256File } from "../util/hash.ts";
import { acquireLockUnlessDone, type LockErrors } from "../util/lock.ts";
import { pidExists } from "../util/process.ts";

/**
 * Bumped whenever the builder's output for the same input changes: older cache entries are rebuilt.
 * Workspaces use the cached file as the read-only backing of their copy-on-write disks, so a bump
 * must also change the cache file name (never rewrite a published base in place with other bytes).
 */
export const ROOTFS_FORMAT = 1;

export interface RootfsBuildOptions {
  /** State directory (default `~/.microagent`). */
  stateDir?: string;
  /** Filesystem size in MiB; default: content plus headroom. */
  sizeMib?: number;
  /** mke2fs to use (default: found on PATH or in the usual sbin dirs). */
  mke2fs?: string;
  /** debugfs to use (default: next to mke2fs, else PATH). */
  debugfs?: string;
  /** Bound on each e2fsprogs run, in ms (default 10 min). */
  toolTimeoutMs?: number;
  /** How long to wait for another process building the same base, in ms (default 30 min). */
  lockTimeoutMs?: number;
  /**
   * Bound on the uncompressed bytes of all layers of one image (default 16 GiB, or
   * MICROAGENT_MAX_UNCOMPRESSED_GIB): staging writes them all to disk before mke2fs runs.
   */
  maxUncompressedBytes?: number;
  /**
   * Bound on how much one compressed layer may expand (uncompressed / compressed bytes, default 200,
   * or MICROAGENT_MAX_EXPANSION_RATIO), enforced past a 64 MiB floor. Stops decompression bombs
   * (a few MB of gzip holding tens of GB of zeros) long before the total bound would.
   */
  maxExpansionRatio?: number;
  /** Called with short progress messages ("applying layer 2/5"). */
  onProgress?: (message: string) => void;
  /** Aborts the build (CommonErrors INTERRUPTED); nothing is published. */
  signal?: AbortSignal;
}

/**
 * 16 GiB: above the largest images in common use (CUDA/ML images are 5-15 GB uncompressed), so it
 * never gets in the way of a real image, yet it stops a bomb before it fills a typical disk; the
 * filesystem built from it is half as large again.
 */
export const DEFAULT_MAX_UNCOMPRESSED_BYTES = 16 * 1024 ** 3;
/** Real layers expand 2-10x (text and binaries); 200x is only reached by runs of zeros. */
export const DEFAULT_MAX_EXPANSION_RATIO = 200;
/** Below this many uncompressed bytes a layer's ratio is not checked (a small file of zeros is fine). */
export const EXPANSION_FLOOR_BYTES = 64 * 1024 * 1024;

export interface DecompressionLimits {
  maxUncompressedBytes: number;
  maxExpansionRatio: number;
}

function positiveNumber(value: unknown, what: string): number | undefined {
  if (value === undefined || value === "") return undefined;
  const n = typeof value === "number" ? value : Number(value);
  if (!Number.isFinite(n) || n <= 0) throw CommonErrors.INVALID_ARGUMENT({ message: `${what} must be a positive number, got ${JSON.stringify(value)}` });
  return n;
}

/** The decompression bounds: explicit options, else the environment, else the defaults. */
export function resolveDecompressionLimits(opts: Pick<RootfsBuildOptions, "maxUncompressedBytes" | "maxExpansionRatio">, env: NodeJS.ProcessEnv = process.env): DecompressionLimits {
  const envGib = positiveNumber(env.MICROAGENT_MAX_UNCOMPRESSED_GIB, "MICROAGENT_MAX_UNCOMPRESSED_GIB");
  return {
    maxUncompressedBytes:
      positiveNumber(opts.maxUncompressedBytes, "maxUncompressedBytes") ?? (envGib !== undefined ? Math.floor(envGib * 1024 ** 3) : DEFAULT_MAX_UNCOMPRESSED_BYTES),
    maxExpansionRatio:
      positiveNumber(opts.maxExpansionRatio, "maxExpansionRatio") ??
      positiveNumber(env.MICROAGENT_MAX_EXPANSION_RATIO, "MICROAGENT_MAX_EXPANSION_RATIO") ??
      DEFAULT_MAX_EXPANSION_RATIO,
  };
}

export interface ResolvedRootfsBuildOptions {
  stateDir: string;
  sizeMib: number | undefined;
  /** Explicit tool paths; resolved (and checked) only when a build is needed, so a cache hit needs no e2fsprogs. */
  mke2fs: string | undefined;
  debugfs: string | undefined;
  toolTimeoutMs: number;
  lockTimeoutMs: number;
  onProgress: (message: string) => void;
  signal: AbortSignal | undefined;
  limits: DecompressionLimits;
}

export function resolveRootfsBuildOptions(opts: RootfsBuildOptions = {}): ResolvedRootfsBuildOptions {
  if (opts.sizeMib !== undefined && (!Number.isInteger(opts.sizeMib) || opts.sizeMib <= 0))
    throw CommonErrors.INVALID_ARGUMENT({ message: `sizeMib must be a positive whole number of MiB, got ${opts.sizeMib}` });
  return {
    // Absolute, so the returned base path stays valid whatever the caller's cwd later is.
    stateDir: resolve(opts.stateDir ?? join(homedir(), ".microagent")),
    sizeMib: opts.sizeMib,
    mke2fs: opts.mke2fs,
    debugfs: opts.debugfs,
    toolTimeoutMs: opts.toolTimeoutMs ?? 10 * 60_000,
    lockTimeoutMs: opts.lockTimeoutMs ?? 30 * 60_000,
    onProgress: opts.onProgress ?? (() => {}),
    signal: opts.signal,
    limits: resolveDecompressionLimits(opts),
  };
}

/** A cached base root filesystem. */
export interface BaseRootfs {
  /** The ext4 image (treat as read-only: workspaces put a copy-on-write overlay on it). */
  path: string;
  /** sha256 (hex) of the image file. */
  sha256: string;
  sizeMib: number;
  /** True when the image came from the cache (no extraction happened). */
  cacheHit: boolean;
  manifestDigest: string;
  /** ISO time the image was built. */
  builtAt: string;
}

const RecordSchema = z.object({
  format: z.number().int(),
  manifestDigest: z.string(),
  sizeMib: z.number().int().positive(),
  sizeBytes: z.number().int().nonnegative(),
  sha256: z.string().regex(/^[a-f0-9]{64}$/),
  builtAt: z.string(),
  builderVersion: z.string(),
  layers: z.array(z.string()),
});
type CacheRecord = z.infer<typeof RecordSchema>;

/** A layer to apply: a label for errors (its digest) and a way to open its uncompressed tar bytes. */
export interface LayerSource {
  label: string;
  open: () => AsyncIterable<Uint8Array>;
  /** Expected sha256 of the uncompressed bytes (`sha256:<hex>`, the image's diff_id), checked when given. */
  diffId?: string;
  /** Bytes of the compressed blob (for the expansion-ratio bound); absent for uncompressed layers. */
  compressedBytes?: number;
}

export interface BuildExt4Options {
  layers: LayerSource[];
  /** Image file to create; written in place (callers publish by rename). */
  out: string;
  /** Reproducibility seed: same seed + same layers -> same bytes. */
  seed: string;
  /** Scratch directory (created, then removed). */
  workDir: string;
  sizeMib?: number;
  tools: E2fsTools;
  toolTimeoutMs: number;
  onProgress?: (message: string) => void;
  signal?: AbortSignal;
  /** Delete the staging tree after a successful build without waiting for it (default false). */
  removeWorkDirInBackground?: boolean;
  /** Decompression bounds (default: resolveDecompressionLimits({})). */
  limits?: DecompressionLimits;
}

export interface BuildExt4Result {
  sizeMib: number;
  entries: number;
  contentBytes: number;
  replayCommands: number;
  /** Milliseconds spent applying layers / making the filesystem. */
  stageMs: number;
  mkfsMs: number;
}

/**
 * The builder without the cache: apply `layers` into a fresh staging tree under `workDir`, make
 * the ext4 at `out`. Exported for tests and the bench.
 */
export async function buildExt4FromLayers(opts: BuildExt4Options): Promise<BuildExt4Result> {
  mkdirSync(opts.workDir, { recursive: true, mode: 0o700 });
  const stageRoot = join(opts.workDir, "stage");
  let result: BuildExt4Result;
  try {
    const t0 = performance.now();
    const stager = new Stager(stageRoot, undefined, opts.signal);
    const budget = { limits: opts.limits ?? resolveDecompressionLimits({}), total: 0 };
    for (const [i, layer] of opts.layers.entries()) {
      checkAborted(opts.signal);
      opts.onProgress?.(`applying layer ${i + 1}/${opts.layers.length} (${layer.label})`);
      await applyVerified(stager, layer, budget);
    }
    const tree = stager.finish();
    const t1 = performance.now();
    opts.onProgress?.(`making ext4 (${tree.entries.length} entries)`);
    const made = await makeExt4({
      tree,
      out: opts.out,
      sizeMib: opts.sizeMib,
      seed: opts.seed,
      tools: opts.tools,
      workDir: opts.workDir,
      timeoutMs: opts.toolTimeoutMs,
      signal: opts.signal,
    });
    const t2 = performance.now();
    result = {
      sizeMib: made.sizeMib,
      entries: tree.entries.length,
      contentBytes: tree.contentBytes,
      replayCommands: made.replayCommands,
      stageMs: t1 - t0,
      mkfsMs: t2 - t1,
    };
  } catch (e) {
    rmSync(opts.workDir, { recursive: true, force: true });
    throw e;
  }
  // Success: the staging tree is no longer needed, and deleting thousands of files takes a while.
  // That happens in the background (a process that exits first leaves it to sweepStale).
  if (opts.removeWorkDirInBackground) void rm(opts.workDir, { recursive: true, force: true }).catch(() => {});
  else rmSync(opts.workDir, { recursive: true, force: true });
  return result;
}

/**
 * Apply one layer, hashing the uncompressed bytes on the way (all of them, past the tar end) and
 * counting them against the decompression bounds, so a bomb stops at the bound, not at a full disk.
 */
async function applyVerified(stager: Stager, layer: LayerSource, budget: { limits: DecompressionLimits; total: number }): Promise<void> {
  const hash = layer.diffId ? createHash("sha256") : undefined;
  const iterator = layer.open()[Symbol.asyncIterator]();
  const { maxUncompressedBytes, maxExpansionRatio } = budget.limits;
  const layerMax =
    layer.compressedBytes === undefined ? Infinity : Math.max(EXPANSION_FLOOR_BYTES, Math.ceil(layer.compressedBytes * maxExpansionRatio));
  let layerBytes = 0;
  const count = (n: number) => {
    layerBytes += n;
    budget.total += n;
    if (layerBytes > layerMax)
      throw RootfsErrors.ROOTFS_LAYER_TOO_LARGE({
        message: `layer ${layer.label}: ${layer.compressedBytes} compressed bytes expand to more than ${layerMax} (over ${maxExpansionRatio}x): refusing it as a decompression bomb`,
        details: { layer: layer.label, compressedBytes: layer.compressedBytes, limitBytes: layerMax, maxExpansionRatio },
      });
    if (budget.total > maxUncompressedBytes)
      throw RootfsErrors.ROOTFS_LAYER_TOO_LARGE({
        message: `the image's layers hold more than ${formatBytes(maxUncompressedBytes)} uncompressed (the limit; reached in layer ${layer.label})`,
        details: { layer: layer.label, limitBytes: maxUncompressedBytes },
      });
  };
  const hashed: AsyncIterable<Uint8Array> = {
    [Symbol.asyncIterator]: () => ({
      next: async () => {
        const r = await iterator.next();
        if (!r.done) {
          count(r.value.length);
          hash?.update(r.value);
        }
        return r;
      },
    }),
  };
  try {
    await stager.applyLayer(hashed, layer.label);
    if (hash && layer.diffId) {
      for (let r = await iterator.next(); !r.done; r = await iterator.next()) {
        count(r.value.length);
        hash.update(r.value);
      }
      const actual = `sha256:${hash.digest("hex")}`;
      if (actual !== layer.diffId)
        throw RootfsErrors.ROOTFS_LAYER_INVALID({
          message: `layer ${layer.label}: its uncompressed content has digest ${actual}, but the image config says ${layer.diffId}`,
          details: { layer: layer.label, expected: layer.diffId, actual },
        });
    }
  } finally {
    await iterator.return?.();
  }
}

export function checkAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw CommonErrors.INTERRUPTED({ message: "the rootfs build was cancelled", cause: signal.reason });
}

function layerSources(image: LocalImage): LayerSource[] {
  const diffIds = image.diffIds ?? [];
  return image.layers.map((layer: LocalLayer, i: number) => ({
    label: layer.digest,
    open: () => openLayerStream(layer),
    diffId: diffIds.length === image.layers.length ? diffIds[i] : undefined,
    ...(layer.compression === "none" ? {} : { compressedBytes: layer.size }),
  }));
}

function formatBytes(n: number): string {
  const gib = n / 1024 ** 3;
  if (gib >= 1) return `${Number.isInteger(gib) ? gib : gib.toFixed(2)} GiB`;
  const mib = n / 1024 ** 2;
  return mib >= 1 ? `${Number.isInteger(mib) ? mib : mib.toFixed(2)} MiB` : `${n} bytes`;
}

function hexOf(digest: string): string {
  const m = /^sha256:([a-f0-9]{64})$/.exec(digest);
  if (!m) throw RootfsErrors.ROOTFS_LAYER_INVALID({ message: `manifest digest ${JSON.stringify(digest)} is not sha256:<64 hex>` });
  return m[1] as string;
}

export function baseCacheDir(stateDir: string): string {
  return join(stateDir, "build", "base");
}

/** Paths of one cache entry. An explicit size is part of the key (`<hex>-<N>m`). */
export function baseCachePaths(stateDir: string, manifestDigest: string, sizeMib?: number) {
  const dir = baseCacheDir(stateDir);
  const name = sizeMib === undefined ? hexOf(manifestDigest) : `${hexOf(manifestDigest)}-${sizeMib}m`;
  return { dir, image: join(dir, `${name}.ext4`), record: join(dir, `${name}.json`), lock: join(dir, `${name}.lock`), name };
}

function readRecord(recordPath: string, imagePath: string, manifestDigest: string): CacheRecord | undefined {
  let raw: string;
  try {
    raw = readFileSync(recordPath, "utf8");
  } catch {
    return undefined;
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw);
  } catch {
    return undefined;
  }
  const rec = RecordSchema.safeParse(parsed);
  if (!rec.success || rec.data.format !== ROOTFS_FORMAT || rec.data.manifestDigest !== manifestDigest) return undefined;
  try {
    if (statSync(imagePath).size !== rec.data.sizeBytes) return undefined;
  } catch {
    return undefined;
  }
  return rec.data;
}

function toBase(path: string, rec: CacheRecord, cacheHit: boolean): BaseRootfs {
  return { path, sha256: rec.sha256, sizeMib: rec.sizeMib, cacheHit, manifestDigest: rec.manifestDigest, builtAt: rec.builtAt };
}

/**
 * The base root filesystem for an image: from the cache when this manifest digest was built before
 * (no layer is read), else built, cached and returned. Safe to call concurrently from several
 * processes.
 */
export async function ensureBaseRootfs(image: LocalImage, opts: RootfsBuildOptions = {}): Promise<BaseRootfs> {
  const resolved = resolveRootfsBuildOptions(opts);
  return ensureBaseRootfsResolved(image, resolved);
}

export async function ensureBaseRootfsResolved(image: LocalImage, opts: ResolvedRootfsBuildOptions): Promise<BaseRootfs> {
  const paths = baseCachePaths(opts.stateDir, image.manifestDigest, opts.sizeMib);
  const hit = readRecord(paths.record, paths.image, image.manifestDigest);
  if (hit) return toBase(paths.image, hit, true);
  const tools = resolveE2fsTools({ mke2fs: opts.mke2fs, debugfs: opts.debugfs });

  for (const dir of [join(opts.stateDir), join(opts.stateDir, "build"), paths.dir, join(opts.stateDir, "build", "tmp")]) {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
  }
  const release = await acquireBuildLock(paths.lock, opts.lockTimeoutMs, () => readRecord(paths.record, paths.image, image.manifestDigest) !== undefined, opts.signal);
  try {
    const again = readRecord(paths.record, paths.image, image.manifestDigest);
    if (again) return toBase(paths.image, again, true);

    sweepStale(paths.dir, join(opts.stateDir, "build", "tmp"));
    const token = `${process.pid}-${randomBytes(4).toString("hex")}`;
    const tmpImage = join(paths.dir, `.${paths.name}.ext4.tmp-${token}`);
    const workDir = join(opts.stateDir, "build", "tmp", `${paths.name}-${token}`);
    try {
      const built = await buildExt4FromLayers({
        layers: layerSources(image),
        out: tmpImage,
        seed: image.manifestDigest,
        workDir,
        sizeMib: opts.sizeMib,
        tools,
        toolTimeoutMs: opts.toolTimeoutMs,
        onProgress: opts.onProgress,
        signal: opts.signal,
        removeWorkDirInBackground: true,
        limits: opts.limits,
      });
      chmodSync(tmpImage, 0o600);
      const sha256 = await sha256File(tmpImage);
      const rec: CacheRecord = {
        format: ROOTFS_FORMAT,
        manifestDigest: image.manifestDigest,
        sizeMib: built.sizeMib,
        sizeBytes: statSync(tmpImage).size,
        sha256,
        builtAt: new Date().toISOString(),
        builderVersion: packageVersion(),
        layers: image.layers.map((l) => l.digest),
      };
      renameSync(tmpImage, paths.image);
      writeAtomic(paths.record, `${JSON.stringify(rec, null, 2)}\n`);
      return toBase(paths.image, rec, false);
    } finally {
      rmSync(tmpImage, { force: true });
    }
  } finally {
    await release();
  }
}

export interface BuildRootfsOptions extends RootfsBuildOptions {
  image: LocalImage;
  /** Where to write the ext4 image (replaced atomically). */
  out: string;
}

export interface BuildRootfsResult extends BaseRootfs {
  /** The written file (`out`); `path` stays the cached base. */
  out: string;
}

/**
 * `rootfs build`: ensure the cached base, then copy it to `out` (a reflink where the filesystem
 * supports it, else a copy that keeps the image's holes), through a temp file and rename.
 */
export async function buildRootfs(opts: BuildRootfsOptions): Promise<BuildRootfsResult> {
  const base = await ensureBaseRootfs(opts.image, opts);
  const tmp = `${opts.out}.tmp-${process.pid}-${randomBytes(4).toString("hex")}`;
  try {
    await copySparse(base.path, tmp);
    chmodSync(tmp, 0o644);
    renameSync(tmp, opts.out);
  } catch (e) {
    rmSync(tmp, { force: true });
    throw e;
  }
  return { ...base, out: opts.out };
}

function writeAtomic(path: string, text: string): void {
  const tmp = `${path}.tmp-${process.pid}-${randomBytes(4).toString("hex")}`;
  writeFileSync(tmp, text, { mode: 0o600 });
  renameSync(tmp, path);
}

/**
 * Remove what killed builders left behind: temp images (`.<name>.ext4.tmp-<pid>-<hex>`) and staging
 * trees (`<name>-<pid>-<hex>`, also those a finished build was deleting in the background). Only
 * leftovers of dead pids are touched, so concurrent builders of other bases are safe.
 */
function sweepStale(imageDir: string, tmpDir: string): void {
  const sweep = (dir: string, pattern: RegExp) => {
    let names: string[];
    try {
      names = readdirSync(dir);
    } catch {
      return;
    }
    for (const name of names) {
      const pid = Number(pattern.exec(name)?.[1]);
      if (Number.isInteger(pid) && pid > 0 && !pidExists(pid)) rmSync(join(dir, name), { recursive: true, force: true });
    }
  };
  sweep(imageDir, /^\..*\.ext4\.tmp-(\d+)-[0-9a-f]{8}$/);
  sweep(tmpDir, /^[0-9a-f]{64}(?:-\d+m)?-(\d+)-[0-9a-f]{8}$/);
}

const cacheLockErrors: LockErrors = {
  busy: ({ path, holder, timeoutMs }) => cacheBusy(path, holder.pid, timeoutMs),
  busyHere: ({ path, timeoutMs }) => cacheBusy(path, process.pid, timeoutMs),
  heldBySelf: ({ path, timeoutMs }) => cacheBusy(path, process.pid, timeoutMs),
};

function cacheBusy(lockPath: string, pid: number, timeoutMs: number) {
  return RootfsErrors.ROOTFS_CACHE_BUSY({
    message: `another process (pid ${pid}) has been building ${lockPath.replace(/\.lock$/, ".ext4")} for longer than ${Math.round(timeoutMs / 1000)} s`,
    details: { lock: lockPath, pid },
  });
}

/**
 * Take the build lock of one cache entry (the shared lock of src/util/lock.ts: a dead holder's lock
 * is taken over). While another live process holds it, wait until it is released, `done()` says the
 * work is there, or the timeout passes. Returns the release function (a no-op when `done()` made the
 * lock unnecessary).
 */
async function acquireBuildLock(lockPath: string, timeoutMs: number, done: () => boolean, signal?: AbortSignal): Promise<() => Promise<void>> {
  checkAborted(signal);
  let handle;
  try {
    handle = await acquireLockUnlessDone(lockPath, done, { purpose: "rootfs build", timeoutMs, pollMs: 150, ...(signal ? { signal } : {}) }, cacheLockErrors);
  } catch (e) {
    checkAborted(signal);
    throw e;
  }
  return handle ? () => handle.release() : async () => {};
}
