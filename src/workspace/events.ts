/**
 * The append-only event log (`events.jsonl`): one JSON object per line, oldest first. Each line is
 * written with a single append(2) on an O_APPEND descriptor, so concurrent writers never interleave
 * inside a line. A final line without its newline is a write cut short by a crash: readers ignore it.
 */
import { appendFile, open, readFile, stat } from "node:fs/promises";
import { z } from "zod";
import { WorkspaceErrors } from "./errors.ts";
import { FILE_MODE, isErrno } from "../util/fs.ts";
import { followBytes } from "./serial.ts";

export const WORKSPACE_STATES = [
  "prepared",
  "starting",
  "running",
  "paused",
  "stopping",
  "halted",
  "stopped",
  "quarantined",
  "failed",
] as const;
export const WorkspaceStateSchema = z.enum(WORKSPACE_STATES);
export type WorkspaceState = z.infer<typeof WorkspaceStateSchema>;

/** Who caused a change: the workspace, the VM run (one per boot) and the request that asked for it. */
export const IdentitySchema = z.object({
  workspace: z.string(),
  runtimeId: z.string().optional(),
  requestId: z.string().optional(),
});
export type Identity = z.infer<typeof IdentitySchema>;

export const WorkspaceEventSchema = z.object({
  state: WorkspaceStateSchema,
  /** ISO-8601 time the state was observed. */
  observedAt: z.string(),
  /** Why: free text for humans ("workload exited with code 3", "supervisor pid 123 is gone"). */
  detail: z.string(),
  identity: IdentitySchema,
});
export type WorkspaceEvent = z.infer<typeof WorkspaceEventSchema>;

/** States a follower stops at: nothing more happens until someone acts. */
export const SETTLED_STATES: ReadonlySet<WorkspaceState> = new Set(["prepared", "halted", "stopped", "quarantined", "failed"]);

export async function appendEvent(eventsPath: string, event: WorkspaceEvent): Promise<void> {
  const checked = WorkspaceEventSchema.parse(event);
  await appendFile(eventsPath, `${JSON.stringify(checked)}\n`, { mode: FILE_MODE, flag: "a" });
}

/**
 * One damaged line of the history need not cost the workspace: the disk and the other events are
 * intact, and state.json caches the latest state. Say how to drop the line instead of only "delete".
 */
function repairHint(source: string, line: number): string {
  const quoted = `'${source.replaceAll("'", `'\\''`)}'`;
  return `Line ${line} of the workspace's event history is damaged; the disk and the other events are intact. Look at it (\`sed -n '${line}p' ${quoted}\`), then fix or remove it (\`sed -i '${line}d' ${quoted}\`) and retry; or delete the workspace.`;
}

/** Parse the complete lines of an events file; a torn last line is left for the next read. */
export function parseEvents(text: string, source = "events.jsonl"): WorkspaceEvent[] {
  const out: WorkspaceEvent[] = [];
  const end = text.lastIndexOf("\n");
  if (end < 0) return out;
  const lines = text.slice(0, end).split("\n");
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i] as string;
    if (line.trim() === "") continue;
    let parsed: unknown;
    try {
      parsed = JSON.parse(line);
    } catch (e) {
      throw WorkspaceErrors.WORKSPACE_CORRUPT({
        message: `${source} line ${i + 1} is not JSON`,
        remediation: repairHint(source, i + 1),
        cause: e,
        details: { path: source, line: i + 1 },
      });
    }
    const result = WorkspaceEventSchema.safeParse(parsed);
    if (!result.success) {
      throw WorkspaceErrors.WORKSPACE_CORRUPT({
        message: `${source} line ${i + 1} is not a workspace event: ${result.error.issues[0]?.message ?? "invalid"}`,
        remediation: repairHint(source, i + 1),
        details: { path: source, line: i + 1 },
      });
    }
    out.push(result.data);
  }
  return out;
}

/** Every event, oldest first. A missing file is an empty history. */
export async function readEventsFile(eventsPath: string): Promise<WorkspaceEvent[]> {
  try {
    return parseEvents(await readFile(eventsPath, "utf8"), eventsPath);
  } catch (e) {
    if (isErrno(e, "ENOENT")) return [];
    throw e;
  }
}

/** The newest event, reading only the tail of the file. */
export async function lastEvent(eventsPath: string): Promise<WorkspaceEvent | undefined> {
  let fh;
  try {
    fh = await open(eventsPath, "r");
  } catch (e) {
    if (isErrno(e, "ENOENT")) return undefined;
    throw e;
  }
  try {
    const { size } = await fh.stat();
    // Events are small (< 1 KiB usually); read a generous tail and fall back to the whole file.
    const want = Math.min(size, 16384);
    const buf = Buffer.alloc(want);
    await fh.read(buf, 0, want, size - want);
    let text = buf.toString("utf8");
    if (want < size) text = text.slice(text.indexOf("\n") + 1);
    const events = parseEvents(text, eventsPath);
    if (events.length === 0 && want < size) return (await readEventsFile(eventsPath)).at(-1);
    return events.at(-1);
  } finally {
    await fh.close();
  }
}

export interface FollowOptions {
  /** Poll interval, ms. Default 100. */
  pollMs?: number;
  /** Stop after yielding an event whose state is settled (default true). */
  untilSettled?: boolean;
  /** Skip events already in the file; yield only new ones (default false: history first). */
  onlyNew?: boolean;
  signal?: AbortSignal;
}

/**
 * Yield the history, then every new event as it is appended. Polls the file size (fs.watch is
 * unreliable across filesystems and misses appends on some). Stops after the first NEW event that
 * is a settled state (the history alone never ends it: following a halted workspace waits for its
 * next start to settle, like tail -f), unless told otherwise, or when `signal` aborts.
 */
export async function* followEventsFile(eventsPath: string, options: FollowOptions = {}): AsyncGenerator<WorkspaceEvent> {
  const untilSettled = options.untilSettled ?? true;
  // The history is what the file holds now: skipped with onlyNew, else yielded first but never
  // ending the follow. After a truncation (workspace deleted and re-created) everything is new.
  const historyBytes = (await stat(eventsPath).catch(() => undefined))?.size ?? 0;
  let consumed = options.onlyNew ? historyBytes : 0;
  let restarted = false;
  let pending: Buffer = Buffer.alloc(0);
  const chunks = followBytes(eventsPath, {
    fromOffset: consumed,
    signal: options.signal,
    ...(options.pollMs !== undefined ? { pollMs: options.pollMs } : {}),
    onRestart: () => {
      restarted = true;
      pending = Buffer.alloc(0);
    },
  });
  for await (const chunk of chunks) {
    pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
    const cut = pending.lastIndexOf(0x0a);
    if (cut < 0) continue;
    const lines = pending.subarray(0, cut + 1);
    pending = pending.subarray(cut + 1);
    consumed += lines.length;
    const history = !restarted && consumed <= historyBytes;
    for (const ev of parseEvents(lines.toString("utf8"), eventsPath)) {
      yield ev;
      if (untilSettled && SETTLED_STATES.has(ev.state) && !history) return;
    }
  }
}
