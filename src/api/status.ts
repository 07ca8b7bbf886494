/**
 * `workspaceStatus()`: the workspace layer's status report with live readiness probed through the
 * supervisor. The workspace layer cannot talk to a supervisor (it sits below it), so it takes the
 * probe as a parameter; this is the one place that supplies it, so callers never have to.
 */
import { workspaceStatus as readStatus, type WorkspaceStatus, type WorkspaceStatusOptions } from "../workspace/status.ts";
import { readinessForRuntime } from "./lifecycle.ts";
import { listSnapshots } from "../workspace/snapshots.ts";
import { snapshotSummary } from "./snapshot-files.ts";

export type { WorkspaceStatus } from "../workspace/status.ts";
export type StatusOptions = Omit<WorkspaceStatusOptions, "probeReadiness">;

/** State (reconciled), latest event, verification, live readiness, the workload result and the snapshots. */
export async function workspaceStatus(name: string, opts: StatusOptions = {}): Promise<WorkspaceStatus> {
  const status = await readStatus(name, { ...opts, probeReadiness: readinessForRuntime });
  const snapshots = await listSnapshots({ dir: status.workspace.dir }).catch(() => []);
  return { ...status, snapshots: snapshots.map(snapshotSummary) };
}
