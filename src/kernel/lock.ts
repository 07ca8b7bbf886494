/**
 * An install lock per kernel directory: two `microagent run`s racing to install the default kernel
 * must not interleave. O_EXCL lock file holding the owner's pid; a lock whose owner is dead is stale
 * and taken over.
 */
import { open, readFile, rm } from "node:fs/promises";
import { KernelErrors } from "./errors.ts";
import { ensureDir } from "../util/fs.ts";
import { dirname } from "node:path";

export interface LockOptions {
  timeoutMs?: number;
  /** Called once when the lock is busy and we start waiting. */
  onWait?: (ownerPid: number | undefined) => void;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** Take the lock at `path`; resolves with a release function. */
export async function acquireLock(path: string, opts: LockOptions = {}): Promise<() => Promise<void>> {
  await ensureDir(dirname(path));
  const deadline = Date.now() + (opts.timeoutMs ?? 15 * 60_000);
  let warned = false;
  for (;;) {
    try {
      const fh = await open(path, "wx", 0o600);
      await fh.writeFile(`${process.pid}\n`);
      await fh.close();
      return async () => {
        await rm(path, { force: true });
      };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
    }
    const owner = Number.parseInt((await readFile(path, "utf8").catch(() => "")).trim(), 10);
    if (Number.isInteger(owner) && owner > 0 && !alive(owner)) {
      // The owner died without releasing: take the lock over.
      await rm(path, { force: true });
      continue;
    }
    if (!warned) {
      opts.onWait?.(Number.isInteger(owner) ? owner : undefined);
      warned = true;
    }
    if (Date.now() >= deadline) {
      throw KernelErrors.KERNEL_INSTALL_LOCKED({
        message: `another process${Number.isInteger(owner) ? ` (pid ${owner})` : ""} holds the kernel install lock ${path}`,
        details: { path, ownerPid: Number.isInteger(owner) ? owner : undefined },
      });
    }
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}
