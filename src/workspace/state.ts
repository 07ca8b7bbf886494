/**
 * The workspace state machine. `TRANSITIONS` is the whole table; `transition()` is the only writer
 * of `state.json` and `events.jsonl`. It checks invariants first (the pair is allowed, the identity
 * names this workspace, a failure says why, the caller's view of the current state is still true),
 * then appends the event and rewrites state.json atomically, all under the workspace lock.
 *
 * The event log is the source of truth; state.json is a cache of its last line so that `list` reads
 * one small file per workspace. A crash between the two writes leaves state.json one step behind:
 * `readState` prefers the newest event when it is newer than state.json.
 */
import { readFile } from "node:fs/promises";
import { z } from "zod";
import { WorkspaceErrors } from "./errors.ts";
import { appendEvent, lastEvent, WorkspaceStateSchema, IdentitySchema, type Identity, type WorkspaceEvent, type WorkspaceState } from "./events.ts";
import { isErrno, writeJsonAtomic } from "../util/fs.ts";
import { acquireLock, type LockHandle } from "./lock.ts";
import type { WorkspacePaths } from "./paths.ts";

export { WORKSPACE_STATES, WorkspaceStateSchema, SETTLED_STATES } from "./events.ts";
export type { WorkspaceState, Identity, WorkspaceEvent } from "./events.ts";

/**
 * Allowed transitions. Read as "from -> the states it may move to".
 * - start: prepared/halted/stopped/failed -> starting -> running (or failed when boot fails).
 * - halt/stop/kill: running -> stopping -> halted (halt) / stopped (stop, kill).
 * - the workload exits: running -> stopped (code 0) / failed (non-zero, detail says why).
 * - pause/resume: running -> paused -> running (vCPUs frozen; memory, disk, flows kept). From paused:
 *   kill -> stopping/stopped, halt/stop -> stopping (the supervisor resumes the guest to ask it to
 *   power off), quarantine -> quarantined (stays frozen), a dead VM or supervisor -> failed.
 * - quarantine: running, paused or starting -> quarantined; halt/stop/kill of a quarantined workspace ->
 *   stopping/halted/stopped. `start` of a quarantined one is refused (see assertCanStart).
 * - reconcile: starting/running/stopping whose supervisor or VMM died -> failed (or stopped when a
 *   clean result exists).
 */
export const TRANSITIONS: Readonly<Record<WorkspaceState, readonly WorkspaceState[]>> = {
  prepared: ["starting"],
  starting: ["running", "stopping", "stopped", "failed", "quarantined"],
  running: ["paused", "stopping", "stopped", "failed", "quarantined"],
  paused: ["running", "stopping", "stopped", "failed", "quarantined"],
  stopping: ["halted", "stopped", "failed"],
  halted: ["starting"],
  stopped: ["starting"],
  failed: ["starting"],
  quarantined: ["stopping", "halted", "stopped"],
};

/** States in which a VM (and its supervisor) is expected to exist. */
export const LIVE_STATES: ReadonlySet<WorkspaceState> = new Set(["starting", "running", "paused", "stopping", "quarantined"]);
/** States from which `start` may boot the workspace. */
export const STARTABLE_STATES: ReadonlySet<WorkspaceState> = new Set(["prepared", "halted", "stopped", "failed"]);

export function canTransition(from: WorkspaceState, to: WorkspaceState): boolean {
  return TRANSITIONS[from].includes(to);
}

export const StateRecordSchema = z.object({
  state: WorkspaceStateSchema,
  observedAt: z.string(),
  detail: z.string(),
  identity: IdentitySchema,
});
export type StateRecord = z.infer<typeof StateRecordSchema>;

/** The current state, or undefined when the workspace has no state yet (or does not exist). */
export async function readState(paths: Pick<WorkspacePaths, "state" | "events">): Promise<StateRecord | undefined> {
  let cached: StateRecord | undefined;
  try {
    const parsed = StateRecordSchema.safeParse(JSON.parse(await readFile(paths.state, "utf8")));
    if (!parsed.success) {
      throw WorkspaceErrors.WORKSPACE_CORRUPT({ message: `${paths.state} is not a state record: ${parsed.error.issues[0]?.message ?? "invalid"}` });
    }
    cached = parsed.data;
  } catch (e) {
    if (!isErrno(e, "ENOENT") && !(e instanceof SyntaxError)) throw e;
  }
  const last = await lastEvent(paths.events);
  if (last && (!cached || last.observedAt > cached.observedAt)) return last;
  return cached;
}

export interface TransitionOptions {
  /** Why (required for failed and quarantined). */
  detail?: string;
  identity?: Partial<Identity>;
  /** Compare-and-set: fail with WORKSPACE_STATE_CHANGED unless the current state is one of these. */
  expectFrom?: WorkspaceState | readonly WorkspaceState[];
  /** A lock the caller already holds on this workspace; otherwise one is taken for the write. */
  lock?: LockHandle;
  /** Lock wait when this call takes the lock itself. */
  lockTimeoutMs?: number;
  /** Override the observation time (tests); default now. */
  observedAt?: Date;
}

/**
 * Move a workspace to `to`: check invariants, append the event, rewrite state.json.
 * Returns the new record. Throws WORKSPACE_INVALID_TRANSITION for a pair the table refuses.
 */
export async function transition(paths: WorkspacePaths, to: WorkspaceState, options: TransitionOptions = {}): Promise<StateRecord> {
  if (options.lock && (options.lock.released || options.lock.path !== paths.lock)) {
    throw WorkspaceErrors.WORKSPACE_INVARIANT({ message: `transition of ${paths.name} to ${to} was handed a lock that is not held on this workspace` });
  }
  const lock = options.lock ?? (await acquireLock(paths.lock, { purpose: `transition to ${to}`, timeoutMs: options.lockTimeoutMs }));
  try {
    const current = await readState(paths);
    return await writeTransition(paths, current, to, options);
  } finally {
    if (!options.lock) await lock.release();
  }
}

/** Record the very first state of a new workspace (prepared). Caller holds the lock. */
export async function recordInitialState(paths: WorkspacePaths, options: Omit<TransitionOptions, "expectFrom"> & { lock: LockHandle }): Promise<StateRecord> {
  const current = await readState(paths);
  if (current) {
    throw WorkspaceErrors.WORKSPACE_INVARIANT({ message: `workspace ${paths.name} already has state ${current.state}; the initial state is recorded once` });
  }
  return writeTransition(paths, undefined, "prepared", options);
}

async function writeTransition(paths: WorkspacePaths, current: StateRecord | undefined, to: WorkspaceState, options: TransitionOptions): Promise<StateRecord> {
  const name = paths.name;
  // Invariant 1: the caller's view still holds (another command may have moved it meanwhile).
  if (options.expectFrom !== undefined) {
    const expected = typeof options.expectFrom === "string" ? [options.expectFrom] : options.expectFrom;
    if (!current || !expected.includes(current.state)) {
      throw WorkspaceErrors.WORKSPACE_STATE_CHANGED({
        message: `workspace ${name} is ${current?.state ?? "without state"}, expected ${expected.join(" or ")}`,
        details: { workspace: name, state: current?.state, expected },
      });
    }
  }
  // Invariant 2: the pair is in the table.
  if (current) {
    if (current.state === "quarantined" && to === "starting") throw quarantinedError(name);
    if (!canTransition(current.state, to)) {
      throw WorkspaceErrors.WORKSPACE_INVALID_TRANSITION({
        message: `workspace ${name} cannot go from ${current.state} to ${to}`,
        details: { workspace: name, from: current.state, to, allowed: TRANSITIONS[current.state] },
      });
    }
  } else if (to !== "prepared") {
    throw WorkspaceErrors.WORKSPACE_NOT_FOUND({ message: `workspace ${name} has no recorded state (not created, or its state files are gone)` });
  }
  // Invariant 3: the identity names this workspace.
  if (options.identity?.workspace !== undefined && options.identity.workspace !== name) {
    throw WorkspaceErrors.WORKSPACE_INVARIANT({ message: `event identity names workspace ${options.identity.workspace}, but the transition is on ${name}` });
  }
  // Invariant 4: a failure or a quarantine always says why.
  const detail = options.detail?.trim() ?? "";
  if ((to === "failed" || to === "quarantined") && detail === "") {
    throw WorkspaceErrors.WORKSPACE_INVARIANT({ message: `a transition of ${name} to ${to} must carry a detail saying why` });
  }
  // Invariant 5: time never runs backwards in the log (clock steps would reorder `readState`).
  let observed = options.observedAt ?? new Date();
  if (current && observed.toISOString() <= current.observedAt) observed = new Date(Date.parse(current.observedAt) + 1);
  const identity: Identity = {
    workspace: name,
    ...(options.identity?.runtimeId !== undefined ? { runtimeId: options.identity.runtimeId } : {}),
    ...(options.identity?.requestId !== undefined ? { requestId: options.identity.requestId } : {}),
  };
  const record: WorkspaceEvent = { state: to, observedAt: observed.toISOString(), detail: detail || defaultDetail(current?.state, to), identity };
  await appendEvent(paths.events, record);
  await writeJsonAtomic(paths.state, record);
  return record;
}

function defaultDetail(from: WorkspaceState | undefined, to: WorkspaceState): string {
  return from ? `${from} -> ${to}` : `created (${to})`;
}

export function quarantinedError(name: string) {
  return WorkspaceErrors.WORKSPACE_QUARANTINED({
    message: `workspace ${name} is quarantined: start is refused until it is halted, stopped or killed`,
    remediation: `Run \`microagent halt ${name}\` (or \`microagent stop ${name}\` / \`microagent kill ${name}\`), then \`microagent start ${name}\`.`,
    details: { workspace: name, state: "quarantined" },
  });
}

/**
 * Throw the right error unless a workspace in `state` may be started: quarantined gets the seed's
 * wording, a live one says it is already running, anything else names the state.
 */
export function assertCanStart(name: string, state: WorkspaceState): void {
  if (STARTABLE_STATES.has(state)) return;
  if (state === "quarantined") throw quarantinedError(name);
  if (state === "paused") {
    throw WorkspaceErrors.WORKSPACE_PAUSED({
      message: `cannot start workspace ${name}: it is paused (its vCPUs are frozen, memory and disk kept)`,
      remediation: `Run \`microagent resume ${name}\` to thaw it.`,
      details: { workspace: name, state },
    });
  }
  throw WorkspaceErrors.WORKSPACE_INVALID_TRANSITION({
    message: `cannot start workspace ${name} from state ${state}${LIVE_STATES.has(state) ? ": it is already running" : ""}`,
    remediation: `Run \`microagent status ${name}\`; a running workspace needs no start (use \`microagent halt ${name}\` first to restart it).`,
    details: { workspace: name, state },
  });
}
