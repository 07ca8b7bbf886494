/**
 * `delete NAME`: remove a workspace's directory (manifest, events, disk overlay, logs) and its
 * socket runtime dir. Refuses while its VM is running (seed: deleting would orphan the process);
 * `force` kills the VM first. The shared base rootfs and the kernel are never touched.
 *
 * Removal is a rename to a hidden trash name followed by rm -rf, so a crash mid-delete never leaves
 * a half-deleted workspace that `list` would show: only a `.trash-*` directory to sweep later.
 */
import { randomBytes } from "node:crypto";
import { readdir, rename, rm } from "node:fs/promises";
import { join } from "node:path";
import { lockWorkspace, workspaceExists, type WorkspaceAccessOptions } from "./access.ts";
import { WorkspaceErrors } from "./errors.ts";
import { isErrno } from "../util/fs.ts";
import { defaultStateDir, workspacePaths, workspacesRoot, type WorkspacePaths } from "./paths.ts";
import { stopRecordedProcesses, type RecordedProcess } from "../util/kill.ts";
import { reconcile } from "./reconcile.ts";
import { forksOf } from "./snapshots.ts";
import { readRuntime, runtimeMarker, vmProcessAlive, type RuntimeRecord } from "./runtime.ts";
import type { WorkspaceState } from "./events.ts";

export interface DeleteWorkspaceOptions extends WorkspaceAccessOptions {
  /** Kill a running VM first instead of refusing. */
  force?: boolean;
  /**
   * With `force`: a graceful kill through the supervisor (it records `stopped`), called WITHOUT the
   * workspace lock held (the supervisor needs it to record). Whatever is still alive afterwards is
   * SIGKILLed directly.
   */
  kill?: (paths: WorkspacePaths) => Promise<void>;
  lockTimeoutMs?: number;
}

export interface DeleteResult {
  name: string;
  /** False when the workspace did not exist (delete is idempotent). */
  deleted: boolean;
  /** True when a running VM was killed first (force). */
  killed: boolean;
  previousState?: WorkspaceState;
}

export async function deleteWorkspace(name: string, options: DeleteWorkspaceOptions = {}): Promise<DeleteResult> {
  const paths = workspacePaths(options.stateDir ?? defaultStateDir(), name);
  if (!(await workspaceExists(paths))) return { name, deleted: false, killed: false };
  let killed = false;
  if (options.force && options.kill) {
    const runtime = await readRuntime(paths).catch(() => undefined);
    if (runtime && vmProcessAlive(runtime)) {
      await options.kill(paths).catch(() => {}); // the direct kill below covers a failed graceful one
      killed = true;
    }
  }
  let lock;
  try {
    lock = await lockWorkspace(paths, { purpose: "delete", ...(options.lockTimeoutMs !== undefined ? { timeoutMs: options.lockTimeoutMs } : {}) });
  } catch (e) {
    if (WorkspaceErrors.WORKSPACE_NOT_FOUND.is(e)) return { name, deleted: false, killed };
    throw e;
  }
  try {
    // A fork's disk is layered on a snapshot layer in this directory: deleting it would break the fork.
    const forks = await forksOf(name, options.stateDir ?? defaultStateDir());
    if (forks.length > 0) {
      throw WorkspaceErrors.SNAPSHOT_IN_USE({
        message: `cannot delete workspace ${name}: ${forks.map((f) => `${f.workspace} (from ${name}:${f.tag})`).join(", ")} ${forks.length === 1 ? "is a fork whose disk is" : "are forks whose disks are"} layered on its snapshots`,
        remediation: `Delete the fork${forks.length === 1 ? "" : "s"} first: ${forks.map((f) => `\`microagent delete ${f.workspace}\``).join(", ")}.`,
        details: { workspace: name, forks: forks.map((f) => f.workspace) },
      });
    }
    const { state } = await reconcile(paths, { lock }).catch(() => ({ state: undefined }));
    const runtime = await readRuntime(paths).catch(() => undefined);
    if (runtime && vmProcessAlive(runtime)) {
      if (!options.force) throw stillRunning(name, runtime);
      await killDirectly(runtime);
      killed = true;
    }
    const trash = join(workspacesRoot(options.stateDir ?? defaultStateDir()), `.trash-${name}-${randomBytes(4).toString("hex")}`);
    await rename(paths.dir, trash);
    await rm(trash, { recursive: true, force: true });
    await rm(paths.runtimeDir, { recursive: true, force: true });
    // Leftovers of deletes that crashed between the rename and the rm go with the next delete.
    await sweepTrash(options.stateDir ?? defaultStateDir());
    return { name, deleted: true, killed, ...(state ? { previousState: state.state } : {}) };
  } finally {
    await lock.release().catch(() => {});
  }
}

function stillRunning(name: string, runtime: RuntimeRecord) {
  const pids = [`supervisor pid ${runtime.supervisorPid}`, ...(runtime.vmmPid !== undefined ? [`VMM pid ${runtime.vmmPid}`] : [])].join(", ");
  return WorkspaceErrors.WORKSPACE_RUNNING({
    message: `cannot delete workspace ${name}: the VM is still running (${pids}); deleting it would orphan the process`,
    remediation: `Run \`microagent halt ${name}\` (clean, disk kept), \`microagent stop ${name}\` (graceful shutdown request) or \`microagent kill ${name}\` (hard termination), then \`microagent delete ${name}\`; or pass --force to kill it first.`,
    details: { workspace: name, supervisorPid: runtime.supervisorPid, vmmPid: runtime.vmmPid },
  });
}

/** SIGKILL the supervisor (so it records nothing more), then the VMM and its process group. */
async function killDirectly(runtime: RuntimeRecord): Promise<void> {
  const targets: RecordedProcess[] = [{ pid: runtime.supervisorPid, startTime: runtime.supervisorStartTime }];
  if (runtime.vmmPid !== undefined) targets.push({ pid: runtime.vmmPid, startTime: runtime.vmmStartTime, group: true });
  const { survivors } = await stopRecordedProcesses(targets, { marker: runtimeMarker(runtime), waitMs: 10_000 });
  if (survivors.length > 0) {
    throw WorkspaceErrors.WORKSPACE_RUNNING({
      message: `processes ${survivors.join(", ")} survived SIGKILL for 10 s`,
      remediation: `Check them with \`ps -o pid,stat,cmd -p ${survivors.join(",")}\` (a process in D state waits on I/O) and retry.`,
    });
  }
}

/** Remove `.trash-*` directories a crashed delete left behind. */
export async function sweepTrash(stateDir: string = defaultStateDir()): Promise<number> {
  const root = workspacesRoot(stateDir);
  let entries: string[];
  try {
    entries = await readdir(root);
  } catch (e) {
    if (isErrno(e, "ENOENT")) return 0;
    throw e;
  }
  const trash = entries.filter((e) => e.startsWith(".trash-"));
  for (const t of trash) await rm(join(root, t), { recursive: true, force: true });
  return trash.length;
}
