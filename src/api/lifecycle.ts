/**
 * Lifecycle operations on a workspace by name: start (spawn the supervisor and wait until the guest
 * is up), halt/stop/kill/quarantine (through the supervisor; directly when none is alive), wait,
 * and readiness. The Workspace facade and the CLI commands are thin layers over these.
 */
import { stopRecordedProcesses } from "../util/kill.ts";
import { randomUUID } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { openWorkspace, lockWorkspace, type WorkspaceAccessOptions } from "../workspace/access.ts";
import { readManifest, writeManifest } from "../workspace/manifest.ts";
import { defaultStateDir } from "../workspace/paths.ts";
import { validateSnapshotTag } from "../workspace/snapshots.ts";
import { getBackend } from "../backend/registry.ts";
import { checkRestore, prepareRestore, type RestorePlan } from "./snapshot-files.ts";
import { warmStart, type WarmStart } from "./warm.ts";
import type { WorkspacePaths } from "../workspace/paths.ts";
import { reconcile } from "../workspace/reconcile.ts";
import { readRuntime, runtimeLiveness, runtimeMarker, type RuntimeRecord } from "../workspace/runtime.ts";
import { pidExists } from "../util/process.ts";
import { readTail } from "../workspace/serial.ts";
import { assertCanStart, LIVE_STATES, quarantinedError, readState, transition, type StateRecord } from "../workspace/state.ts";
import { SETTLED_STATES, type WorkspaceState } from "../workspace/events.ts";
import { assertBootArtifactsVerified } from "../workspace/verify.ts";
import { SupervisorClient, type CallHandlers } from "../supervisor/client.ts";
import type { Op, OpRequestInput, OpResult } from "../supervisor/ops.ts";
import { SupervisorErrors } from "../supervisor/errors.ts";
import { runtimeRoot, spawnSupervisor, waitForSupervisorReady } from "../supervisor/spawn.ts";
import { chooseAccel } from "../supervisor/accel.ts";
import type { Readiness, SupervisorStatus } from "../supervisor/protocol.ts";
import { encodeSecretHandoff } from "../secrets/handoff.ts";
import type { SecretRef } from "../secrets/ref.ts";
import { resolveSecrets } from "../secrets/resolve.ts";

export interface LifecycleOptions extends WorkspaceAccessOptions {
  /** `--supervisor`: run this executable as the supervisor instead of the bundled one. */
  supervisorPath?: string;
  /** Correlates the events this call records. */
  requestId?: string;
}

export interface StartOptions extends LifecycleOptions {
  /** Boot even when the kernel or init diverged from the manifest. */
  force?: boolean;
  /**
   * Bound on the whole boot (launch to guest ready), enforced by the supervisor: a boot that overruns
   * it is killed and recorded `failed`. Default: the supervisor's 90 s (MICROAGENT_BOOT_TIMEOUT_MS).
   */
  timeoutMs?: number;
  /** Return as soon as the supervisor is spawned (do not wait for the guest). */
  detach?: boolean;
  /**
   * Restore this snapshot tag of the workspace instead of booting (`start --from-snapshot`): its
   * memory and devices, its disk as of the capture (what the disk got since is dropped).
   */
  fromSnapshot?: string;
  /**
   * `run`: restore the warm snapshot of this machine when the cache has one, else boot cold and capture
   * one after the hello (src/api/warm.ts). Only for a workspace's first boot.
   */
  warm?: boolean;
}

export interface StartResult {
  workspace: string;
  state: WorkspaceState;
  runtimeId: string;
  supervisorPid: number;
  status?: SupervisorStatus;
  /** Milliseconds from the start call to the guest accepting its boot config. */
  bootMs?: number;
  /** The accelerator the VM boots with, and why (the supervisor's choice; cached per host boot). */
  accel?: RuntimeRecord["accel"];
  accelReason?: string;
  /** Set when the VM was restored from a snapshot instead of booted. */
  restoredFrom?: { workspace: string; tag: string };
  /** With `warm`: whether the warm snapshot was restored (else one is captured during this boot). */
  warm?: { key: string; restored: boolean };
}

export const DEFAULT_START_TIMEOUT_MS = 120_000;
/**
 * How much longer than the boot bound `start` waits for the supervisor's verdict: the supervisor owns
 * the deadline (it kills the VM and records `failed`), and its answer must win over our own timer.
 */
const START_VERDICT_GRACE_MS = 15_000;

/** Boot a prepared/halted/stopped/failed workspace. Resolves once it is running. */
export async function startWorkspace(name: string, opts: StartOptions = {}): Promise<StartResult> {
  const started = Date.now();
  const paths = await openWorkspace(name, opts);
  const runtimeId = randomUUID();
  const requestId = opts.requestId ?? randomUUID();
  let pid: number;
  let handoff: Promise<void> = Promise.resolve();
  let restore: RestorePlan | undefined;
  let pendingFork = false;
  let warm: WarmStart | undefined;
  const lock = await lockWorkspace(paths, { purpose: "start" });
  try {
    const { state, runtime } = await reconcile(paths, { lock });
    if (!state) throw SupervisorErrors.NOT_RUNNING({ message: `workspace ${name} has no recorded state` });
    assertCanStart(name, state.state);
    await awaitPreviousSupervisor(runtime, name);
    const manifest = await readManifest(paths);
    const stateDir = opts.stateDir ?? defaultStateDir();
    const source = opts.fromSnapshot !== undefined ? { workspace: name, tag: validateSnapshotTag(opts.fromSnapshot) } : manifest.fromSnapshot?.pendingRestore ? { workspace: manifest.fromSnapshot.workspace, tag: manifest.fromSnapshot.tag } : undefined;
    // The snapshot's own check first: a changed kernel is a snapshot divergence before it is anything else.
    if (source) await checkRestore(paths, source, stateDir);
    await assertBootArtifactsVerified(name, manifest, state.state, { force: opts.force ?? false });
    if (source) {
      restore = await prepareRestore(paths, source, stateDir, getBackend(manifest.backend));
      pendingFork = manifest.fromSnapshot?.pendingRestore === true;
    } else if (opts.warm && state.state === "prepared") {
      warm = await warmStart(paths, manifest, stateDir, getBackend(manifest.backend)).catch(() => undefined);
      restore = warm?.restore;
    }
    // Secrets are resolved here, at every start, from the references the manifest keeps; a source
    // that fails refuses the start before anything is recorded or spawned (fail closed).
    const secrets = await secretsFrame(manifest.secrets ?? []);
    await transition(paths, "starting", { lock, detail: restore ? `start requested (restore ${restore.source}:${restore.tag})` : "start requested", identity: { runtimeId, requestId } }).catch((e: unknown) => {
      secrets?.fill(0);
      throw e;
    });
    try {
      const env: NodeJS.ProcessEnv = { ...process.env };
      // The boot bound travels to the supervisor, which enforces it (and reports it in its message).
      if (opts.timeoutMs !== undefined) env.MICROAGENT_BOOT_TIMEOUT_MS = String(Math.max(1, Math.round(opts.timeoutMs)));
      if (restore) env.MICROAGENT_RESTORE_JSON = JSON.stringify(restore);
      if (warm?.captureJson) env.MICROAGENT_WARM_CAPTURE_JSON = warm.captureJson;
      // An `env:` source is resolved already: the supervisor (and the VMM it spawns) never carry it.
      for (const ref of manifest.secrets ?? []) if (ref.source.kind === "env") delete env[ref.source.var];
      ({ pid, handoff } = spawnSupervisor(paths, {
        ...(opts.supervisorPath ? { supervisorPath: opts.supervisorPath } : {}),
        env,
        ...(secrets ? { secrets } : {}),
        runtimeId,
        requestId,
      }));
    } catch (e) {
      await transition(paths, "failed", { lock, detail: `the supervisor could not be started: ${(e as Error).message}`, identity: { runtimeId, requestId } });
      throw e;
    }
  } finally {
    await lock.release();
  }
  // Written before `start` returns (a detached start's CLI exits right after), outside the lock (a frame
  // larger than the pipe's buffer waits for the supervisor to read it). A failure here is also the
  // supervisor's, which refuses to boot without the secrets, and is reported through it.
  await handoff.catch(() => {});
  const warmResult = warm ? { warm: { key: warm.key, restored: warm.restore !== undefined } } : {};
  if (opts.detach) {
    // runtime.json is not written yet: report the same (cached) choice the supervisor is making.
    const choice = await chooseAccel(process.env, runtimeRoot());
    return { workspace: name, state: "starting", runtimeId, supervisorPid: pid, accel: choice.accel, accelReason: choice.reason, ...warmResult };
  }
  try {
    const status = await waitForSupervisorReady(paths, pid, opts.timeoutMs !== undefined ? opts.timeoutMs + START_VERDICT_GRACE_MS : DEFAULT_START_TIMEOUT_MS);
    const rt = await readRuntime(paths).catch(() => undefined);
    const accel = status.accel ?? rt?.accel;
    // A fork's first start has loaded its snapshot: from now on its own disk is what it boots from.
    if (pendingFork) await clearPendingRestore(paths).catch(() => {});
    return {
      workspace: name,
      state: "running",
      runtimeId,
      supervisorPid: pid,
      status,
      bootMs: Date.now() - started,
      accel,
      accelReason: rt?.accelReason,
      ...(restore ? { restoredFrom: { workspace: restore.source, tag: restore.tag } } : {}),
      ...warmResult,
    };
  } catch (e) {
    // Whatever happened, the record must not claim a live VM that is not there. A supervisor that
    // died before writing runtime.json is invisible to reconcile (it allows `starting` a grace
    // period), so record that end here.
    if (!pidExists(pid)) await recordSupervisorDeath(paths, pid, runtimeId, requestId).catch(() => {});
    await reconcile(paths).catch(() => {});
    throw e;
  }
}

/** The manifest's secrets resolved and framed for the supervisor; undefined when it names none. */
async function secretsFrame(refs: readonly SecretRef[]): Promise<Buffer | undefined> {
  if (refs.length === 0) return undefined;
  const resolved = await resolveSecrets(refs);
  try {
    return encodeSecretHandoff(resolved);
  } finally {
    for (const s of resolved) s.value.wipe();
  }
}

async function clearPendingRestore(paths: WorkspacePaths): Promise<void> {
  const lock = await lockWorkspace(paths, { purpose: "fork restored" });
  try {
    const m = await readManifest(paths);
    if (m.fromSnapshot?.pendingRestore) await writeManifest(paths, { ...m, fromSnapshot: { ...m.fromSnapshot, pendingRestore: false } });
  } finally {
    await lock.release();
  }
}

async function recordSupervisorDeath(paths: WorkspacePaths, pid: number, runtimeId: string, requestId: string): Promise<void> {
  const lock = await lockWorkspace(paths, { purpose: "start failed" });
  try {
    const cur = await readState(paths);
    const rt = await readRuntime(paths).catch(() => undefined);
    if (cur?.state !== "starting" || (rt && rt.runtimeId !== runtimeId)) return;
    const last = (await readTail(paths.supervisorLog, 1024)).trim().split("\n").at(-1) ?? "";
    await transition(paths, "failed", {
      lock,
      detail: `the supervisor (pid ${pid}) exited before the workspace was running${last ? `: ${last.slice(0, 300)}` : ""}`,
      identity: { runtimeId, requestId },
    });
  } finally {
    await lock.release();
  }
}

/**
 * The previous boot's supervisor records its final state a moment before it exits (it still closes
 * its sockets and clears runtime.json). A new boot waits for it so the two never share the socket
 * paths; one that does not go away is killed.
 */
async function awaitPreviousSupervisor(runtime: RuntimeRecord | undefined, name: string): Promise<void> {
  if (!runtime) return;
  for (let i = 0; i < 200; i++) {
    const live = runtimeLiveness(runtime);
    if (!live.supervisorAlive && live.vmmAlive !== true) return;
    await sleep(25);
  }
  void name;
  await killRuntimeProcesses(runtime);
}

/** The live supervisor of a workspace, or a clear error naming its state. */
export async function supervisorFor(name: string, opts: WorkspaceAccessOptions = {}): Promise<{ paths: WorkspacePaths; client: SupervisorClient; runtime: RuntimeRecord; state: StateRecord }> {
  const paths = await openWorkspace(name, opts);
  const { state, runtime } = await reconcile(paths);
  if (!state || !LIVE_STATES.has(state.state) || !runtime || !runtimeLiveness(runtime).supervisorAlive) {
    throw SupervisorErrors.NOT_RUNNING({
      message: `workspace ${name} is ${state?.state ?? "without state"}, not running`,
      remediation: `Start it first: \`microagent start ${name}\`.`,
      details: { workspace: name, state: state?.state },
    });
  }
  return { paths, client: new WorkspaceSupervisorClient(runtime.sockets.control, paths), runtime, state };
}

/**
 * The control client for one workspace. SUPERVISOR_UNREACHABLE is transient only while the supervisor
 * lives (busy, restarting its socket): when it is gone, and the VM with it, a retry can only fail. So
 * the workspace is reconciled first and the error names the state it really is in, not retryable.
 */
class WorkspaceSupervisorClient extends SupervisorClient {
  readonly #paths: WorkspacePaths;

  constructor(socketPath: string, paths: WorkspacePaths) {
    super(socketPath);
    this.#paths = paths;
  }

  override async call<K extends Op>(op: K, body: OpRequestInput<K>, handlers?: CallHandlers): Promise<OpResult<K>> {
    try {
      return await super.call(op, body, handlers);
    } catch (e) {
      throw await explainUnreachable(this.#paths, e);
    }
  }
}

async function explainUnreachable(paths: WorkspacePaths, e: unknown): Promise<unknown> {
  if (!SupervisorErrors.SUPERVISOR_UNREACHABLE.is(e)) return e;
  // A supervisor that just closed our connection may need a moment to be gone (or to be reaped).
  let outcome = await reconcile(paths).catch(() => undefined);
  for (let i = 0; i < 20 && outcome?.runtime && runtimeLiveness(outcome.runtime).supervisorAlive; i++) {
    await sleep(25);
    outcome = await reconcile(paths).catch(() => undefined);
  }
  if (!outcome || (outcome.runtime && runtimeLiveness(outcome.runtime).supervisorAlive)) return e;
  const state = outcome.state;
  return SupervisorErrors.NOT_RUNNING({
    message: `workspace ${paths.name} is ${state?.state ?? "without state"}: its supervisor is gone, so the request could not complete${state?.detail ? ` (${state.detail})` : ""}`,
    remediation: `Read \`microagent logs ${paths.name}\` and \`microagent status ${paths.name}\`, then start it again: \`microagent start ${paths.name}\`.`,
    cause: e,
    details: { workspace: paths.name, state: state?.state, unreachable: e.message },
  });
}

export interface StopResult {
  workspace: string;
  state: WorkspaceState;
  /** The state before the call. */
  previousState: WorkspaceState;
  /** False when nothing was running (the call changed nothing or only recorded the state). */
  changed: boolean;
}

type StopMode = "halt" | "stop" | "kill";

/**
 * halt: clean guest shutdown, disk kept -> halted. stop: graceful request, terminated after the
 * timeout -> stopped. kill: hard termination -> stopped. A quarantined workspace whose supervisor
 * is gone is moved on directly (its custody state is the only thing left to change).
 */
export async function stopWorkspace(name: string, mode: StopMode, opts: LifecycleOptions & { timeoutMs?: number } = {}): Promise<StopResult> {
  const paths = await openWorkspace(name, opts);
  const { state, runtime } = await reconcile(paths);
  if (!state) throw SupervisorErrors.NOT_RUNNING({ message: `workspace ${name} has no recorded state` });
  const previousState = state.state;
  const target: WorkspaceState = mode === "halt" ? "halted" : "stopped";
  if (SETTLED_STATES.has(previousState) && previousState !== "quarantined") {
    // Nothing runs: halt/stop/kill of a halted, stopped, failed or prepared workspace changes nothing.
    return { workspace: name, state: previousState, previousState, changed: false };
  }
  const alive = runtime ? runtimeLiveness(runtime) : undefined;
  if (runtime && alive?.supervisorAlive) {
    const client = new SupervisorClient(runtime.sockets.control);
    try {
      const value =
        mode === "kill"
          ? await client.kill()
          : await client.shutdown(mode, opts.timeoutMs).catch(async (e: unknown) => {
              throw await explainUnreachable(paths, e);
            });
      return { workspace: name, state: value.state, previousState, changed: true };
    } catch (e) {
      if (!SupervisorErrors.SUPERVISOR_UNREACHABLE.is(e) || mode !== "kill") throw e;
      // kill must work even when the supervisor is wedged: end its processes directly.
      await killRuntimeProcesses(runtime);
    }
  } else if (runtime && alive?.vmmAlive) {
    await killRuntimeProcesses(runtime);
  }
  // No supervisor: record the end ourselves when the state still claims a VM.
  const after = await readState(paths);
  if (after && (LIVE_STATES.has(after.state) || after.state === "quarantined")) {
    const lock = await lockWorkspace(paths, { purpose: mode });
    try {
      const cur = await readState(paths);
      if (cur && (LIVE_STATES.has(cur.state) || cur.state === "quarantined")) {
        const rec = await transition(paths, target, { lock, detail: `${mode}: no VM process was left running`, ...(opts.requestId ? { identity: { requestId: opts.requestId } } : {}) });
        return { workspace: name, state: rec.state, previousState, changed: true };
      }
    } finally {
      await lock.release();
    }
  }
  const final = (await readState(paths))?.state ?? previousState;
  return { workspace: name, state: final, previousState, changed: final !== previousState };
}

/** SIGKILL the recorded supervisor and VMM (after verifying each is ours), and wait up to 2 s for them to go. */
async function killRuntimeProcesses(runtime: RuntimeRecord): Promise<void> {
  await stopRecordedProcesses(
    [
      { pid: runtime.supervisorPid, startTime: runtime.supervisorStartTime },
      ...(runtime.vmmPid !== undefined ? [{ pid: runtime.vmmPid, startTime: runtime.vmmStartTime, group: true }] : []),
    ],
    { marker: runtimeMarker(runtime), waitMs: 2000 },
  );
}

/** Sever every host path into the guest; disk and events are kept; start is refused until halt/stop/kill. */
export async function quarantineWorkspace(name: string, opts: LifecycleOptions = {}): Promise<{ workspace: string; state: WorkspaceState; frozen: boolean }> {
  const { client } = await supervisorFor(name, opts);
  const value = await client.quarantine();
  return { workspace: name, state: value.state, frozen: value.frozen ?? false };
}

/**
 * Freeze (`pause`) or thaw (`resume`) the workspace's vCPUs through its supervisor; memory, disk,
 * network flows and the guest channel are kept. Idempotent: `changed` is false when it already was.
 */
export async function pauseWorkspace(name: string, action: "pause" | "resume", opts: LifecycleOptions = {}): Promise<{ workspace: string; state: WorkspaceState; changed: boolean; ms: number }> {
  const { client, state } = await supervisorFor(name, opts);
  if (state.state === "quarantined") throw quarantinedError(name);
  const value = action === "pause" ? await client.pause() : await client.resume();
  return { workspace: name, state: value.state, changed: value.changed, ms: Math.round(value.ms * 10) / 10 };
}

export interface WaitResult {
  workspace: string;
  state: WorkspaceState;
  /** True for stopped/halted/prepared; false for failed/quarantined. */
  ok: boolean;
  detail: string;
}

/** Block until the workspace reaches a settled state (each check reconciles). */
export async function waitWorkspace(name: string, opts: WorkspaceAccessOptions & { timeoutMs?: number; intervalMs?: number; signal?: AbortSignal } = {}): Promise<WaitResult> {
  const paths = await openWorkspace(name, opts);
  const deadline = opts.timeoutMs ? Date.now() + opts.timeoutMs : Infinity;
  for (;;) {
    const { state } = await reconcile(paths);
    if (state && SETTLED_STATES.has(state.state)) {
      return { workspace: name, state: state.state, ok: !["failed", "quarantined"].includes(state.state), detail: state.detail };
    }
    if (Date.now() >= deadline) {
      throw SupervisorErrors.WAIT_TIMEOUT({
        message: `workspace ${name} is still ${state?.state ?? "unknown"} after ${opts.timeoutMs} ms`,
        details: { workspace: name, state: state?.state },
      });
    }
    opts.signal?.throwIfAborted();
    await sleep(Math.min(opts.intervalMs ?? 200, Math.max(1, deadline - Date.now())));
  }
}

/** Readiness from real probes through the supervisor (handshake, exec round trip, shell). */
export async function probeReadiness(name: string, opts: WorkspaceAccessOptions & { timeoutMs?: number } = {}): Promise<Readiness> {
  const { client } = await supervisorFor(name, opts);
  return client.readiness(opts.timeoutMs);
}

/**
 * Seed 001's "Required mediation channel fails closed": after a start, the required `--mediation`
 * targets whose listener did not answer (the network service probed them in onRunning), as the
 * sentence the CLI prints; undefined when there are none (or the supervisor cannot say).
 */
export async function mediationWarning(name: string, opts: WorkspaceAccessOptions = {}): Promise<string | undefined> {
  try {
    const { client } = await supervisorFor(name, opts);
    const net = (await client.services()).network as { egress?: { mediation?: Array<{ guestPort: number; target: string; required: boolean; reachable: boolean | null; detail: string }> } } | undefined;
    const bad = (net?.egress?.mediation ?? []).filter((m) => m.required && m.reachable === false);
    if (bad.length === 0) return undefined;
    return `error: mediation channel required but unreachable: ${bad.map((m) => `${m.guestPort}=${m.detail}`).join(", ")}
  The workspace started, but readiness reports a mediationReady error and the channel is severed until a listener connects.
  Fix: stand up the mediation listener at ${bad.map((m) => m.target).join(", ")}; for development only, create the workspace with --mediation-optional.
`;
  } catch {
    return undefined;
  }
}

const BUILT_IN_PROBES = new Set(["guestReady", "execReady", "shellReady", "resultReady"]);

/** WS-STATE's `status` seam: readiness for a live runtime record. */
export async function readinessForRuntime(_paths: WorkspacePaths, runtime: RuntimeRecord): Promise<Record<string, unknown>> {
  const r = await new SupervisorClient(runtime.sockets.control).readiness(5000);
  // Service probes count too: a required mediation channel that does not answer (seed 001: "readiness
  // reports a mediationReady error") leaves the workspace running but not ready.
  const services = Object.entries(r).filter(([k]) => !BUILT_IN_PROBES.has(k)) as Array<[string, { ready: boolean; error?: string }]>;
  const failedService = services.find(([, p]) => p && typeof p === "object" && p.ready === false);
  const ready = r.guestReady.ready && r.execReady.ready && !failedService;
  // The first failing probe's error is the reason (e.g. DISK_FULL for a VM paused on a full host disk).
  const reason = ready ? undefined : (r.guestReady.error ?? r.execReady.error ?? r.shellReady.error ?? failedService?.[1].error);
  return { ...r, ready, ...(reason ? { reason } : {}) };
}
