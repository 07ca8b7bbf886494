/**
 * Snapshots on disk: `<workspace>/snapshots/<tag>/` holds `state` (the VM's memory and device state,
 * as the backend saved it) and `manifest.json` (what the state needs to be loaded again: kernel,
 * initramfs and init hashes, image digest, resources, network identity, the frozen disk layer, sizes).
 * Directories 0700, files 0600.
 *
 * The disk is not in the snapshot directory: when a snapshot is taken, the workspace's current disk
 * file is frozen where it lies (the running VM's QEMU has it open by that name and reopens it by name
 * when it continues) and the VM goes on writing to a new overlay `disk-<id>.qcow2` above it. So a
 * workspace's directory holds a chain of disk layers; the manifest names the top one, each snapshot
 * names the one it froze. A layer is removed only when no chain needs it any more (`collectLayers`):
 * not the workspace's own disk, not a snapshot, not a fork in another workspace layered on it.
 *
 * Atomic: a snapshot is assembled in `snapshots/.tmp-<tag>-<rand>/` and renamed to its tag only when
 * complete, all under the workspace lock. A kill mid-way (of the CLI, the supervisor or QEMU) leaves a
 * `.tmp-*` directory that nothing lists and the next locked operation sweeps.
 */
import { randomBytes } from "node:crypto";
import { mkdir, open, readdir, rename, rm, stat } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { z } from "zod";
import { ArchSchema, BackendNameSchema, DiskFormatSchema } from "../contract/backend.ts";
import { DIR_MODE, isErrno, writeJsonAtomic } from "../util/fs.ts";
import { readJsonFile } from "../util/json-file.ts";
import { sha256FileCached } from "../util/hash.ts";
import { WorkspaceErrors } from "./errors.ts";
import { readManifest, writeManifest, type Manifest } from "./manifest.ts";
import { workspacePaths, workspacesRoot, type WorkspacePaths } from "./paths.ts";

export const SNAPSHOT_MANIFEST_VERSION = 1;

/** The files of a disk's backing chain, top first (the backend's `snapshot.layersOf`). */
export type LayerChain = (path: string) => Promise<string[]>;
/** Tags users type; never starting with '.', which marks temp and trash directories. */
export const SNAPSHOT_TAG_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;
/** Disk layer file names in a workspace directory (the create-time disk and every overlay since). */
const LAYER_NAME = /^disk(-[a-z0-9]+)?\.qcow2$/;

const Sha256Hex = z.string().regex(/^[a-f0-9]{64}$/);

export const SnapshotManifestSchema = z.object({
  version: z.literal(SNAPSHOT_MANIFEST_VERSION),
  tag: z.string(),
  workspace: z.string(),
  createdAt: z.string(),
  backend: BackendNameSchema,
  arch: ArchSchema,
  /** The guest kernel in the saved memory, and the initramfs (with our init) the machine was built with. */
  artifacts: z.object({
    kernel: z.object({ path: z.string(), sha256: Sha256Hex }),
    initramfs: z.object({ path: z.string(), sha256: Sha256Hex }),
    /** The guest init in that initramfs (from the kernel manifest), when recorded there. */
    init: z.object({ sha256: Sha256Hex }).optional(),
  }),
  image: z.object({ ref: z.string(), resolvedRef: z.string(), digest: z.string() }),
  /** The machine the state fits: a restore must build the same one. */
  resources: z.object({ memoryMib: z.number().int().positive(), cpus: z.number().int().positive(), sizeMib: z.number().int().positive() }),
  /** Network identity at capture: the mode (it decides whether the machine has a NIC), the guest's hostname and MAC. */
  network: z.object({ mode: z.string(), hostname: z.string(), mac: z.string().optional() }),
  /** The frozen disk layer (in the workspace directory; read-only from the capture on). */
  disk: z.object({ path: z.string(), format: DiskFormatSchema, virtualSizeBytes: z.number().int().positive() }),
  state: z.object({ file: z.string(), bytes: z.number().int().nonnegative() }),
  /** Whether the guest had applied its boot config when it was captured (a warm-run snapshot has not). */
  guestConfigured: z.boolean(),
  timings: z.object({ pauseMs: z.number(), freezeMs: z.number(), saveMs: z.number(), totalMs: z.number() }),
});
export type SnapshotManifest = z.infer<typeof SnapshotManifestSchema>;

export interface SnapshotInfo {
  tag: string;
  createdAt: string;
  /** The memory + device state file. */
  stateBytes: number;
  /** The frozen disk layer's allocated bytes on the host (only what the guest wrote into it). */
  diskBytes: number;
  dir: string;
  manifest: SnapshotManifest;
}

export function snapshotsDir(paths: Pick<WorkspacePaths, "dir">): string {
  return join(paths.dir, "snapshots");
}

export function snapshotDir(paths: Pick<WorkspacePaths, "dir">, tag: string): string {
  return join(snapshotsDir(paths), validateSnapshotTag(tag));
}

export function validateSnapshotTag(tag: string): string {
  if (!SNAPSHOT_TAG_PATTERN.test(tag)) {
    throw WorkspaceErrors.SNAPSHOT_INVALID_TAG({ message: `invalid snapshot tag '${tag}': it must match ${SNAPSHOT_TAG_PATTERN.source}`, details: { tag } });
  }
  return tag;
}

/** A default tag from the time: `snap-20261201-222110` (seconds; a clash is refused, not overwritten). */
export function defaultSnapshotTag(now = new Date()): string {
  const p = (n: number) => String(n).padStart(2, "0");
  return `snap-${now.getUTCFullYear()}${p(now.getUTCMonth() + 1)}${p(now.getUTCDate())}-${p(now.getUTCHours())}${p(now.getUTCMinutes())}${p(now.getUTCSeconds())}`;
}

/** `SRC:TAG` of `create --from-snapshot`. */
export function parseSnapshotRef(ref: string): { workspace: string; tag: string } {
  const i = ref.indexOf(":");
  if (i <= 0 || i === ref.length - 1) {
    throw WorkspaceErrors.SNAPSHOT_INVALID_TAG({ message: `invalid snapshot reference '${ref}': expected WORKSPACE:TAG`, remediation: "Name the source as WORKSPACE:TAG, e.g. `dev:before-upgrade`.", details: { ref } });
  }
  return { workspace: ref.slice(0, i), tag: validateSnapshotTag(ref.slice(i + 1)) };
}

/** A new, unused disk layer name in the workspace directory. */
export function newLayerPath(paths: Pick<WorkspacePaths, "dir">): string {
  return join(paths.dir, `disk-${randomBytes(5).toString("hex")}.qcow2`);
}

/** A temp directory for a snapshot being assembled (0700); renamed to its tag by `commitSnapshot`. */
export async function beginSnapshot(paths: Pick<WorkspacePaths, "dir">, tag: string): Promise<string> {
  validateSnapshotTag(tag);
  await mkdir(snapshotsDir(paths), { recursive: true, mode: DIR_MODE });
  if (await readSnapshotManifest(paths, tag).then(() => true, (e: unknown) => !WorkspaceErrors.SNAPSHOT_NOT_FOUND.is(e))) {
    throw WorkspaceErrors.SNAPSHOT_EXISTS({ message: `workspace ${workspaceName(paths)} already has a snapshot ${tag}`, details: { tag } });
  }
  const tmp = join(snapshotsDir(paths), `.tmp-${tag}-${randomBytes(4).toString("hex")}`);
  await mkdir(tmp, { mode: DIR_MODE });
  return tmp;
}

/** Write the manifest into the temp directory and rename it to its tag: from here on it is listed. */
export async function commitSnapshot(paths: Pick<WorkspacePaths, "dir">, tmp: string, manifest: SnapshotManifest): Promise<string> {
  await writeJsonAtomic(join(tmp, "manifest.json"), SnapshotManifestSchema.parse(manifest));
  const final = snapshotDir(paths, manifest.tag);
  try {
    await rename(tmp, final);
  } catch (e) {
    if (isErrno(e, "ENOTEMPTY") || isErrno(e, "EEXIST")) {
      throw WorkspaceErrors.SNAPSHOT_EXISTS({ message: `workspace ${workspaceName(paths)} already has a snapshot ${manifest.tag}`, details: { tag: manifest.tag } });
    }
    throw e;
  }
  await syncDir(snapshotsDir(paths));
  return final;
}

export async function readSnapshotManifest(paths: Pick<WorkspacePaths, "dir">, tag: string): Promise<SnapshotManifest> {
  const file = join(snapshotDir(paths, tag), "manifest.json");
  const m = await readJsonFile(file, SnapshotManifestSchema, (p) =>
    WorkspaceErrors.SNAPSHOT_CORRUPT({ message: `${file} is not a valid snapshot manifest: ${p.kind === "json" ? "not JSON" : p.problem}`, cause: p.cause, details: { path: file, tag } }),
  );
  if (m === undefined) {
    throw WorkspaceErrors.SNAPSHOT_NOT_FOUND({
      message: `workspace ${workspaceName(paths)} has no snapshot ${tag}`,
      remediation: `Run \`microagent snapshot list ${workspaceName(paths)}\` to see its snapshots.`,
      details: { workspace: workspaceName(paths), tag },
    });
  }
  return m;
}

/** A snapshot with its sizes; its state file must exist (else SNAPSHOT_CORRUPT). */
export async function readSnapshot(paths: Pick<WorkspacePaths, "dir">, tag: string): Promise<SnapshotInfo> {
  const manifest = await readSnapshotManifest(paths, tag);
  const dir = snapshotDir(paths, tag);
  const stateStat = await stat(join(dir, manifest.state.file)).catch(() => undefined);
  if (!stateStat) throw WorkspaceErrors.SNAPSHOT_CORRUPT({ message: `snapshot ${tag} of workspace ${workspaceName(paths)} has no state file`, details: { tag } });
  const diskStat = await stat(manifest.disk.path).catch(() => undefined);
  if (!diskStat) throw WorkspaceErrors.SNAPSHOT_CORRUPT({ message: `snapshot ${tag} of workspace ${workspaceName(paths)} lost its disk layer ${manifest.disk.path}`, details: { tag, path: manifest.disk.path } });
  return { tag, createdAt: manifest.createdAt, stateBytes: stateStat.size, diskBytes: diskStat.blocks * 512, dir, manifest };
}

/** The workspace's complete snapshots, oldest first. Temp and trash directories are not listed. */
export async function listSnapshots(paths: Pick<WorkspacePaths, "dir">): Promise<SnapshotInfo[]> {
  let names: string[];
  try {
    names = await readdir(snapshotsDir(paths));
  } catch (e) {
    if (isErrno(e, "ENOENT")) return [];
    throw e;
  }
  const out: SnapshotInfo[] = [];
  for (const name of names) {
    if (!SNAPSHOT_TAG_PATTERN.test(name)) continue;
    const info = await readSnapshot(paths, name).catch(() => undefined);
    if (info) out.push(info);
  }
  return out.sort((a, b) => a.createdAt.localeCompare(b.createdAt) || a.tag.localeCompare(b.tag));
}

/**
 * Remove what an interrupted snapshot left: `.tmp-*` and `.trash-*` directories, and disk layers no
 * chain needs. Call it holding the workspace lock (a snapshot in progress holds it too).
 */
export async function sweepSnapshotDebris(paths: WorkspacePaths, stateDir: string, chain: LayerChain): Promise<{ removed: string[] }> {
  const removed: string[] = [];
  const names = await readdir(snapshotsDir(paths)).catch(() => [] as string[]);
  for (const name of names) {
    if (name.startsWith(".tmp-") || name.startsWith(".trash-")) {
      await rm(join(snapshotsDir(paths), name), { recursive: true, force: true });
      removed.push(name);
    }
  }
  removed.push(...(await collectLayers(paths, stateDir, chain)));
  return { removed };
}

/** Remove a snapshot (its state and manifest), then the disk layers nothing needs any more. */
export async function deleteSnapshot(paths: WorkspacePaths, tag: string, stateDir: string, chain: LayerChain): Promise<{ freedBytes: number }> {
  const info = await readSnapshot(paths, tag).catch(async (e: unknown) => {
    // A snapshot whose files are damaged can still be deleted.
    if (WorkspaceErrors.SNAPSHOT_CORRUPT.is(e)) return undefined;
    throw e;
  });
  const dir = snapshotDir(paths, tag);
  const trash = join(snapshotsDir(paths), `.trash-${tag}-${randomBytes(4).toString("hex")}`);
  await rename(dir, trash);
  await rm(trash, { recursive: true, force: true });
  const layerBytes = info ? await stat(info.manifest.disk.path).then((s) => s.blocks * 512, () => 0) : 0;
  const removed = await collectLayers(paths, stateDir, chain);
  const freed = (info?.stateBytes ?? 0) + (info && removed.includes(info.manifest.disk.path) ? layerBytes : 0);
  return { freedBytes: freed };
}

/** Other workspaces whose disk is layered on this workspace's snapshots (`create --from-snapshot`). */
export async function forksOf(name: string, stateDir: string): Promise<{ workspace: string; tag: string; layer: string }[]> {
  const root = workspacesRoot(stateDir);
  const out: { workspace: string; tag: string; layer: string }[] = [];
  for (const other of await readdir(root).catch(() => [] as string[])) {
    if (other === name || other.startsWith(".")) continue;
    let m: Manifest;
    try {
      m = await readManifest(workspacePaths(stateDir, other));
    } catch {
      continue;
    }
    if (m.fromSnapshot?.workspace === name) out.push({ workspace: other, tag: m.fromSnapshot.tag, layer: m.fromSnapshot.layer });
  }
  return out;
}

/**
 * Remove disk layers in the workspace directory that no chain needs: not the workspace's own disk's
 * chain, not a snapshot's, not a fork's (whose chain starts at a layer of ours). Returns the removed
 * paths. Unreadable chains keep everything (never delete what cannot be proven unused).
 */
export async function collectLayers(paths: WorkspacePaths, stateDir: string, chain: LayerChain): Promise<string[]> {
  const layers = (await readdir(paths.dir).catch(() => [] as string[])).filter((n) => LAYER_NAME.test(n)).map((n) => join(paths.dir, n));
  if (layers.length === 0) return [];
  const manifest = await readManifest(paths).catch(() => undefined);
  if (!manifest) return [];
  const roots = [manifest.artifacts.disk.path];
  for (const s of await listSnapshotManifests(paths)) roots.push(s.disk.path);
  for (const f of await forksOf(paths.name, stateDir)) roots.push(f.layer);
  const needed = new Set<string>();
  for (const root of roots) {
    try {
      for (const f of await chain(root)) needed.add(resolve(dirname(root), f));
    } catch {
      if (await stat(root).then(() => true, () => false)) return []; // exists but unreadable: keep all
    }
  }
  const removed: string[] = [];
  for (const layer of layers) {
    if (needed.has(layer)) continue;
    await rm(layer, { force: true });
    removed.push(layer);
  }
  return removed;
}

async function listSnapshotManifests(paths: Pick<WorkspacePaths, "dir">): Promise<SnapshotManifest[]> {
  const names = await readdir(snapshotsDir(paths)).catch(() => [] as string[]);
  const out: SnapshotManifest[] = [];
  for (const n of names) {
    if (!SNAPSHOT_TAG_PATTERN.test(n)) continue;
    const m = await readSnapshotManifest(paths, n).catch(() => undefined);
    if (m) out.push(m);
  }
  return out;
}

/** Point the workspace manifest at a new top disk layer (after a freeze, a restore or a fork). */
export async function setWorkspaceDisk(paths: WorkspacePaths, disk: { path: string; format: Manifest["artifacts"]["disk"]["format"] }): Promise<void> {
  const m = await readManifest(paths);
  await writeManifest(paths, { ...m, artifacts: { ...m.artifacts, disk } });
}

export type ArtifactName = "kernel" | "initramfs" | "init";

/**
 * The artifacts a restore depends on, as they are now, against what the snapshot recorded: the
 * first that differs (or is gone), or undefined. The kernel and init of a snapshot run from its
 * memory; a changed file on disk means modules, the initramfs or a later cold boot no longer match it.
 */
export async function snapshotDivergence(
  snap: SnapshotManifest,
  current: { kernelPath: string; initramfsPath: string },
): Promise<{ artifact: ArtifactName; expected: string; actual: string; path: string } | undefined> {
  const hash = (p: string) => sha256FileCached(p).catch(() => "missing");
  const kernel = await hash(current.kernelPath);
  if (kernel !== snap.artifacts.kernel.sha256) return { artifact: "kernel", expected: snap.artifacts.kernel.sha256, actual: kernel, path: current.kernelPath };
  const initramfs = await hash(current.initramfsPath);
  if (initramfs !== snap.artifacts.initramfs.sha256) return { artifact: "initramfs", expected: snap.artifacts.initramfs.sha256, actual: initramfs, path: current.initramfsPath };
  if (snap.artifacts.init) {
    const init = await readInitSha256(current.kernelPath);
    if (init !== undefined && init !== snap.artifacts.init.sha256) return { artifact: "init", expected: snap.artifacts.init.sha256, actual: init, path: join(dirname(current.kernelPath), "manifest.json") };
  }
  return undefined;
}

/** The guest init's sha256 as the kernel manifest next to the kernel records it (undefined when absent). */
export async function readInitSha256(kernelPath: string): Promise<string | undefined> {
  const m = await readJsonFile(join(dirname(kernelPath), "manifest.json"), z.object({ init: z.object({ sha256: Sha256Hex }).loose() }).loose(), () => new Error("corrupt")).catch(() => undefined);
  return m?.init.sha256;
}

function workspaceName(paths: Pick<WorkspacePaths, "dir">): string {
  return paths.dir.split("/").pop() ?? paths.dir;
}

async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, "r");
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}
