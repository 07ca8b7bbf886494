/**
 * The install lock per kernel directory: two `microagent run`s racing to install the default kernel
 * must not interleave. The shared lock of src/util/lock.ts (a dead owner's lock is stale and taken
 * over), reporting KERNEL_INSTALL_LOCKED when it stays held.
 */
import { dirname } from "node:path";
import { ensureDir } from "../util/fs.ts";
import { acquireLock as acquireFileLock, type LockErrors } from "../util/lock.ts";
import { KernelErrors } from "./errors.ts";

export interface LockOptions {
  timeoutMs?: number;
  /** Called once when the lock is busy and we start waiting. */
  onWait?: (ownerPid: number | undefined) => void;
}

function locked(path: string, ownerPid: number) {
  return KernelErrors.KERNEL_INSTALL_LOCKED({
    message: `another process (pid ${ownerPid}) holds the kernel install lock ${path}`,
    details: { path, ownerPid },
  });
}

const kernelLockErrors: LockErrors = {
  busy: ({ path, holder }) => locked(path, holder.pid),
  busyHere: ({ path }) => locked(path, process.pid),
  heldBySelf: ({ path }) => locked(path, process.pid),
};

/** Take the lock at `path`; resolves with a release function. */
export async function acquireLock(path: string, opts: LockOptions = {}): Promise<() => Promise<void>> {
  await ensureDir(dirname(path));
  const handle = await acquireFileLock(
    path,
    { purpose: "kernel install", timeoutMs: opts.timeoutMs ?? 15 * 60_000, pollMs: 200, onWait: (holder) => opts.onWait?.(holder.pid) },
    kernelLockErrors,
  );
  return () => handle.release();
}
