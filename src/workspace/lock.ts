/**
 * The per-workspace exclusive lock: the shared lock of src/util/lock.ts reporting WORKSPACE_LOCKED
 * (held elsewhere until the timeout) and WORKSPACE_INVARIANT (a nested acquire in one process).
 */
import { acquireLock as acquireFileLock, withLock as withFileLock, type LockErrors, type LockHandle, type LockOptions } from "../util/lock.ts";
import { WorkspaceErrors } from "./errors.ts";

export { LockRecordSchema, lockIsStale, readLockRecord } from "../util/lock.ts";
export type { LockHandle, LockOptions, LockRecord } from "../util/lock.ts";

const DEFAULT_PURPOSE = "workspace operation";

export const workspaceLockErrors: LockErrors = {
  busy: ({ path, holder, timeoutMs }) =>
    WorkspaceErrors.WORKSPACE_LOCKED({
      message: `workspace is locked by pid ${holder.pid} (${holder.purpose}, since ${holder.acquiredAt}); gave up after ${timeoutMs} ms`,
      details: { lock: path, holder },
    }),
  busyHere: ({ path, purpose, timeoutMs }) =>
    WorkspaceErrors.WORKSPACE_LOCKED({
      message: `workspace lock ${path} is held by this same process (${purpose}); gave up after ${timeoutMs} ms`,
      details: { lock: path, holder: { pid: process.pid, purpose } },
    }),
  heldBySelf: ({ path, holder }) =>
    WorkspaceErrors.WORKSPACE_INVARIANT({
      message: `lock ${path} is already held by this process (${holder.purpose}); pass the held lock instead of acquiring it again`,
    }),
};

export function acquireLock(path: string, options: LockOptions = {}): Promise<LockHandle> {
  return acquireFileLock(path, { ...options, purpose: options.purpose ?? DEFAULT_PURPOSE }, workspaceLockErrors);
}

/** Run `fn` with the lock held, releasing it however `fn` ends. */
export function withLock<T>(path: string, options: LockOptions, fn: (lock: LockHandle) => Promise<T>): Promise<T> {
  return withFileLock(path, { ...options, purpose: options.purpose ?? DEFAULT_PURPOSE }, workspaceLockErrors, fn);
}
