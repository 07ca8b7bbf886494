/** `events` and `logs` by workspace name: history, and following it as it grows. */
import { readFile } from "node:fs/promises";
import { openWorkspace, type WorkspaceAccessOptions } from "./access.ts";
import { followEventsFile, readEventsFile, type WorkspaceEvent } from "./events.ts";
import { reconcile } from "./reconcile.ts";
import { followBytes, readRotatedLog, rotatedLogPath } from "./serial.ts";
import type { WorkspaceState } from "./events.ts";

export interface FollowWorkspaceOptions extends WorkspaceAccessOptions {
  signal?: AbortSignal;
  /** Poll interval, ms (default 100 for events, 100 for logs). */
  pollMs?: number;
}

/** The lifecycle history, oldest first (reconciled first, so a dead supervisor shows up). */
export async function readEvents(name: string, options: WorkspaceAccessOptions = {}): Promise<WorkspaceEvent[]> {
  const paths = await openWorkspace(name, options);
  await reconcile(paths);
  return readEventsFile(paths.events);
}

/**
 * The history, then each new event as it happens; ends after a new event reaches a settled state
 * (prepared, halted, stopped, quarantined, failed), or when `signal` aborts. Reconciles while it
 * waits, so following a workspace whose supervisor dies ends with the `failed` event.
 */
export async function* followEvents(name: string, options: FollowWorkspaceOptions = {}): AsyncGenerator<WorkspaceEvent> {
  const paths = await openWorkspace(name, options);
  await reconcile(paths);
  const ticker = new AbortController();
  const signal = options.signal ? AbortSignal.any([options.signal, ticker.signal]) : ticker.signal;
  // Reconcile in the background at a slow pace: it appends the failure event the follower then sees.
  const timer = setInterval(() => {
    reconcile(paths).catch(() => {});
  }, 1000);
  try {
    yield* followEventsFile(paths.events, { signal, ...(options.pollMs !== undefined ? { pollMs: options.pollMs } : {}) });
  } finally {
    clearInterval(timer);
    ticker.abort();
  }
}

/** The serial console log so far ("" when the workspace never booted), rotated part included. */
export async function readLogs(name: string, options: WorkspaceAccessOptions = {}): Promise<string> {
  return (await readLogBytes(name, options)).toString("utf8");
}

/** The serial console log so far as the guest wrote it (serial.log.1, then serial.log). */
export async function readLogBytes(name: string, options: WorkspaceAccessOptions = {}): Promise<Buffer> {
  const paths = await openWorkspace(name, options);
  await reconcile(paths);
  return readRotatedLog(paths.serialLog);
}

/** States in which the serial log may still grow. */
const GROWING: ReadonlySet<WorkspaceState> = new Set(["starting", "running", "stopping"]);

/**
 * The serial log so far, then what the guest prints next; ends once the workspace is no longer
 * starting/running/stopping (reconciled on each idle poll) and everything written is yielded.
 */
export async function* followLogs(name: string, options: FollowWorkspaceOptions = {}): AsyncGenerator<Buffer> {
  const paths = await openWorkspace(name, options);
  // What was rotated away before we started, then the current file as it grows (and rotates).
  const earlier = await readFile(rotatedLogPath(paths.serialLog)).catch(() => Buffer.alloc(0));
  if (earlier.length > 0) yield earlier;
  yield* followBytes(paths.serialLog, {
    rotatedPath: rotatedLogPath(paths.serialLog),
    ...(options.pollMs !== undefined ? { pollMs: options.pollMs } : {}),
    ...(options.signal ? { signal: options.signal } : {}),
    shouldStop: async () => {
      const { state } = await reconcile(paths);
      return !state || !GROWING.has(state.state);
    },
  });
}
