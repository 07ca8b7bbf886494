/**
 * The per-workspace exclusive lock. Every read-modify-write of a workspace's state happens under
 * it, so concurrent CLI calls and the supervisor serialize cleanly.
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
 * timeout and fails with WORKSPACE_LOCKED: pass the held handle instead.
 */
import { randomBytes } from "node:crypto";
import { link, open, readFile, rm, stat, writeFile } from "node:fs/promises";
import { resolve } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { z } from "zod";
import { WorkspaceErrors } from "./errors.ts";
import { FILE_MODE, isErrno, tempPathFor } from "../util/fs.ts";
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
  /** How long to wait for a held lock before failing with WORKSPACE_LOCKED. Default 15000. */
  timeoutMs?: number;
  /** Poll interval while waiting. Default 25. */
  pollMs?: number;
  signal?: AbortSignal;
}

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
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (e) {
    if (isErrno(e, "ENOENT")) return undefined;
    throw e;
  }
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
async function localAcquire(path: string, purpose: string, deadline: number, timeoutMs: number, signal?: AbortSignal): Promise<void> {
  const q = localHolders.get(path);
  if (!q) {
    localHolders.set(path, { holder: purpose, waiters: [] });
    return;
  }
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
      () =>
        giveUp(
          WorkspaceErrors.WORKSPACE_LOCKED({
            message: `workspace lock ${path} is held by this same process (${q.holder}); gave up after ${timeoutMs} ms`,
            details: { lock: path, holder: { pid: process.pid, purpose: q.holder } },
          }),
        ),
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

export async function acquireLock(lockPath: string, options: LockOptions = {}): Promise<LockHandle> {
  const path = resolve(lockPath);
  const timeoutMs = options.timeoutMs ?? 15000;
  const start = Date.now();
  await localAcquire(path, options.purpose ?? "workspace operation", start + timeoutMs, timeoutMs, options.signal);
  try {
    return await acquireFileLock(path, options, start + timeoutMs, timeoutMs);
  } catch (e) {
    localRelease(path);
    throw e;
  }
}

async function acquireFileLock(path: string, options: LockOptions, deadline: number, timeoutMs: number): Promise<LockHandle> {
  const pollMs = options.pollMs ?? 25;
  const self = selfIdentity();
  const record: LockRecord = {
    pid: self.pid,
    ...(self.startTime !== undefined ? { startTime: self.startTime } : {}),
    purpose: options.purpose ?? "workspace operation",
    acquiredAt: new Date().toISOString(),
    token: randomBytes(8).toString("hex"),
  };
  const tmp = tempPathFor(path);
  await writeFile(tmp, `${JSON.stringify(record)}\n`, { mode: FILE_MODE, flag: "wx" });
  let lastHolder: LockRecord | undefined;
  try {
    for (;;) {
      options.signal?.throwIfAborted();
      try {
        await link(tmp, path);
        return makeHandle(path, record);
      } catch (e) {
        if (!isErrno(e, "EEXIST")) throw e;
      }
      const holder = await readLockRecord(path);
      if (holder === undefined) continue; // released between our link and read: retry at once
      lastHolder = holder;
      if (holder.pid === self.pid && holder.startTime === self.startTime) {
        // Same process: waiting would deadlock (a nested acquire without passing the handle).
        throw WorkspaceErrors.WORKSPACE_INVARIANT({
          message: `lock ${path} is already held by this process (${holder.purpose}); pass the held lock instead of acquiring it again`,
        });
      }
      if (lockIsStale(holder)) {
        await takeOverStale(path, holder);
        continue;
      }
      if (Date.now() >= deadline) {
        throw WorkspaceErrors.WORKSPACE_LOCKED({
          message: `workspace is locked by pid ${holder.pid} (${holder.purpose}, since ${holder.acquiredAt}); gave up after ${timeoutMs} ms`,
          details: { lock: path, holder: lastHolder },
        });
      }
      await sleep(pollMs);
    }
  } finally {
    await rm(tmp, { force: true });
  }
}

/** Run `fn` with the lock held, releasing it however `fn` ends. */
export async function withLock<T>(path: string, options: LockOptions, fn: (lock: LockHandle) => Promise<T>): Promise<T> {
  const lock = await acquireLock(path, options);
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
