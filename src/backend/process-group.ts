/**
 * Stopping a VMM that runs in its own process group: SIGTERM the group, SIGKILL it after a grace
 * period, then give up after a hard cap (a process stuck in uninterruptible sleep cannot be reaped
 * by us; we report it instead of hanging forever). Timers and the kill function are injectable so
 * the timeline is unit-tested with a fake child.
 */
import type { VmExit } from "./types.ts";

export interface GroupTarget {
  /** The group leader's pid (the group id, since the child was spawned detached). */
  pid: number;
  exited: Promise<VmExit>;
}

export interface StopGroupOptions {
  /** Time between SIGTERM and SIGKILL. */
  graceMs?: number;
  /** Time to wait after SIGKILL before giving up. */
  hardCapMs?: number;
  /** Skip SIGTERM (a hard kill). */
  immediate?: boolean;
  /** @internal test seam */
  signal?: (pid: number, sig: NodeJS.Signals) => void;
  /** @internal test seam */
  setTimer?: (fn: () => void, ms: number) => { cancel(): void };
}

export const DEFAULT_GRACE_MS = 3000;
export const DEFAULT_HARD_CAP_MS = 5000;

/** Send a signal to a whole process group, ignoring "no such process" (it already ended). */
export function signalGroup(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(-pid, sig);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ESRCH") return;
    // The group may be gone while the leader lingers as a zombie; fall back to the leader.
    try {
      process.kill(pid, sig);
    } catch {
      /* already gone */
    }
  }
}

export class StopTimeoutError extends Error {}

export async function stopProcessGroup(target: GroupTarget, opts: StopGroupOptions = {}): Promise<VmExit> {
  const graceMs = opts.graceMs ?? DEFAULT_GRACE_MS;
  const hardCapMs = opts.hardCapMs ?? DEFAULT_HARD_CAP_MS;
  const send = opts.signal ?? signalGroup;
  const setTimer =
    opts.setTimer ??
    ((fn: () => void, ms: number) => {
      const t = setTimeout(fn, ms);
      return { cancel: () => clearTimeout(t) };
    });
  const waitFor = (ms: number): Promise<VmExit | "timeout"> =>
    new Promise((resolve) => {
      const timer = setTimer(() => resolve("timeout"), ms);
      void target.exited.then((exit) => {
        timer.cancel();
        resolve(exit);
      });
    });

  if (!opts.immediate) {
    send(target.pid, "SIGTERM");
    const first = await waitFor(graceMs);
    if (first !== "timeout") return first;
  }
  send(target.pid, "SIGKILL");
  const second = await waitFor(hardCapMs);
  if (second !== "timeout") return second;
  throw new StopTimeoutError(`process group ${target.pid} did not exit ${hardCapMs} ms after SIGKILL`);
}
