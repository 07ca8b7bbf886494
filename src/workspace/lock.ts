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
 */
import { link, open, readFile, rm, stat, writeFile } from "node:fs/promises";
import { setTimeout as sleep } from "node:timers/promises";
import { z } from "zod";
import { WorkspaceErrors } from "./errors.ts";
import { FILE_MODE, isErrno, tempPathFor } from "./fsutil.ts";
import { processAlive, selfIdentity } from "./process.ts";

export const LockRecordSchema = z.object({
  pid: z.number().int().positive(),
  startTime: z.number().optional(),
  purpose: z.string(),
  acquiredAt: z.string(),
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

export async function acquireLock(path: string, options: LockOptions = {}): Promise<LockHandle> {
  const timeoutMs = options.timeoutMs ?? 15000;
  const pollMs = options.pollMs ?? 25;
  const self = selfIdentity();
  const record: LockRecord = {
    pid: self.pid,
    ...(self.startTime !== undefined ? { startTime: self.startTime } : {}),
    purpose: options.purpose ?? "workspace operation",
    acquiredAt: new Date().toISOString(),
  };
  const tmp = tempPathFor(path);
  await writeFile(tmp, `${JSON.stringify(record)}\n`, { mode: FILE_MODE, flag: "wx" });
  const deadline = Date.now() + timeoutMs;
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
      const current = await readLockRecord(path);
      // Never remove a lock someone else took over (ours was judged stale: should not happen
      // while we live, but a paused process can look dead to nobody... be safe anyway).
      if (current && current.pid === record.pid && current.acquiredAt === record.acquiredAt) {
        await rm(path, { force: true });
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
