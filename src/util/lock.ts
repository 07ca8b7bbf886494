/**
 * An exclusive lock file shared by every area (workspaces, the image index, kernel installs, the rootfs cache). Every
 * read-modify-write of shared state happens under one, so concurrent CLI calls and the supervisor
 * serialize cleanly. Each area names its own errors through `LockErrors` (WORKSPACE_LOCKED,
 * KERNEL_INSTALL_LOCKED, ...), so callers keep seeing their area's codes.
 *
 * Acquire: write the holder record ({pid, startTime, purpose, acquiredAt}) to a private temp file,
 * then link(2) it to `lock`. link fails with EEXIST when the lock exists, atomically, like O_EXCL
 * creation, and a reader never sees an empty or half-written lock file.
 *
 * Stale locks: a lock whose holder process is gone (pid missing, or reused by a process with a
 * different start time) is taken over. Takeover is itself serialized by a short-lived `lock.takeover`
 * file (O_EXCL) so two processes that both saw the same stale lock cannot both remove it, one of
 * them removing the lock the other just took.
 *
 * Within one process (the supervisor records transitions from several async paths) callers queue
 * on an in-process mutex per lock path first, so they wait for each other instead of finding
 * "their own" lock file. A nested acquire while holding the lock therefore waits until its
 * timeout and fails with the area's busy error: pass the held handle instead.

A lock file holding only a pid (older kernel install locks) is read as that pid's record.
 */
import { randomBytes } from "node:crypto";
import { link, open, rm, stat, writeFile } from "node:fs/promises";
import { resolve } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { z } from "zod";
import { FILE_MODE, isErrno, readTextIfExists, tempPathFor } from "./fs.ts";
import { processAlive, selfIdentity } from "./process.ts";

export const LockRecordSchema = z.object({
  pid: z.number().int().positive(),
  startTime: z.number().optional(),
  purpose: z.string(),
  acquiredAt: z.string(),
  /** Random per acquisition: tells our lock from a later one of the same process. */
  token: z.string().optional(),
});
export type LockRecord = z.infer<typeof LockRecordSchema>;

export interface LockOptions {
  /** What the holder is doing, shown to whoever waits ("delete", "transition running"). */
  purpose?: string;
  /** How long to wait for a held lock before failing with the area's busy error. Default 15000. */
  timeoutMs?: number;
  /** Poll interval while waiting. Default 25. */
  pollMs?: number;
  signal?: AbortSignal;
  /** Called once, when the lock is found held by another process and we start waiting. */
  onWait?: (holder: LockRecord) => void;
}

/** The errors an area reports for its locks (each keeps its own codes). */
export interface LockErrors {
  /** Another process kept the lock until the timeout. */
  busy(info: { path: string; holder: LockRecord; timeoutMs: number }): Error;
  /** Another caller in this same process kept the lock until the timeout. */
  busyHere(info: { path: string; purpose: string; timeoutMs: number }): Error;
  /** The lock file names this very process, but not through a handle we hold (a nested acquire). */
  heldBySelf(info: { path: string; holder: LockRecord; timeoutMs: number }): Error;
}

/** Used when the caller gives no purpose. */
const DEFAULT_PURPOSE = "lock holder";

export interface LockHandle {
  readonly path: string;
  readonly record: LockRecord;
  /** Release the lock (idempotent). Only removes the file if it is still ours. */
  release(): Promise<void>;
  readonly released: boolean;
}

/** A takeover guard older than this belongs to a process that died mid-takeover. */
const TAKEOVER_STALE_MS = 5000;

export async function readLockRecord(path: string): Promise<LockRecord | undefined> {
  const text = await readTextIfExists(path);
  if (text === undefined) return undefined;
  const legacyPid = /^\s*([1-9][0-9]*)\s*$/.exec(text)?.[1];
  if (legacyPid !== undefined) return { pid: Number(legacyPid), purpose: "unknown (pid-only lock file)", acquiredAt: "" };
  try {
    return LockRecordSchema.parse(JSON.parse(text));
  } catch {
    // Unparseable: written by something else. Report it as held by nobody we can check.
    return { pid: 0x7fffffff, purpose: "unreadable lock file", acquiredAt: "" };
  }
}

export function lockIsStale(record: LockRecord): boolean {
  return !processAlive(record.pid, record.startTime);
}

interface LocalQueue {
  holder: string;
  waiters: Array<() => void>;
}
const localHolders = new Map<string, LocalQueue>();

/** Wait for this process's turn on `path` (FIFO), up to `deadline`. */
async function localAcquire(path: string, purpose: string, deadline: number, timeoutMs: number, errors: LockErrors, options: LockOptions): Promise<void> {
  const { signal } = options;
  const q = localHolders.get(path);
  if (!q) {
    localHolders.set(path, { holder: purpose, waiters: [] });
    return;
  }
  options.onWait?.({ pid: process.pid, purpose: q.holder, acquiredAt: "" });
  await new Promise<void>((resolve, reject) => {
    const waiter = () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
      q.holder = purpose;
      resolve();
    };
    const giveUp = (e: unknown) => {
      const i = q.waiters.indexOf(waiter);
      if (i >= 0) q.waiters.splice(i, 1);
      signal?.removeEventListener("abort", onAbort);
      reject(e);
    };
    const onAbort = () => {
      clearTimeout(timer);
      giveUp(signal?.reason);
    };
    const timer = setTimeout(
      () => giveUp(errors.busyHere({ path, purpose: q.holder, timeoutMs })),
      Math.max(0, deadline - Date.now()),
    );
    signal?.addEventListener("abort", onAbort, { once: true });
    q.waiters.push(waiter);
  });
}

function localRelease(path: string): void {
  const q = localHolders.get(path);
  if (!q) return;
  const next = q.waiters.shift();
  if (next) next();
  else localHolders.delete(path);
}

/** Take the lock at `lockPath` (its directory must exist), waiting up to `options.timeoutMs`. */
export async function acquireLock(lockPath: string, options: LockOptions, errors: LockErrors): Promise<LockHandle> {
  return (await acquire(lockPath, options, errors, undefined)) as LockHandle;
}

/**
 * Like `acquireLock`, but while another process holds the lock, stop waiting as soon as `done()`
 * says that holder already produced what the lock guards: resolves undefined then (nothing held).
 */
export async function acquireLockUnlessDone(lockPath: string, done: () => boolean, options: LockOptions, errors: LockErrors): Promise<LockHandle | undefined> {
  return acquire(lockPath, options, errors, done);
}

async function acquire(lockPath: string, options: LockOptions, errors: LockErrors, done: (() => boolean) | undefined): Promise<LockHandle | undefined> {
  const path = resolve(lockPath);
  const timeoutMs = options.timeoutMs ?? 15000;
  const start = Date.now();
  let waited = false;
  // onWait fires at most once per acquire, whether we queue behind this process or wait on another.
  const once: LockOptions = {
    ...options,
    onWait: (holder) => {
      if (waited) return;
      waited = true;
      options.onWait?.(holder);
    },
  };
  await localAcquire(path, options.purpose ?? DEFAULT_PURPOSE, start + timeoutMs, timeoutMs, errors, once);
  try {
    const handle = await acquireFileLock(path, once, start + timeoutMs, timeoutMs, errors, done);
    if (handle === undefined) localRelease(path);
    return handle;
  } catch (e) {
    localRelease(path);
    throw e;
  }
}

async function acquireFileLock(
  path: string,
  options: LockOptions,
  deadline: number,
  timeoutMs: number,
  errors: LockErrors,
  done: (() => boolean) | undefined,
): Promise<LockHandle | undefined> {
  const pollMs = options.pollMs ?? 25;
  const self = selfIdentity();
  const record: LockRecord = {
    pid: self.pid,
    ...(self.startTime !== undefined ? { startTime: self.startTime } : {}),
    purpose: options.purpose ?? DEFAULT_PURPOSE,
    acquiredAt: new Date().toISOString(),
    token: randomBytes(8).toString("hex"),
  };
  const tmp = tempPathFor(path);
  await writeFile(tmp, `${JSON.stringify(record)}\n`, { mode: FILE_MODE, flag: "wx" });
  try {
    for (;;) {
      options.signal?.throwIfAborted();
      try {
        await link(tmp, path);
        return makeHandle(path, record);
      } catch (e) {
        if (!isErrno(e, "EEXIST")) throw e;
      }
      if (done?.()) return undefined;
      const holder = await readLockRecord(path);
      if (holder === undefined) continue; // released between our link and read: retry at once
      if (holder.pid === self.pid && holder.startTime === self.startTime) {
        // Same process: waiting would deadlock (a nested acquire without passing the handle).
        throw errors.heldBySelf({ path, holder, timeoutMs });
      }
      if (lockIsStale(holder)) {
        await takeOverStale(path, holder);
        continue;
      }
      options.onWait?.(holder);
      if (Date.now() >= deadline) throw errors.busy({ path, holder, timeoutMs });
      await sleep(pollMs);
    }
  } finally {
    await rm(tmp, { force: true });
  }
}

/** Run `fn` with the lock held, releasing it however `fn` ends. */
export async function withLock<T>(path: string, options: LockOptions, errors: LockErrors, fn: (lock: LockHandle) => Promise<T>): Promise<T> {
  const lock = await acquireLock(path, options, errors);
  try {
    return await fn(lock);
  } finally {
    await lock.release();
  }
}

function makeHandle(path: string, record: LockRecord): LockHandle {
  let released = false;
  return {
    path,
    record,
    get released() {
      return released;
    },
    async release() {
      if (released) return;
      released = true;
      try {
        const current = await readLockRecord(path);
        // Never remove a lock that is not ours (the directory may be gone or re-created).
        if (current && current.token === record.token && current.acquiredAt === record.acquiredAt) {
          await rm(path, { force: true });
        }
      } finally {
        localRelease(path);
      }
    },
  };
}

async function takeOverStale(path: string, stale: LockRecord): Promise<void> {
  const guard = `${path}.takeover`;
  let fh;
  try {
    fh = await open(guard, "wx", FILE_MODE);
  } catch (e) {
    if (!isErrno(e, "EEXIST")) throw e;
    // Someone else is taking over; if their guard is old they died doing it.
    try {
      const st = await stat(guard);
      if (Date.now() - st.mtimeMs > TAKEOVER_STALE_MS) await rm(guard, { force: true });
    } catch {
      // gone already
    }
    await sleep(10);
    return;
  }
  try {
    // Re-check under the guard: the lock may have been released or retaken meanwhile.
    const current = await readLockRecord(path);
    if (current && current.pid === stale.pid && current.acquiredAt === stale.acquiredAt && lockIsStale(current)) {
      await rm(path, { force: true });
    }
  } finally {
    await fh.close();
    await rm(guard, { force: true });
  }
}
