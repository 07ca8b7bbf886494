/**
 * `run` from a warm snapshot (src/workspace/warm.ts has the cache): before a run's first boot, either
 * restore the cached post-hello snapshot of the same machine (a new overlay over its frozen layer,
 * then the run's own boot config, as after a cold boot), or, on a miss, boot cold and have the
 * supervisor capture one after the hello for the next run. The caller holds the workspace lock.
 */
import { join } from "node:path";
import { rm, utimes } from "node:fs/promises";
import type { Backend } from "../backend/types.ts";
import type { Manifest } from "../workspace/manifest.ts";
import type { WorkspacePaths } from "../workspace/paths.ts";
import { collectLayers, newLayerPath, readInitSha256, setWorkspaceDisk } from "../workspace/snapshots.ts";
import { beginWarmEntry, evictWarm, readWarmEntry, warmKey, WARM_CACHE_ENTRIES } from "../workspace/warm.ts";
import { layerChain, type RestorePlan } from "./snapshot-files.ts";

export interface WarmStart {
  key: string;
  /** A hit: restore this instead of booting. */
  restore?: RestorePlan;
  /** A miss: the supervisor's capture request (MICROAGENT_WARM_CAPTURE_JSON). */
  captureJson?: string;
}

export async function warmStart(paths: WorkspacePaths, manifest: Manifest, stateDir: string, backend: Backend): Promise<WarmStart | undefined> {
  const snap = backend.snapshot;
  if (!snap) return undefined;
  const key = warmKey(manifest, await readInitSha256(manifest.artifacts.kernel.path));
  // The hashes are checked by the supervisor while QEMU starts (RestorePlan.verify), not here: hashing
  // the ~90 MiB state file first would add ~200 ms to every warm run.
  let hit = await readWarmEntry(stateDir, key, { hashes: false });
  // Its layer is an overlay over the shared base rootfs: a base that went away (rootfs cache pruned) is a miss.
  if (hit && !(await snap.layersOf(join(hit.dir, "disk.qcow2")).then(() => true, () => false))) {
    await rm(hit.dir, { recursive: true, force: true }).catch(() => {});
    hit = undefined;
  }
  if (hit) {
    const layer = { path: join(hit.dir, "disk.qcow2"), format: hit.entry.disk.format, virtualSizeBytes: hit.entry.disk.virtualSizeBytes };
    const disk = await snap.overlayOn(layer, newLayerPath(paths));
    await setWorkspaceDisk(paths, disk);
    await collectLayers(paths, stateDir, layerChain(backend)).catch(() => []);
    const now = new Date();
    await utimes(hit.dir, now, now).catch(() => {}); // most recently used: evicted last
    return {
      key,
      restore: {
        stateFile: join(hit.dir, "state"),
        tag: `warm:${key.slice(0, 12)}`,
        sourceHostname: "",
        ...(hit.entry.mac ? { sourceMac: hit.entry.mac } : {}),
        hostname: manifest.boot.hostname,
        fork: false,
        source: "warm-cache",
        verify: { stateSha256: hit.entry.state.sha256, disk: { path: layer.path, sha256: hit.entry.disk.sha256 }, entryDir: hit.dir },
      },
    };
  }
  await evictWarm(stateDir, WARM_CACHE_ENTRIES).catch(() => []);
  const tmp = await beginWarmEntry(stateDir, key);
  return { key, captureJson: JSON.stringify({ stateDir, key, tmp, overlayPath: newLayerPath(paths) }) };
}
