/**
 * `run`: a scratch workspace for one command. Create it (pulling the image and building the rootfs
 * if needed), boot it, stream the workload's stdout/stderr, and tear it down (unless `keep`). The
 * result carries the guest command's exit code. The supervisor owns the VM throughout: if this
 * process dies, the workspace finishes on its own and `--rm` is simply not applied.
 *
 * The boot workload has no stdin and no terminal. So with `stdin` (`run -i`) or `tty` (`run -t`) the
 * workspace boots idle and the command (resolved exactly as the workload's would be) runs as an exec
 * with streamed stdin, or on a guest PTY, in it; when it ends the VM is halted. `detach` (`run -d`)
 * returns once the VM is started, leaving the workspace to `logs`, `wait`, `exec` and `delete`.
 */
import { randomBytes } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import type { Arch, BackendName } from "../contract/backend.ts";
import { createWorkspace, type CreateProviders } from "../workspace/create.ts";
import type { SecretRef } from "../secrets/ref.ts";
import { deleteWorkspace } from "../workspace/delete.ts";
import type { NetworkMode } from "../workspace/manifest.ts";
import { egressOptionsOf, type AddHost, type DnsUpstream, type EgressInputs, type NetworkSettings, type PortForward } from "../workspace/network.ts";
import { egressSummary, type EgressSummary } from "../egress/summary.ts";
import type { ProfileName } from "../workspace/profiles.ts";
import { pidExists } from "../util/process.ts";
import { readState } from "../workspace/state.ts";
import { defaultStateDir, workspacePaths } from "../workspace/paths.ts";
import { SupervisorClient } from "../supervisor/client.ts";
import { SupervisorErrors } from "../supervisor/errors.ts";
import type { WorkloadResult } from "../supervisor/protocol.ts";
import type { ConsoleConnection } from "../supervisor/client.ts";
import type { ConsoleExit, ExecResult } from "../supervisor/protocol.ts";
import { CommonErrors } from "../contract/errors.ts";
import { exitCodeFor, workloadExitCode } from "./exit-code.ts";
import { startWorkspace, stopWorkspace, waitWorkspace, type StartResult } from "./lifecycle.ts";
import type { WorkspaceState } from "../workspace/events.ts";

export interface RunOptions {
  image: string;
  /** Replaces the image's Cmd (`run IMAGE CMD ARG...`). */
  cmd?: string[];
  /** A shell command string (`run --exec "..."`): runs as `/bin/sh -c` instead of the image's Entrypoint/Cmd. */
  exec?: string;
  /** Replaces the image's Entrypoint, exec form (docker's `--entrypoint X IMAGE a b` runs `X a b`); drops its Cmd. */
  entrypoint?: string[];
  /** Working directory (default: the image's WorkingDir, else /). */
  cwd?: string;
  /** Guest user `USER[:GROUP]`, name or id (default: the image's User, else root). */
  user?: string;
  /** The command's stdin (`run -i`): streamed, flow-controlled; its end closes the command's stdin. */
  stdin?: AsyncIterable<Uint8Array>;
  /** Run the command on a guest PTY (`run -t`) of this size; `attach` drives it and resolves when it ends. With no command and none in the image, the workspace shell runs. */
  tty?: { cols: number; rows: number; attach: (con: ConsoleConnection) => Promise<ConsoleExit | undefined> };
  /** Return once the VM is started (`run -d`); the workspace is kept. */
  detach?: boolean;
  name?: string;
  stateDir?: string;
  /** Keep the workspace afterwards (default: delete it). */
  keep?: boolean;
  /** Bound on the workload, counted from the guest being up; on expiry the VM is killed and the exit code is 124. */
  timeoutMs?: number;
  env?: Record<string, string>;
  setup?: string[];
  specFile?: string;
  /** Secret references (parseSecretRef), merged over the spec's by name. */
  secrets?: SecretRef[];
  profile?: ProfileName;
  memoryMib?: number;
  cpus?: number;
  sizeMib?: number;
  network?: NetworkMode;
  addHosts?: AddHost[];
  dns?: DnsUpstream;
  egressAllow?: string[];
  forwards?: PortForward[];
  /** Egress mediation (see CreateWorkspaceOptions.egress). */
  egress?: EgressInputs;
  backend?: BackendName;
  arch?: Arch;
  /** mke2fs / debugfs for building the base rootfs on a cache miss. */
  mke2fs?: string;
  debugfs?: string;
  supervisorPath?: string;
  /**
   * Boot cold: neither restore this machine's warm snapshot nor capture one (`--cold`). By default a
   * run restores the cached post-hello snapshot of the same image, kernel, init, resources and network
   * mode, and the first run of a combination captures it. `MICROAGENT_WARM_RUN=0` turns it off.
   */
  cold?: boolean;
  /** Workload output as it arrives; a returned promise holds the workload's output back until it settles. */
  onOutput?: (stream: "stdout" | "stderr", data: Buffer) => unknown;
  onProgress?: (message: string) => void;
  /** Called once the supervisor is spawned, with its accelerator choice (before any workload output). */
  onStarted?: (started: StartResult) => void;
  /** Abort = kill the workspace (and delete it unless keep). */
  signal?: AbortSignal;
  /** @internal test seam: the image/kernel/rootfs steps of create. */
  providers?: CreateProviders;
}

export interface RunResult {
  workspace: string;
  kept: boolean;
  finalState: WorkspaceState | undefined;
  /** The guest command's exit code (124 on timeout, 130 when interrupted, 128+n for a signal, 127 when it never started). */
  exitCode: number;
  timedOut: boolean;
  /** The caller's signal aborted the run (the VM was killed). */
  interrupted: boolean;
  result: WorkloadResult | undefined;
  timings: { createMs: number; bootMs?: number; totalMs: number };
  /** The accelerator the VM booted with, and why. */
  accel?: StartResult["accel"];
  accelReason?: string;
  /** `detach`: the run returned once the VM was started; the workspace is running and kept. */
  detached?: boolean;
  /** User networking: the egress receipt (read before a non-kept workspace is deleted; `audit` null then). */
  egress?: EgressSummary;
  /** The warm snapshot: restored (`restored`), or captured during this boot; absent with `cold`. */
  warm?: { key: string; restored: boolean };
}

const ADJECTIVES = ["brave", "calm", "eager", "fuzzy", "gentle", "jolly", "keen", "lucky", "mellow", "nimble", "proud", "quiet", "rapid", "sunny", "tidy", "witty"];
const NOUNS = ["otter", "badger", "falcon", "heron", "lynx", "marmot", "newt", "owl", "panda", "quokka", "raven", "seal", "tapir", "walrus", "yak", "zebra"];

export function generateRunName(): string {
  const b = randomBytes(4);
  return `run-${ADJECTIVES[(b[0] as number) % ADJECTIVES.length]}-${NOUNS[(b[1] as number) % NOUNS.length]}-${b.subarray(2).toString("hex")}`;
}

/** The egress summary of a finished run; `audit` is null when the workspace (and its audit) is about to go. */
async function egressReceipt(created: { paths: { dir: string }; manifest: { network: NetworkSettings } }, kept: boolean): Promise<EgressSummary | undefined> {
  if (created.manifest.network.mode !== "user") return undefined;
  const s = await egressSummary(created.paths.dir, egressOptionsOf(created.manifest.network)).catch(() => undefined);
  return s && !kept ? { ...s, audit: null } : s;
}

export async function runWorkspace(opts: RunOptions): Promise<RunResult> {
  const t0 = performance.now();
  const name = opts.name ?? generateRunName();
  const access = { ...(opts.stateDir ? { stateDir: opts.stateDir } : {}) };
  const progress = opts.onProgress ?? (() => {});
  if (opts.exec !== undefined && opts.entrypoint !== undefined) {
    throw CommonErrors.USAGE({ message: "pass either --exec or --entrypoint, not both", remediation: "--entrypoint X IMAGE ARG... runs X ARG...; --exec \"...\" runs a shell command." });
  }
  const held = opts.stdin !== undefined || opts.tty !== undefined;
  if (opts.detach && (held || opts.timeoutMs)) {
    throw CommonErrors.USAGE({ message: "a detached run (-d) cannot also take -i, -t or --timeout: nothing stays attached to feed, show or time it", remediation: "Drop -d, or drop the others; follow a detached run with `microagent logs -f NAME` and `microagent wait NAME`." });
  }
  const keep = Boolean(opts.keep || opts.detach);
  progress(`creating workspace ${name} from ${opts.image}`);
  // Options left undefined fall back to the spec file or the defaults inside createWorkspace.
  const created = await createWorkspace({
    name,
    image: opts.image,
    ...access,
    entrypoint: opts.exec ?? opts.entrypoint,
    cmd: opts.cmd && opts.cmd.length > 0 ? opts.cmd : undefined,
    // `run IMAGE` with no command runs what the image says (Entrypoint/Cmd).
    imageCommand: true,
    holdCommand: held,
    cwd: opts.cwd,
    user: opts.user,
    env: opts.env,
    setup: opts.setup,
    specFile: opts.specFile,
    secrets: opts.secrets,
    profile: opts.profile,
    memoryMib: opts.memoryMib,
    cpus: opts.cpus,
    sizeMib: opts.sizeMib,
    mke2fs: opts.mke2fs,
    debugfs: opts.debugfs,
    network: opts.network,
    addHosts: opts.addHosts,
    dns: opts.dns,
    egressAllow: opts.egressAllow,
    forwards: opts.forwards,
    egress: opts.egress,
    backend: opts.backend,
    arch: opts.arch,
    providers: opts.providers,
    onProgress: progress,
  });
  const createMs = performance.now() - t0;
  let timedOut = false;
  let result: WorkloadResult | undefined;
  let bootMs: number | undefined;
  const kill = () => stopWorkspace(name, "kill", access).catch(() => {});
  try {
    progress(`booting ${name}`);
    // A detached run returns once the workspace is running (exec works right after, as after `docker run -d`).
    const warm = !opts.cold && process.env.MICROAGENT_WARM_RUN !== "0";
    const started = await startWorkspace(name, {
      ...access,
      ...(opts.detach ? {} : { detach: true }),
      ...(opts.supervisorPath ? { supervisorPath: opts.supervisorPath } : {}),
      ...(warm ? { warm: true } : {}),
    });
    const warmInfo = started.warm ? { warm: started.warm } : {};
    opts.onStarted?.(started);
    if (opts.detach) {
      return {
        workspace: name,
        kept: true,
        finalState: started.state,
        exitCode: 0,
        timedOut: false,
        interrupted: false,
        result: undefined,
        timings: { createMs, totalMs: performance.now() - t0 },
        accel: started.accel,
        accelReason: started.accelReason,
        ...warmInfo,
        detached: true,
      };
    }
    if (held) {
      const r = await runHeld(name, created.heldCommand ?? [], started.supervisorPid, opts);
      // The idle guest would serve on: halt it (kept) or kill it (about to be deleted anyway).
      if (keep) await stopWorkspace(name, "halt", access).catch(() => {});
      else await kill();
      const waited = await waitWorkspace(name, { ...access, timeoutMs: 60_000, intervalMs: 20 }).catch(() => undefined);
      const heldEgress = await egressReceipt(created, keep);
      return {
        workspace: name,
        kept: keep,
        finalState: waited?.state,
        exitCode: r.exitCode,
        timedOut: r.timedOut,
        interrupted: r.interrupted,
        result: r.result,
        timings: { createMs, bootMs: r.bootMs, totalMs: performance.now() - t0 },
        accel: started.accel,
        accelReason: started.accelReason,
        ...(heldEgress ? { egress: heldEgress } : {}),
        ...warmInfo,
      };
    }
    const bootStart = performance.now();
    const abort = new AbortController();
    const onAbort = () => {
      abort.abort(opts.signal?.reason);
      void kill();
    };
    opts.signal?.addEventListener("abort", onAbort, { once: true });
    // The limit is on the command, so it starts once the guest is up (a TCG boot takes seconds).
    let timer: NodeJS.Timeout | undefined;
    try {
      result = await attachWithRetry(name, started.supervisorPid, access.stateDir, opts.onOutput ?? (() => {}), abort.signal, () => {
        bootMs ??= performance.now() - bootStart;
        if (opts.timeoutMs && !timer) {
          timer = setTimeout(() => {
            timedOut = true;
            void kill();
          }, opts.timeoutMs);
        }
      });
    } catch (e) {
      if (!timedOut && !abort.signal.aborted) throw e;
    } finally {
      if (timer) clearTimeout(timer);
      opts.signal?.removeEventListener("abort", onAbort);
    }
    // The supervisor records the final state once the VM is gone.
    const waited = await waitWorkspace(name, { ...access, timeoutMs: 60_000, intervalMs: 20 }).catch(() => undefined);
    const finalState = waited?.state ?? (await readState(workspacePaths(opts.stateDir ?? defaultStateDir(), name)).catch(() => undefined))?.state;
    const interrupted = Boolean(opts.signal?.aborted) && !result;
    const exitCode = timedOut ? 124 : result ? workloadExitCode(result) : interrupted ? 130 : 1;
    const egress = await egressReceipt(created, Boolean(opts.keep));
    return {
      ...(egress ? { egress } : {}),
      workspace: name,
      kept: Boolean(opts.keep),
      finalState,
      exitCode,
      timedOut,
      interrupted,
      result,
      timings: { createMs, ...(bootMs !== undefined ? { bootMs } : {}), totalMs: performance.now() - t0 },
      accel: started.accel,
      accelReason: started.accelReason,
      ...warmInfo,
    };
  } finally {
    if (!keep) {
      await deleteWorkspace(name, { ...access, force: true, kill: async () => void (await kill()) }).catch(() => {});
    }
  }
}

interface HeldOutcome {
  exitCode: number;
  timedOut: boolean;
  interrupted: boolean;
  result: WorkloadResult | undefined;
  bootMs: number;
}

/**
 * Run the held command in the idle workspace once its guest is up: an exec with the caller's stdin,
 * or a PTY console. The timeout and the caller's signal end the command (not the VM; the caller
 * halts or deletes it afterwards).
 */
async function runHeld(name: string, argv: string[], supervisorPid: number, opts: RunOptions): Promise<HeldOutcome> {
  const bootStart = performance.now();
  const client = await waitGuestUp(name, supervisorPid, opts);
  if (!client) return { exitCode: 130, timedOut: false, interrupted: true, result: undefined, bootMs: performance.now() - bootStart };
  const bootMs = performance.now() - bootStart;
  const startedAt = new Date().toISOString();
  if (opts.tty) {
    const con = await client.console({ cols: opts.tty.cols, rows: opts.tty.rows, ...(argv.length > 0 ? { argv } : {}) });
    let timedOut = false;
    const timer = opts.timeoutMs
      ? setTimeout(() => {
          timedOut = true;
          con.close();
        }, opts.timeoutMs)
      : undefined;
    const onAbort = () => con.close();
    opts.signal?.addEventListener("abort", onAbort, { once: true });
    let exit: ConsoleExit | undefined;
    try {
      exit = await opts.tty.attach(con);
    } finally {
      if (timer) clearTimeout(timer);
      opts.signal?.removeEventListener("abort", onAbort);
    }
    const interrupted = Boolean(opts.signal?.aborted) && !timedOut;
    if (!exit && !timedOut && !interrupted) {
      throw SupervisorErrors.BOOT_FAILED({ message: `the terminal session in ${name} ended without its command's exit status (the VM may have stopped)`, remediation: `Read \`microagent logs ${name}\` (with --keep) to see what the guest did.` });
    }
    return {
      exitCode: timedOut ? 124 : interrupted ? 130 : exitCodeFor(exit as ConsoleExit),
      timedOut,
      interrupted,
      result: exit ? workloadOf(exit, startedAt) : undefined,
      bootMs,
    };
  }
  if (argv.length === 0) {
    throw CommonErrors.USAGE({ message: `the image names no command (no Entrypoint or Cmd) for run -i to feed`, remediation: "Pass the command after IMAGE, or add -t for the image's shell." });
  }
  let r: ExecResult;
  try {
    r = await client.exec(
      { argv, ...(opts.timeoutMs ? { timeoutMs: opts.timeoutMs } : {}) },
      opts.onOutput ?? (() => {}),
      opts.signal,
      { ...(opts.stdin ? { stdin: opts.stdin } : {}) },
    );
  } catch (e) {
    if (opts.signal?.aborted) {
      return { exitCode: 130, timedOut: false, interrupted: true, result: undefined, bootMs };
    }
    throw e;
  }
  const interrupted = Boolean(opts.signal?.aborted) && r.status !== "exited";
  return {
    exitCode: interrupted ? 130 : exitCodeFor(r),
    timedOut: r.status === "timed_out",
    interrupted,
    result: workloadOf(r, startedAt),
    bootMs,
  };
}

/** A client once the guest is up (the control socket appears a moment after spawn); undefined when the caller aborted first. */
async function waitGuestUp(name: string, supervisorPid: number, opts: RunOptions): Promise<SupervisorClient | undefined> {
  const { openWorkspace } = await import("../workspace/access.ts");
  const paths = await openWorkspace(name, opts.stateDir ? { stateDir: opts.stateDir } : {});
  const client = new SupervisorClient(paths.controlSocket);
  for (;;) {
    try {
      await client.waitReady();
      return client;
    } catch (e) {
      if (!SupervisorErrors.SUPERVISOR_UNREACHABLE.is(e)) throw e;
      if (!pidExists(supervisorPid)) {
        const state = await readState(paths);
        throw SupervisorErrors.BOOT_FAILED({ message: `workspace ${name} ended (${state?.state ?? "unknown"}) before its guest came up: ${state?.detail ?? "no detail"}` });
      }
    }
    if (opts.signal?.aborted) return undefined;
    await sleep(20);
  }
}

function workloadOf(r: Pick<ExecResult, "status" | "exitCode" | "signal" | "error">, startedAt: string): WorkloadResult {
  return {
    ran: true,
    startedAt,
    exitedAt: new Date().toISOString(),
    ...(r.exitCode !== undefined ? { exitCode: r.exitCode } : {}),
    ...(r.signal ? { signal: r.signal } : {}),
    ...(r.status === "failed_to_start" ? { startError: r.error ?? "failed to start" } : {}),
  };
}

/**
 * Attach to the workload's output: the supervisor's control socket appears a moment after spawn,
 * and `attach` replays everything from the start, so nothing printed before we connected is lost.
 */
async function attachWithRetry(
  name: string,
  supervisorPid: number,
  stateDir: string | undefined,
  onOutput: (stream: "stdout" | "stderr", data: Buffer) => unknown,
  signal: AbortSignal,
  onFirstByte: () => void,
): Promise<WorkloadResult> {
  const { openWorkspace } = await import("../workspace/access.ts");
  const paths = await openWorkspace(name, stateDir ? { stateDir } : {});
  const client = new SupervisorClient(paths.controlSocket);
  for (;;) {
    try {
      await client.waitReady();
      onFirstByte();
      return await client.attach(onOutput, signal);
    } catch (e) {
      if (!SupervisorErrors.SUPERVISOR_UNREACHABLE.is(e)) throw e;
      if (!pidExists(supervisorPid)) {
        // It finished (or died) before we connected: its result.json and state say how.
        const { readResult } = await import("../workspace/result.ts");
        const r = await readResult(paths).catch(() => undefined);
        if (r) {
          return {
            ran: true,
            ...(r.exitCode !== null ? { exitCode: r.exitCode } : {}),
            ...(r.signal ? { signal: r.signal } : {}),
            ...(r.status === "failed_to_start" ? { startError: r.error ?? "failed to start" } : {}),
          };
        }
        const state = await readState(paths);
        throw SupervisorErrors.BOOT_FAILED({
          message: `workspace ${name} ended (${state?.state ?? "unknown"}) before its workload reported a result: ${state?.detail ?? "no detail"}`,
        });
      }
    }
    if (signal.aborted) throw signal.reason ?? new Error("aborted");
    await sleep(20);
  }
}
