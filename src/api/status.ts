/**
 * `workspaceStatus()`: the workspace layer's status report with live readiness probed through the
 * supervisor. The workspace layer cannot talk to a supervisor (it sits below it), so it takes the
 * probe as a parameter; this is the one place that supplies it, so callers never have to.
 */
import { workspaceStatus as readStatus, type WorkspaceStatus, type WorkspaceStatusOptions } from "../workspace/status.ts";
import { readinessForRuntime } from "./lifecycle.ts";

export type { WorkspaceStatus } from "../workspace/status.ts";
export type StatusOptions = Omit<WorkspaceStatusOptions, "probeReadiness">;

/** State (reconciled), latest event, verification, live readiness and the workload result. */
export function workspaceStatus(name: string, opts: StatusOptions = {}): Promise<WorkspaceStatus> {
  return readStatus(name, { ...opts, probeReadiness: readinessForRuntime });
}
