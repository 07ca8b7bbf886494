/**
 * Opening an existing workspace by name: validate the name, check the directory exists, and take
 * its lock with errors that name the workspace. Shared by every operation on an existing workspace.
 */
import { stat } from "node:fs/promises";
import { WorkspaceErrors } from "./errors.ts";
import { isErrno } from "../util/fs.ts";
import { acquireLock, type LockHandle, type LockOptions } from "./lock.ts";
import { defaultStateDir, workspacePaths, type WorkspacePaths } from "./paths.ts";

export interface WorkspaceAccessOptions {
  /** The state dir (default: $MICROAGENT_STATE_DIR or ~/.microagent). */
  stateDir?: string;
}

/** Paths of an existing workspace; WORKSPACE_NOT_FOUND when it does not exist. */
export async function openWorkspace(name: string, options: WorkspaceAccessOptions = {}): Promise<WorkspacePaths> {
  const paths = workspacePaths(options.stateDir ?? defaultStateDir(), name);
  if (!(await workspaceExists(paths))) throw notFound(name, options.stateDir);
  return paths;
}

export async function workspaceExists(paths: WorkspacePaths): Promise<boolean> {
  try {
    await stat(paths.manifest);
    return true;
  } catch (e) {
    if (isErrno(e, "ENOENT") || isErrno(e, "ENOTDIR")) return false;
    throw e;
  }
}

export function notFound(name: string, stateDir?: string) {
  return WorkspaceErrors.WORKSPACE_NOT_FOUND({
    message: `workspace ${name} does not exist${stateDir ? ` in ${stateDir}` : ""}`,
    details: { workspace: name },
  });
}

/** Take the workspace's lock; a workspace deleted while we waited is WORKSPACE_NOT_FOUND. */
export async function lockWorkspace(paths: WorkspacePaths, options: LockOptions = {}): Promise<LockHandle> {
  try {
    const lock = await acquireLock(paths.lock, options);
    if (!(await workspaceExists(paths))) {
      await lock.release();
      throw notFound(paths.name);
    }
    return lock;
  } catch (e) {
    if (isErrno(e, "ENOENT")) throw notFound(paths.name);
    throw e;
  }
}
