/**
 * The snapshot pieces the lifecycle needs without the rest of the snapshot API (no cycle through
 * lifecycle.ts): the per-workspace snapshot lock, the summary shape, and the checks and disk swap a
 * restore does before its supervisor is spawned.
 */
import type { RestoreRequest } from "../supervisor/restore-request.ts";
import { join } from "node:path";
import { acquireLock, type LockHandle } from "../workspace/lock.ts";
import { readManifest } from "../workspace/manifest.ts";
import { workspacePaths, type WorkspacePaths } from "../workspace/paths.ts";
import { WorkspaceErrors } from "../workspace/errors.ts";
import type { Backend } from "../backend/types.ts";
import { collectLayers, newLayerPath, readSnapshot, setWorkspaceDisk, snapshotDivergence, type LayerChain, type SnapshotInfo } from "../workspace/snapshots.ts";
import type { SnapshotSummary } from "../contract/results.ts";

/** The per-workspace lock that serializes snapshot files and disk-layer changes. */
export function snapshotLock(paths: WorkspacePaths, purpose: string, timeoutMs = 30_000): Promise<LockHandle> {
  return acquireLock(join(paths.dir, "snapshots.lock"), { purpose, timeoutMs });
}

export function snapshotSummary(s: SnapshotInfo): SnapshotSummary {
  return {
    tag: s.tag,
    createdAt: s.createdAt,
    stateBytes: s.stateBytes,
    diskBytes: s.diskBytes,
    sizeBytes: s.stateBytes + s.diskBytes,
    memoryMib: s.manifest.resources.memoryMib,
    imageDigest: s.manifest.image.digest,
  };
}

/** What the supervisor is handed to restore instead of booting (MICROAGENT_RESTORE_JSON), plus whose snapshot it is. */
export type RestorePlan = RestoreRequest & {
  /** The workspace whose snapshot it is. */
  source: string;
};

/**
 * Before a restore boot (the caller holds the workspace lock, the workspace is offline): check the
 * snapshot fits (same kernel, initramfs and init; same machine), then give the workspace a fresh
 * disk: a new overlay over the snapshot's frozen layer (what it wrote since is dropped, and no
 * restore ever runs memory against a disk that moved on). Old layers nothing needs are removed.
 */
export async function prepareRestore(paths: WorkspacePaths, source: { workspace: string; tag: string }, stateDir: string, backend: Backend): Promise<RestorePlan> {
  const fork = source.workspace !== paths.name;
  const srcPaths = fork ? workspacePaths(stateDir, source.workspace) : paths;
  const snapCap = backend.snapshot;
  if (!snapCap) throw WorkspaceErrors.SNAPSHOT_UNSUPPORTED({ message: `the ${backend.name} backend cannot restore snapshots` });
  const lock = await snapshotLock(srcPaths, `restore ${source.tag}`);
  try {
    const snap = await checkRestore(paths, source, stateDir);
    const manifest = await readManifest(paths);
    const m = snap.manifest;
    const disk = await snapCap.overlayOn(m.disk, newLayerPath(paths));
    await setWorkspaceDisk(paths, disk);
    await collectLayers(paths, stateDir, layerChain(backend)).catch(() => []);
    return {
      stateFile: join(snap.dir, m.state.file),
      tag: source.tag,
      sourceHostname: m.network.hostname,
      ...(m.network.mac ? { sourceMac: m.network.mac } : {}),
      hostname: manifest.boot.hostname,
      fork,
      source: source.workspace,
    };
  } finally {
    await lock.release().catch(() => {});
  }
}

/**
 * Whether the snapshot can be loaded into `paths`' workspace: it exists and is complete, the kernel,
 * initramfs and init are the ones it was taken with (SNAPSHOT_DIVERGED names the one that is not),
 * and the machine is the same (memory, vCPUs, network mode: the saved device state only fits it).
 */
export async function checkRestore(paths: WorkspacePaths, source: { workspace: string; tag: string }, stateDir: string): Promise<SnapshotInfo> {
  const srcPaths = source.workspace !== paths.name ? workspacePaths(stateDir, source.workspace) : paths;
  {
    const snap = await readSnapshot(srcPaths, source.tag).catch((e: unknown) => {
      // A fork whose source workspace is gone says so (not "no manifest").
      if (WorkspaceErrors.WORKSPACE_NOT_FOUND.is(e)) throw WorkspaceErrors.SNAPSHOT_NOT_FOUND({ message: `snapshot ${source.workspace}:${source.tag} is gone: workspace ${source.workspace} does not exist`, details: { ...source } });
      throw e;
    });
    const manifest = await readManifest(paths);
    const m = snap.manifest;
    const diverged = await snapshotDivergence(m, { kernelPath: manifest.artifacts.kernel.path, initramfsPath: manifest.artifacts.initramfs.path });
    if (diverged) {
      throw WorkspaceErrors.SNAPSHOT_DIVERGED({
        message: `cannot restore snapshot ${source.workspace}:${source.tag}: the ${diverged.artifact} changed since it was taken (sha256 expected ${diverged.expected}, now ${diverged.actual}, ${diverged.path})`,
        details: { workspace: paths.name, snapshot: `${source.workspace}:${source.tag}`, artifact: diverged.artifact, expected: diverged.expected, actual: diverged.actual, path: diverged.path },
      });
    }
    const machine: [string, unknown, unknown][] = [
      ["memory (MiB)", m.resources.memoryMib, manifest.resources.memoryMib],
      ["vCPUs", m.resources.cpus, manifest.resources.cpus],
      ["network mode", m.network.mode, manifest.network.mode],
      ["backend", m.backend, manifest.backend],
    ];
    const differs = machine.find(([, a, b]) => a !== b);
    if (differs) {
      throw WorkspaceErrors.SNAPSHOT_NOT_ALLOWED({
        message: `cannot restore snapshot ${source.workspace}:${source.tag} into ${paths.name}: its ${differs[0]} is ${String(differs[1])}, the workspace's is ${String(differs[2])} (the saved state only loads into the same machine)`,
        details: { field: differs[0], snapshot: differs[1], workspace: differs[2] },
      });
    }
    return snap;
  }
}

/** How the backend reads a disk's backing chain (what a layer sweep must keep); none: keep everything. */
export function layerChain(backend: Backend): LayerChain {
  const f = backend.snapshot?.layersOf;
  return f ? (p) => f(p) : async () => {
    throw new Error(`the ${backend.name} backend cannot read disk chains`);
  };
}
