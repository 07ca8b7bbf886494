/**
 * Snapshots by workspace name: `snapshot create|list|delete` (the facade and the CLI are thin layers
 * over these). The capture itself runs in the workspace's supervisor (the one process that talks to
 * its VMM); this side owns the files: a temp directory under `<workspace>/snapshots/`, renamed to the
 * tag only once the state file and manifest are complete (src/workspace/snapshots.ts). Everything that
 * changes snapshot files or disk layers holds the workspace's snapshot lock, so a sweep never removes
 * what a capture in progress is writing. (Not the workspace lock: the supervisor records state changes
 * under that one while it captures.)
 */
import { join } from "node:path";
import { openWorkspace, type WorkspaceAccessOptions } from "../workspace/access.ts";
import { readManifest } from "../workspace/manifest.ts";
import { defaultStateDir } from "../workspace/paths.ts";
import {
  beginSnapshot,
  commitSnapshot,
  defaultSnapshotTag,
  deleteSnapshot,
  listSnapshots,
  newLayerPath,
  parseSnapshotRef,
  readInitSha256,
  readSnapshot,
  sweepSnapshotDebris,
  validateSnapshotTag,
  SNAPSHOT_MANIFEST_VERSION,
} from "../workspace/snapshots.ts";
import { rm } from "node:fs/promises";
import type { SnapshotCreateJson, SnapshotDeleteJson, SnapshotListJson } from "../contract/results.ts";
import { startWorkspace, supervisorFor, type StartResult } from "./lifecycle.ts";
import { forkWorkspace, type ForkResult } from "../workspace/fork.ts";
import { WorkspaceErrors } from "../workspace/errors.ts";
import { layerChain, snapshotLock, snapshotSummary } from "./snapshot-files.ts";
import { getBackend } from "../backend/registry.ts";
import { reconcile } from "../workspace/reconcile.ts";

export interface SnapshotOptions extends WorkspaceAccessOptions {
  /** Bound on saving the state (default 120 s; a 512 MiB guest takes a few seconds under TCG). */
  timeoutMs?: number;
}

/**
 * Take a snapshot of a running or paused workspace: memory and device state, the disk frozen at the
 * same instant, and a manifest. The guest is paused for the capture and resumed after unless
 * `leavePaused` (a workspace that was paused stays paused).
 */
export async function createSnapshot(name: string, opts: SnapshotOptions & { tag?: string; leavePaused?: boolean } = {}): Promise<SnapshotCreateJson> {
  const t0 = performance.now();
  const tag = validateSnapshotTag(opts.tag ?? defaultSnapshotTag());
  const stateDir = opts.stateDir ?? defaultStateDir();
  const { paths, client } = await supervisorFor(name, opts);
  const lock = await snapshotLock(paths, `snapshot create ${tag}`);
  let tmp: string | undefined;
  let committed = false;
  try {
    const manifest = await readManifest(paths);
    await sweepSnapshotDebris(paths, stateDir, layerChain(getBackend(manifest.backend))).catch(() => {});
    tmp = await beginSnapshot(paths, tag);
    const stateFile = join(tmp, "state");
    const r = await client.snapshot({ stateFile, overlayPath: newLayerPath(paths), leavePaused: opts.leavePaused ?? false, ...(opts.timeoutMs ? { timeoutMs: opts.timeoutMs } : {}) });
    const init = await readInitSha256(manifest.artifacts.kernel.path);
    await commitSnapshot(paths, tmp, {
      version: SNAPSHOT_MANIFEST_VERSION,
      tag,
      workspace: name,
      createdAt: new Date().toISOString(),
      backend: manifest.backend,
      arch: manifest.arch,
      artifacts: {
        kernel: manifest.artifacts.kernel,
        initramfs: manifest.artifacts.initramfs,
        ...(init ? { init: { sha256: init } } : {}),
      },
      image: { ref: manifest.image.ref, resolvedRef: manifest.image.resolvedRef, digest: manifest.image.digest },
      resources: { memoryMib: manifest.resources.memoryMib, cpus: manifest.resources.cpus, sizeMib: manifest.resources.sizeMib },
      network: { mode: manifest.network.mode, hostname: manifest.boot.hostname, ...(r.mac ? { mac: r.mac } : {}) },
      disk: r.disk,
      state: { file: "state", bytes: r.stateBytes },
      guestConfigured: true,
      timings: { pauseMs: r.pauseMs, freezeMs: r.freezeMs, saveMs: r.saveMs, totalMs: performance.now() - t0 },
    });
    committed = true;
    const info = await readSnapshot(paths, tag);
    const round = (ms: number) => Math.round(ms * 10) / 10;
    return {
      workspace: name,
      snapshot: snapshotSummary(info),
      state: r.state,
      wasPaused: r.wasPaused,
      timingsMs: { pause: round(r.pauseMs), freezeDisk: round(r.freezeMs), saveState: round(r.saveMs), resume: round(r.resumeMs), total: round(performance.now() - t0) },
    };
  } finally {
    if (!committed && tmp) await rm(tmp, { recursive: true, force: true }).catch(() => {});
    await lock.release().catch(() => {});
    // A capture that failed because the VM died leaves the workspace to be reconciled now, not on the next read.
    if (!committed) await reconcile(paths).catch(() => {});
  }
}

/** The workspace's snapshots (oldest first), after sweeping what interrupted captures left. */
export async function listWorkspaceSnapshots(name: string, opts: WorkspaceAccessOptions = {}): Promise<SnapshotListJson> {
  const paths = await openWorkspace(name, opts);
  // A capture in progress holds the lock: list without sweeping rather than wait for it.
  const lock = await snapshotLock(paths, "snapshot list", 0).catch(() => undefined);
  try {
    if (lock) {
      const manifest = await readManifest(paths);
      await sweepSnapshotDebris(paths, opts.stateDir ?? defaultStateDir(), layerChain(getBackend(manifest.backend))).catch(() => {});
    }
    const snapshots = (await listSnapshots(paths)).map(snapshotSummary);
    return { workspace: name, snapshots, totalBytes: snapshots.reduce((n, s) => n + s.sizeBytes, 0) };
  } finally {
    await lock?.release().catch(() => {});
  }
}

/** Remove a snapshot; its disk layer goes too unless the workspace's disk or a fork still needs it. */
export async function deleteWorkspaceSnapshot(name: string, tag: string, opts: WorkspaceAccessOptions = {}): Promise<SnapshotDeleteJson> {
  validateSnapshotTag(tag);
  const paths = await openWorkspace(name, opts);
  const lock = await snapshotLock(paths, `snapshot delete ${tag}`);
  try {
    const manifest = await readManifest(paths);
    const { freedBytes } = await deleteSnapshot(paths, tag, opts.stateDir ?? defaultStateDir(), layerChain(getBackend(manifest.backend)));
    return { workspace: name, tag, deleted: true, freedBytes };
  } finally {
    await lock.release().catch(() => {});
  }
}


export interface ForkOptions extends WorkspaceAccessOptions {
  /** The fork's hostname (default: derived from its name). */
  hostname?: string;
  /** Restore it at once (default true); false leaves it `prepared`, restored by its first `start`. */
  start?: boolean;
  supervisorPath?: string;
  /** Bound on the restore boot. */
  timeoutMs?: number;
}

/**
 * Fork: a new workspace `name` from snapshot `ref` (`SRC:TAG`), its disk a new overlay over the
 * snapshot's frozen layer (no copy), then (by default) started, which restores the snapshot's memory
 * and gives the guest its new identity (hostname, MAC, reseeded RNG, stepped clock).
 */
export async function forkFromSnapshot(name: string, ref: string, opts: ForkOptions = {}): Promise<{ fork: ForkResult; started?: StartResult }> {
  const source = parseSnapshotRef(ref);
  const stateDir = opts.stateDir ?? defaultStateDir();
  const srcPaths = await openWorkspace(source.workspace, opts);
  const backend = getBackend((await readManifest(srcPaths)).backend);
  const snap = backend.snapshot;
  if (!snap) throw WorkspaceErrors.SNAPSHOT_UNSUPPORTED({ message: `the ${backend.name} backend cannot fork snapshots` });
  const lock = await snapshotLock(srcPaths, `fork ${source.tag} to ${name}`);
  let fork: ForkResult;
  try {
    fork = await forkWorkspace({ name, stateDir, source, ...(opts.hostname !== undefined ? { hostname: opts.hostname } : {}), overlay: (layer, path) => snap.overlayOn(layer, path) });
  } finally {
    await lock.release().catch(() => {});
  }
  if (opts.start === false) return { fork };
  const started = await startWorkspace(name, {
    stateDir,
    ...(opts.supervisorPath ? { supervisorPath: opts.supervisorPath } : {}),
    ...(opts.timeoutMs !== undefined ? { timeoutMs: opts.timeoutMs } : {}),
  });
  return { fork, started };
}
