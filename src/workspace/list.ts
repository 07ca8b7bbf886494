/** `list` and `ps`: every workspace in a state dir, each reconciled before it is reported. */
import { readdir } from "node:fs/promises";
import { WorkspaceErrors } from "./errors.ts";
import { isErrno } from "../util/fs.ts";
import { readManifest } from "./manifest.ts";
import { defaultStateDir, workspacePaths, workspacesRoot, WORKSPACE_NAME_PATTERN } from "./paths.ts";
import { reconcile } from "./reconcile.ts";
import type { WorkspaceState } from "./events.ts";
import type { WorkspaceAccessOptions } from "./access.ts";

export interface WorkspaceSummary {
  name: string;
  /** "unknown" when the state files cannot be read (see `error`). */
  state: WorkspaceState | "unknown";
  observedAt?: string;
  detail?: string;
  backend?: string;
  profile?: string;
  network?: string;
  image?: string;
  imageDigest?: string;
  createdAt?: string;
  error?: string;
}

/** States `ps` shows: a VM exists (or is being brought up or down). */
export const PS_STATES: ReadonlySet<WorkspaceState> = new Set(["starting", "running", "paused", "stopping", "quarantined"]);

/** Every workspace, sorted by name. A missing state dir is an empty list. */
export async function listWorkspaces(options: WorkspaceAccessOptions = {}): Promise<WorkspaceSummary[]> {
  const stateDir = options.stateDir ?? defaultStateDir();
  let names: string[];
  try {
    names = (await readdir(workspacesRoot(stateDir), { withFileTypes: true })).filter((d) => d.isDirectory() && WORKSPACE_NAME_PATTERN.test(d.name)).map((d) => d.name);
  } catch (e) {
    if (isErrno(e, "ENOENT")) return [];
    throw e;
  }
  names.sort();
  const out: WorkspaceSummary[] = [];
  for (const name of names) {
    const summary = await summarize(stateDir, name);
    if (summary) out.push(summary);
  }
  return out;
}

/** Live workspaces only: starting, running, stopping, quarantined. */
export async function psWorkspaces(options: WorkspaceAccessOptions = {}): Promise<WorkspaceSummary[]> {
  return (await listWorkspaces(options)).filter((w) => w.state !== "unknown" && PS_STATES.has(w.state));
}

async function summarize(stateDir: string, name: string): Promise<WorkspaceSummary | undefined> {
  const paths = workspacePaths(stateDir, name);
  try {
    const manifest = await readManifest(paths);
    const { state } = await reconcile(paths);
    // No state yet: `create` is still writing it (it holds the lock); not a workspace yet.
    if (!state) return undefined;
    return {
      name,
      state: state.state,
      observedAt: state.observedAt,
      detail: state.detail,
      backend: manifest.backend,
      profile: manifest.resources.profile,
      network: manifest.network.mode,
      image: manifest.image.ref,
      imageDigest: manifest.image.digest,
      createdAt: manifest.createdAt,
    };
  } catch (e) {
    if (WorkspaceErrors.WORKSPACE_NOT_FOUND.is(e)) return undefined; // half-created or being deleted
    return { name, state: "unknown", error: e instanceof Error ? e.message : String(e) };
  }
}
