/**
 * `status NAME`: the workspace's current state (reconciled), its latest event, verification of the
 * recorded hashes, readiness, and the workload result. The shape is the contract's Response, plus
 * a `workspace` block describing what was created.
 */
import type { Response } from "../contract/response.ts";
import type { BackendName } from "../contract/backend.ts";
import { notFound, openWorkspace, type WorkspaceAccessOptions } from "./access.ts";
import { readManifest, type Manifest } from "./manifest.ts";
import { reconcile } from "./reconcile.ts";
import { readResult, type WorkloadRecord } from "./result.ts";
import { runtimeLiveness, type RuntimeRecord } from "./runtime.ts";
import { LIVE_STATES, type StateRecord } from "./state.ts";
import { verifyManifest, type Verification } from "./verify.ts";
import type { WorkspacePaths } from "./paths.ts";
import { egressOptionsOf } from "./network.ts";
import { egressSummary, type EgressSummary } from "../egress/summary.ts";

/**
 * Probes a live workspace's readiness through its supervisor (guest handshake, exec round trip,
 * shell). Supplied by the supervisor layer; the workspace layer never talks to a supervisor itself.
 */
export type ReadinessProbe = (paths: WorkspacePaths, runtime: RuntimeRecord, signal?: AbortSignal) => Promise<Record<string, unknown>>;

import type { SnapshotSummary } from "../contract/results.ts";

export interface WorkspaceStatusOptions extends WorkspaceAccessOptions {
  probeReadiness?: ReadinessProbe;
  /** Recompute artifact hashes (default true). */
  verify?: boolean;
  signal?: AbortSignal;
}

export interface Readiness {
  /** True when the guest answered the probes (only while running). */
  ready: boolean;
  /** Why not ready, when not. */
  reason?: string;
  supervisorAlive?: boolean;
  vmmAlive?: boolean;
  accel?: string;
  [probe: string]: unknown;
}

export interface WorkspaceInfo {
  name: string;
  dir: string;
  state: StateRecord["state"];
  createdAt: string;
  image: Manifest["image"];
  resources: Manifest["resources"];
  network: Manifest["network"];
  arch: Manifest["arch"];
  boot: { argv: string[]; hostname: string; setup: string[]; files: number };
  runtime?: { runtimeId: string; supervisorPid: number; vmmPid?: number; accel: string; startedAt: string };
}

export interface WorkspaceStatus extends Response<WorkloadRecord> {
  ok: boolean;
  backend: BackendName;
  event: StateRecord;
  verification?: Verification;
  readiness: Readiness;
  /** User networking: egress mode, lists and the audit counted (src/egress/summary.ts). */
  egress?: EgressSummary;
  result?: WorkloadRecord;
  workspace: WorkspaceInfo;
  /** The workspace's snapshots with their sizes (filled in by the API layer, which owns them). */
  snapshots?: SnapshotSummary[];
}

export async function workspaceStatus(name: string, options: WorkspaceStatusOptions = {}): Promise<WorkspaceStatus> {
  const paths = await openWorkspace(name, options);
  const manifest = await readManifest(paths);
  const { state, runtime } = await reconcile(paths);
  if (!state) throw notFound(name, options.stateDir);
  const verification = options.verify === false ? undefined : await verifyManifest(manifest, state.state);
  const result = await readResult(paths);
  const readiness = await readinessOf(paths, state, runtime, options);
  const live = LIVE_STATES.has(state.state) && runtime;
  const egress = manifest.network.mode === "user" ? await egressSummary(paths.dir, egressOptionsOf(manifest.network)).catch(() => undefined) : undefined;
  return {
    ok: state.state !== "failed" && (verification?.ok ?? true),
    backend: manifest.backend,
    event: state,
    ...(verification ? { verification } : {}),
    readiness,
    ...(egress ? { egress } : {}),
    ...(result ? { result } : {}),
    workspace: {
      name,
      dir: paths.dir,
      state: state.state,
      createdAt: manifest.createdAt,
      image: manifest.image,
      resources: manifest.resources,
      network: manifest.network,
      arch: manifest.arch,
      boot: { argv: manifest.boot.argv, hostname: manifest.boot.hostname, setup: manifest.boot.setup, files: manifest.boot.files.length },
      ...(live
        ? {
            runtime: {
              runtimeId: runtime.runtimeId,
              supervisorPid: runtime.supervisorPid,
              ...(runtime.vmmPid !== undefined ? { vmmPid: runtime.vmmPid } : {}),
              accel: runtime.accel,
              startedAt: runtime.startedAt,
            },
          }
        : {}),
    },
  };
}

async function readinessOf(
  paths: WorkspacePaths,
  state: StateRecord,
  runtime: RuntimeRecord | undefined,
  options: WorkspaceStatusOptions,
): Promise<Readiness> {
  if (!LIVE_STATES.has(state.state)) return { ready: false, reason: `workspace is ${state.state}` };
  if (!runtime) return { ready: false, reason: `workspace is ${state.state}; the supervisor has not recorded its runtime yet` };
  const live = runtimeLiveness(runtime);
  const base: Readiness = {
    ready: false,
    supervisorAlive: live.supervisorAlive,
    ...(live.vmmAlive !== undefined ? { vmmAlive: live.vmmAlive } : {}),
    accel: runtime.accel,
  };
  if (state.state === "quarantined") return { ...base, reason: "workspace is quarantined: host paths into the guest are severed" };
  if (state.state !== "running") return { ...base, reason: `workspace is ${state.state}` };
  if (!options.probeReadiness) return { ...base, reason: "readiness probe unavailable in this build" };
  try {
    const probed = await options.probeReadiness(paths, runtime, options.signal);
    return { ...base, ready: Boolean(probed.ready), ...probed };
  } catch (e) {
    return { ...base, reason: `readiness probe failed: ${e instanceof Error ? e.message : String(e)}` };
  }
}
