/**
 * `create NEW --from-snapshot SRC:TAG`: a new workspace that is a copy of SRC as its snapshot TAG
 * caught it, without copying anything. Its manifest is SRC's (image, kernel, resources, network
 * settings: the saved state only loads into the same machine) with its own name, hostname, boot
 * config and disk; its disk is a new overlay over the snapshot's frozen layer in SRC's directory
 * (SRC keeps that layer while the fork exists: `collectLayers`, `forksOf`). It starts `prepared` with
 * `fromSnapshot.pendingRestore`, so its first start loads the snapshot's memory instead of booting;
 * its new identity (hostname, MAC, reseeded RNG, stepped clock) reaches the guest in the `resume`
 * message. A failure anywhere leaves nothing behind.
 */
import { mkdir, rm } from "node:fs/promises";
import { buildGuestBootConfig, hostnameFor } from "./boot-spec.ts";
import { WorkspaceErrors } from "./errors.ts";
import { isErrno, ensurePrivateDir, writeJsonAtomic, DIR_MODE } from "../util/fs.ts";
import { sha256FileCached } from "../util/hash.ts";
import { acquireLock } from "./lock.ts";
import { readManifest, writeManifest, type Manifest } from "./manifest.ts";
import { validateWorkspaceName, workspacePaths, workspacesRoot, type WorkspacePaths } from "./paths.ts";
import { HOSTNAME_PATTERN } from "./spec.ts";
import { CommonErrors } from "../contract/errors.ts";
import { recordInitialState, type StateRecord } from "./state.ts";
import { newLayerPath, readSnapshot, type SnapshotInfo } from "./snapshots.ts";
import type { DiskFormat } from "../contract/backend.ts";

export interface ForkWorkspaceOptions {
  name: string;
  stateDir: string;
  source: { workspace: string; tag: string };
  /** The fork's hostname (default: derived from its name, as `create` does). */
  hostname?: string;
  /** Make the fork's disk: a new overlay at `path` over the frozen layer (the backend's `snapshot.overlayOn`). */
  overlay(layer: SnapshotInfo["manifest"]["disk"], path: string): Promise<{ path: string; format: DiskFormat }>;
}

export interface ForkResult {
  name: string;
  paths: WorkspacePaths;
  manifest: Manifest;
  state: StateRecord;
  snapshot: SnapshotInfo;
}

export async function forkWorkspace(o: ForkWorkspaceOptions): Promise<ForkResult> {
  const name = validateWorkspaceName(o.name);
  if (o.hostname !== undefined && !HOSTNAME_PATTERN.test(o.hostname)) {
    throw CommonErrors.INVALID_ARGUMENT({ message: `invalid hostname '${o.hostname}': one label of letters, digits and inner '-', at most 63 characters` });
  }
  const src = workspacePaths(o.stateDir, o.source.workspace);
  const srcManifest = await readManifest(src);
  const snapshot = await readSnapshot(src, o.source.tag);
  const paths = workspacePaths(o.stateDir, name);
  await ensurePrivateDir(workspacesRoot(o.stateDir));
  try {
    await mkdir(paths.dir, { mode: DIR_MODE });
  } catch (e) {
    if (isErrno(e, "EEXIST")) {
      throw WorkspaceErrors.WORKSPACE_EXISTS({ message: `workspace ${name} already exists`, remediation: `Pick another name, or remove the old one with \`microagent delete ${name}\`.`, details: { workspace: name } });
    }
    throw e;
  }
  const lock = await acquireLock(paths.lock, { purpose: "create (fork)", timeoutMs: 5000 });
  let done = false;
  try {
    const s = snapshot.manifest;
    const boot = { ...srcManifest.boot, hostname: o.hostname ?? hostnameFor(name) };
    await writeJsonAtomic(paths.bootConfig, await buildGuestBootConfig(boot));
    const disk = await o.overlay(s.disk, newLayerPath(paths));
    const manifest: Manifest = {
      ...srcManifest,
      name,
      createdAt: new Date().toISOString(),
      // The snapshot's machine: its state loads into nothing else.
      resources: { ...srcManifest.resources, memoryMib: s.resources.memoryMib, cpus: s.resources.cpus },
      boot,
      artifacts: {
        ...srcManifest.artifacts,
        kernel: s.artifacts.kernel,
        initramfs: s.artifacts.initramfs,
        bootConfig: { path: paths.bootConfig, sha256: await sha256FileCached(paths.bootConfig) },
        disk,
      },
      fromSnapshot: { workspace: o.source.workspace, tag: o.source.tag, layer: s.disk.path, pendingRestore: true },
    };
    await writeManifest(paths, manifest);
    const state = await recordInitialState(paths, { lock, detail: `forked from snapshot ${o.source.workspace}:${o.source.tag}`, identity: { requestId: "create" } });
    done = true;
    return { name, paths, manifest, state, snapshot };
  } finally {
    if (!done) await rm(paths.dir, { recursive: true, force: true }).catch(() => {});
    await lock.release().catch(() => {});
  }
}
