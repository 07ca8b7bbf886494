/**
 * The supervisor's core: one VM's life from launch to exit. It boots the VM through the backend,
 * completes the guest handshake, sends the boot config, records every state change, relays
 * workload output and result, and serves the control operations (exec, console, shutdown, kill,
 * quarantine, readiness). Everything with side effects comes in through `SupervisorDeps`, so the
 * whole life cycle is unit-tested with a fake backend and a fake guest link.
 *
 * Its phase moves only through `#transitionPhase` (the table and invariants are in phase.ts); the
 * workload's output and result live in a WorkloadRelay (workload-relay.ts), the readiness probes in
 * readiness.ts, and per-VM components (network, egress, ...) plug in as SupervisorServices
 * (service.ts) at fixed points of the boot, quarantine and exit.
 *
 * Quarantine decision: the guest channel, every console and every service are severed at once, and
 * the VM is frozen (vCPUs stopped via QMP when available) but kept, so its disk and memory stay as
 * evidence until halt/stop/kill; those end it without talking to the guest.
 */
import type { Duplex } from "node:stream";
import { randomBytes, randomUUID } from "node:crypto";
import { rm } from "node:fs/promises";
import { sha256File } from "../util/hash.ts";
import type { RestoreRequest } from "./restore-request.ts";
import { CommonErrors, isMicroagentError, toMicroagentError, type MicroagentError } from "../contract/errors.ts";
import type { Backend, RunningVm, VmExit, VmLaunchSpec } from "../backend/types.ts";
import type { WorkspaceState } from "../workspace/events.ts";
import { SupervisorErrors } from "./errors.ts";
import { BackendErrors } from "../backend/errors.ts";
import { WorkspaceErrors } from "../workspace/errors.ts";
import type { GuestLink } from "./guest-link.ts";
import { IoPauseWatch } from "./io-pause.ts";
import { GUEST_REACHABLE_PHASES, INITIAL_PHASE, canStop, canTransitionPhase, nextPhase, type FinalState, type PhaseCause, type PhaseRecord, type StopCause } from "./phase.ts";
import type { ConsoleOpenOptions, ExecRequest, ExecResult, Readiness, SupervisorPhase, SupervisorStatus, WorkloadResult } from "./protocol.ts";
import type { OpResult } from "./ops.ts";
import { probeReadiness } from "./readiness.ts";
import type { ConsoleSession, ControlHandlers, ExecIo, OutputSink, OutputStream } from "./server.ts";
import type { ServiceContext, SupervisorService } from "./service.ts";
import { WorkloadRelay } from "./workload-relay.ts";

/** Bound of each service's `stop` (the supervisor must exit even when a service hangs). */
const SERVICE_STOP_TIMEOUT_MS = 5000;

export interface ResolvedSupervisorConfig {
  workspace: string;
  runtimeId: string;
  launch: VmLaunchSpec;
  /** Sent to the guest after its hello (the BootConfig from the manifest's boot spec). */
  bootConfig: unknown;
  /** Launch to boot config accepted. */
  bootTimeoutMs: number;
  /** Graceful shutdown (halt/stop) bound. */
  shutdownTimeoutMs: number;
  /** After the final state, how long to keep serving a workload's output to a late `attach`. */
  lingerMs: number;
  /** Guest shell, used by the shellReady probe. */
  shell: string;
  /**
   * Restore instead of boot: load `stateFile` (a snapshot's memory and device state) into the same
   * machine, then tell the guest it was restored (`resume`: fresh entropy, the time, and the new
   * `hostname` / NIC identity of a fork, when they differ from the snapshot's `sourceHostname`/`sourceMac`).
   */
  restore?: RestoreRequest;
  /**
   * Warm `run` snapshot: right after the guest's hello, before its boot config, capture the VM (state
   * to `stateFile`, disk frozen, the VM going on on `overlayPath`), then boot on as usual. A failed
   * capture is logged, never fatal.
   */
  warmCapture?: { stateFile: string; overlayPath: string };
  /** A VM paused on a full host disk resumes once this many bytes are free (checked every `pollMs`). */
  ioPause?: { resumeFreeBytes?: number; pollMs?: number; freeBytes?: (path: string) => Promise<number> };
}

export interface SupervisorDeps {
  backend: Backend;
  /** Run the channel handshake on a connected stream (resolves after the guest's hello). */
  connectLink(stream: Duplex, timeoutMs: number): Promise<GuestLink>;
  /** Record a state change (WS-STATE's transition). Errors are reported, not fatal. */
  record(to: WorkspaceState, detail: string): Promise<void>;
  /** The VMM pid is known: write runtime.json. */
  vmLaunched(vm: RunningVm): Promise<void>;
  writeResult(result: WorkloadResult): Promise<void>;
  serialTail(): Promise<string>;
  /** Freeze the VM's vCPUs (quarantine); optional. */
  freeze?(vm: RunningVm): Promise<void>;
  /** Thaw the vCPUs again (resume; a halt/stop of a paused VM); pause/resume need both. */
  thaw?(vm: RunningVm): Promise<void>;
  /** The warm capture is written: the caller files it (hashes, manifest) while the boot goes on. */
  warmCaptured?(r: { frozen: { path: string; format: "qcow2" | "raw"; virtualSizeBytes: number }; stateBytes: number; mac?: string }): void;
  /** A snapshot switched the VM onto a new top disk layer: record it (the workspace manifest) before going on. */
  diskSwitched?(disk: VmLaunchSpec["disk"]): Promise<void>;
  /** Per-VM services, in registration order (service.ts says when each hook runs). */
  services?: readonly SupervisorService[];
  log(message: string): void;
}

/** An overrun boot bound: a timeout with its own fix (more time, fewer vCPUs), never "a bug". */
const bootTimeout = (message: string): Error => BackendErrors.BOOT_TIMEOUT({ message });

export class Supervisor implements ControlHandlers {
  readonly config: ResolvedSupervisorConfig;
  readonly deps: SupervisorDeps;
  readonly startedAt = new Date();
  readonly bootId = randomUUID();
  #phase: PhaseRecord = INITIAL_PHASE;
  #vm: RunningVm | undefined;
  #link: GuestLink | undefined;
  /** /run/secrets was wiped for a capture that left the VM paused: delivered again at the next resume. */
  #secretsPending = false;
  #bootMs: number | undefined;
  /** Set as soon as the guest reports it (the relay hands it out once result.json is written). */
  #workload: WorkloadResult | undefined;
  #launch: VmLaunchSpec;
  readonly #services: readonly SupervisorService[];
  /** Services whose beforeLaunch was called: the ones `stop` is owed to. */
  #startedServices: SupervisorService[] = [];
  #servicesStopped = false;
  /** Quarantined: the link and consoles are closed and must not be used again. */
  #severed = false;
  #ioPause: IoPauseWatch | undefined;
  #bootError: MicroagentError | undefined;
  readonly #ready = Promise.withResolvers<void>();
  readonly #done = Promise.withResolvers<WorkspaceState>();
  readonly #vmDeath = Promise.withResolvers<never>();
  readonly #relay: WorkloadRelay;
  #consoles = new Set<ConsoleSession>();
  #guestReadyAt: string | undefined;
  #restoreLoadMs: number | undefined;
  #resumeNote: string | undefined;
  #snapshotting = false;

  constructor(config: ResolvedSupervisorConfig, deps: SupervisorDeps) {
    this.config = config;
    this.deps = deps;
    this.#launch = config.launch;
    this.#services = [...(deps.services ?? [])];
    this.#relay = new WorkloadRelay({ log: deps.log });
    this.#ready.promise.catch(() => {});
    this.#vmDeath.promise.catch(() => {});
  }

  /** Resolves with the final state once the VM is gone and the state recorded. */
  get done(): Promise<WorkspaceState> {
    return this.#done.promise;
  }

  /** Whether a client ever attached to the workload output (the main loop lingers otherwise). */
  get attachedOnce(): boolean {
    return this.#relay.attachedOnce;
  }

  get phase(): SupervisorPhase {
    return this.#phase.phase;
  }

  /** The launched VM (undefined before launch). */
  get vm(): RunningVm | undefined {
    return this.#vm;
  }

  /** The guest link (undefined before the guest's hello). */
  get link(): GuestLink | undefined {
    return this.#link;
  }

  get bootMs(): number | undefined {
    return this.#bootMs;
  }

  /** The workload's result, once the guest reported it. */
  get workload(): WorkloadResult | undefined {
    return this.#workload;
  }

  /** The launch spec as the services left it (the config's until the boot ran beforeLaunch). */
  get launch(): VmLaunchSpec {
    return this.#launch;
  }

  /** The one writer of the phase: checks the table and invariants (phase.ts), then logs the move. */
  #transitionPhase(to: SupervisorPhase, cause: StopCause | PhaseCause, final?: FinalState): void {
    const from = this.#phase.phase;
    this.#phase = nextPhase(this.#phase, to, cause, final);
    if (from !== to || to === "stopping") this.deps.log(`phase ${from} -> ${to} (${cause})`);
  }

  #serviceContext(s: SupervisorService, deadline?: number): ServiceContext {
    const vm = this.#vm;
    if (!vm) throw SupervisorErrors.SUPERVISOR_INVARIANT({ message: `service ${s.name}: a service context needs a launched VM` });
    return {
      workspace: this.config.workspace,
      vm,
      launch: this.#launch,
      remainingMs: () => (deadline === undefined ? 0 : Math.max(0, deadline - Date.now())),
      log: (m) => this.deps.log(`service ${s.name}: ${m}`),
    };
  }

  /** A service hook's failure, as the boot records it. */
  #serviceFailed(s: SupervisorService, hook: string, e: unknown): MicroagentError {
    if (SupervisorErrors.VM_DIED.is(e) || CommonErrors.DISK_FULL.is(e) || SupervisorErrors.SERVICE_FAILED.is(e)) return e;
    const cause = toMicroagentError(e);
    return SupervisorErrors.SERVICE_FAILED({
      message: `service ${s.name} failed in ${hook}: ${isMicroagentError(e) ? `${cause.code}: ` : ""}${cause.message}`,
      ...(isMicroagentError(e) ? { remediation: cause.remediation } : {}),
      cause,
      details: { service: s.name, hook, code: cause.code },
    });
  }

  /** Every started service's `stop`, in reverse order, once; bounded and never throwing. */
  async #stopServices(): Promise<void> {
    if (this.#servicesStopped) return;
    this.#servicesStopped = true;
    for (const s of [...this.#startedServices].reverse()) {
      if (!s.stop) continue;
      try {
        await this.#bounded(Promise.resolve().then(() => s.stop?.()), SERVICE_STOP_TIMEOUT_MS, `service ${s.name} to stop`);
      } catch (e) {
        this.deps.log(`service ${s.name}: stop failed: ${(e as Error).message}`);
      }
    }
  }

  /** Boot the VM and bring the guest up. Never throws: failures are recorded and end the session. */
  async boot(): Promise<void> {
    const started = Date.now();
    const deadline = started + this.config.bootTimeoutMs;
    const remaining = () => Math.max(1, deadline - Date.now());
    const bound = this.config.bootTimeoutMs;
    try {
      // Services first: each may change the launch spec (a NIC, listeners the VMM connects to).
      let launch = this.config.launch;
      for (const s of this.#services) {
        this.#startedServices.push(s);
        if (!s.beforeLaunch) continue;
        const hook = s.beforeLaunch.bind(s);
        launch = await this.#bounded(Promise.resolve().then(() => hook(launch)), remaining(), `service ${s.name} to prepare the launch`, bound).catch((e: unknown) => {
          throw this.#serviceFailed(s, "beforeLaunch", e);
        });
      }
      this.#launch = launch;
      if (this.phase !== "booting") return; // stopped or killed before the VMM started
      const restore = this.config.restore;
      let vm: RunningVm;
      if (restore) {
        const snap = this.deps.backend.snapshot;
        if (!snap) throw WorkspaceErrors.SNAPSHOT_UNSUPPORTED({ message: `the ${this.deps.backend.name} backend cannot restore snapshots` });
        const check = restore.verify;
        const verify = check
          ? async () => {
              const [state, disk] = await Promise.all([sha256File(restore.stateFile), sha256File(check.disk.path)]);
              if (state !== check.stateSha256 || disk !== check.disk.sha256) {
                // A warm entry that fails its check is removed: the next run boots cold and captures anew.
                if (check.entryDir) await rm(check.entryDir, { recursive: true, force: true }).catch(() => {});
                throw WorkspaceErrors.SNAPSHOT_CORRUPT({
                  message: `snapshot ${restore.tag}: the ${state !== check.stateSha256 ? "state file" : "disk layer"} does not match its recorded sha256${check.entryDir ? " (the warm entry was removed)" : ""}`,
                  ...(check.entryDir ? { remediation: "Run the command again: it boots cold and captures a fresh warm snapshot (or pass --cold)." } : {}),
                  details: { stateFile: restore.stateFile, disk: check.disk.path },
                });
              }
            }
          : undefined;
        const r = await this.#bounded(snap.restore(launch, restore.stateFile, { timeoutMs: remaining(), ...(verify ? { verify } : {}) }), remaining(), `snapshot ${restore.tag} to load`, bound);
        vm = r.vm;
        this.#restoreLoadMs = r.loadMs;
      } else {
        vm = await this.deps.backend.lifecycle.launch(launch);
      }
      this.#vm = vm;
      this.#ioPause = new IoPauseWatch(vm, {
        workspace: this.config.workspace,
        diskPath: launch.disk.path,
        ...this.config.ioPause,
        // A VM frozen on purpose stays frozen when disk space comes back.
        holdResume: () => this.phase === "paused" || this.phase === "quarantined",
        log: this.deps.log,
      });
      void vm.exited.then((exit) => this.#onVmExit(exit));
      if (this.#phase.final) {
        // Killed while the VMM was starting (nothing to kill yet then): end it now.
        await vm.kill().catch(() => {});
        return;
      }
      await this.deps.vmLaunched(vm);
      for (const s of this.#services) {
        if (!s.afterLaunch) continue;
        await this.#guard(this.#bounded(s.afterLaunch(this.#serviceContext(s, deadline)), remaining(), `service ${s.name} after launch`, bound)).catch((e: unknown) => {
          throw this.#serviceFailed(s, "afterLaunch", e);
        });
      }
      const channel = this.deps.backend.channel;
      if (!channel) throw SupervisorErrors.BOOT_FAILED({ message: `backend ${this.deps.backend.name} has no guest channel` });
      const stream = await this.#guard(channel.openChannel(vm, launch));
      // The boot bound is this #bounded; the link's own hello timeout is only a backstop, set past it so
      // that one message ("timed out after N ms waiting for ...") reports an overrun boot.
      const link = await this.#guard(this.#bounded(this.deps.connectLink(stream, remaining() + 1000), remaining(), "the guest's hello", bound, bootTimeout));
      this.#link = link;
      this.#guestReadyAt = new Date().toISOString();
      link.onWorkloadOutput((s, d) => this.#onWorkloadOutput(s, d));
      if (restore) await this.#guard(this.#bounded(this.#resumeGuest(link, restore, remaining()), remaining(), "the restored guest to resume", bound, bootTimeout));
      else if (this.config.warmCapture && link.hello.state === "awaiting-config") await this.#captureWarm(vm, link, this.config.warmCapture);
      let bootConfig: unknown = this.config.bootConfig;
      for (const s of this.#services) {
        if (!s.bootConfig) continue;
        const hook = s.bootConfig.bind(s);
        const before = { ...(bootConfig as Record<string, unknown>) };
        bootConfig = await this.#bounded(Promise.resolve().then(() => hook(before)), remaining(), `service ${s.name}'s boot config`, bound).catch((e: unknown) => {
          throw this.#serviceFailed(s, "bootConfig", e);
        });
      }
      // A restored guest that had its config keeps it (it is in the memory we loaded); one captured
      // before its config (awaiting-config) gets it now, exactly as after a cold boot.
      if (!restore || link.hello.state === "awaiting-config") {
        await this.#guard(this.#bounded(link.sendBootConfig(bootConfig), remaining(), "the guest to accept its boot config", bound, bootTimeout));
      }
      this.#bootMs = Date.now() - started;
      if (this.phase !== "booting") return; // stopped, killed or quarantined while booting
      this.#transitionPhase("running", "booted");
      await this.deps.record(
        "running",
        restore
          ? `restored from snapshot ${restore.tag} in ${this.#bootMs} ms (state loaded in ${Math.round(this.#restoreLoadMs ?? 0)} ms; accel ${launch.accel})${this.#resumeNote ? `; ${this.#resumeNote}` : ""}`
          : `guest ready in ${this.#bootMs} ms (accel ${launch.accel})`,
      );
      for (const s of this.#services) {
        // A halt, kill or quarantine may land while an earlier service's onRunning ran.
        if (!s.onRunning || (this.phase as SupervisorPhase) !== "running") continue;
        const hook = s.onRunning.bind(s);
        const ctx = this.#serviceContext(s, deadline);
        await this.#bounded(Promise.resolve().then(() => hook(ctx)), remaining(), `service ${s.name} on running`, bound).catch((e: unknown) =>
          this.deps.log(`service ${s.name}: onRunning failed (the workspace runs on): ${(e as Error).message}`),
        );
      }
      this.#ready.resolve();
      void link.workloadResult().then(
        (r) => this.#onWorkloadResult(r),
        () => {},
      );
      void link.closed.then((reason) => {
        if (this.phase === "running") this.deps.log(`guest channel closed: ${reason?.message ?? "eof"}`);
      });
    } catch (e) {
      await this.#bootFailed(e);
    }
  }

  async #bootFailed(e: unknown): Promise<void> {
    // A stop, kill or quarantine during the boot explains the failure (and records its own state).
    if (!canStop(this.#phase, "boot-failed")) return;
    const tail = await this.deps.serialTail().catch(() => "");
    const cause = isMicroagentError(e) ? e : toMicroagentError(e);
    const err =
      SupervisorErrors.VM_DIED.is(cause) || SupervisorErrors.BOOT_FAILED.is(cause) || CommonErrors.DISK_FULL.is(cause) || SupervisorErrors.SERVICE_FAILED.is(cause)
        ? cause
        : SupervisorErrors.BOOT_FAILED({
            message: `workspace ${this.config.workspace} failed to boot: ${cause.message}\nserial log tail:\n${tail.trimEnd() || "(empty: the guest printed nothing yet)"}`,
            remediation: cause.remediation,
            cause,
            details: { code: cause.code, serialTail: tail },
          });
    this.#bootError = err;
    this.#transitionPhase("stopping", "boot-failed");
    this.#relay.end(err);
    this.deps.log(err.message);
    // Record first, answer second: whoever waits on the boot reads `failed` once it hears why.
    await this.#finish("failed", firstLine(err.message));
    this.#ready.reject(err);
  }

  /**
   * Reject when the VM dies before `p` settles. The channel usually notices first (the socket
   * closes a moment before QEMU is reaped), so a channel failure waits briefly for the VM's exit
   * and then reports VM_DIED with the exit status and serial tail instead of a bare "peer closed".
   */
  #guard<T>(p: Promise<T>): Promise<T> {
    const translated = p.catch(async (e: unknown) => {
      const vm = this.#vm;
      if (vm && isMicroagentError(e) && e.code.startsWith("CHANNEL_")) {
        const exited = await Promise.race([vm.exited.then(() => true), sleep(1500).then(() => false)]);
        if (exited) await this.#vmDeath.promise;
      }
      throw e;
    });
    const guarded = Promise.race([translated, this.#vmDeath.promise]);
    // A VM paused on a full host disk answers nothing: fail at once with DISK_FULL instead.
    return this.#ioPause ? this.#ioPause.race(guarded) : guarded;
  }

  /** `p`, or a timeout after `ms`; the message names `boundMs` (the whole bound a boot step is part of). */
  #bounded<T>(p: Promise<T>, ms: number, what: string, boundMs = ms, timeoutError: (message: string) => Error = (m) => new Error(m)): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_r, rej) => {
      timer = setTimeout(() => rej(timeoutError(`timed out after ${boundMs} ms waiting for ${what}`)), ms);
    });
    return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
  }

  async #onVmExit(exit: VmExit): Promise<void> {
    const how = exit.signal ? `killed by ${exit.signal}` : `exit code ${exit.code}`;
    const tail = await this.deps.serialTail().catch(() => "");
    const stderr = this.#vm?.stderrTail() ?? "";
    const cause = this.#phase.stopCause;
    const requested = cause === "halt" || cause === "halt-timeout" || cause === "stop" || cause === "kill";
    this.#vmDeath.reject(
      requested
        ? // Requests in flight when someone halted/stopped/killed the workspace: not a crash.
          SupervisorErrors.NOT_RUNNING({
            message: `workspace ${this.config.workspace} was ${cause === "kill" ? "killed" : cause === "stop" ? "stopped" : "halted"} on request while this request was in flight`,
            details: { exit, intent: cause },
          })
        : SupervisorErrors.VM_DIED({
            message: `the VM of workspace ${this.config.workspace} exited (${how})${tail ? `; serial log tail:\n${tail.trimEnd()}` : ""}${stderr ? `\nQEMU error output:\n${stderr.trimEnd()}` : ""}`,
            details: { exit, serialTail: tail, stderrTail: stderr },
          }),
    );
    this.#link?.close();
    for (const c of this.#consoles) c.close();
    if (this.#phase.final) return;
    switch (cause) {
      case "halt":
        return this.#finish("halted", "halted: the guest shut down cleanly");
      case "stop":
        return this.#finish("stopped", "stopped on request");
      case "kill":
        return this.#finish("stopped", `killed (VM ${how})`);
      case "boot-failed":
      case "halt-timeout":
        return; // the caller records why
      case "workload":
        return this.#finishWorkload();
      default:
        if (this.phase === "booting") return; // boot() sees the death through #guard
        if (this.#workload) return this.#finishWorkload();
        return this.#finish("failed", `the VM exited unexpectedly (${how})`);
    }
  }

  #finishWorkload(): Promise<void> {
    const r = this.#workload;
    if (!r) return this.#finish("failed", "the VM exited before the workload reported a result");
    if (r.startError) return this.#finish("failed", `workload failed to start: ${r.startError}`);
    if (r.signal) return this.#finish("failed", `workload killed by signal ${r.signal}`);
    if ((r.exitCode ?? 0) !== 0) return this.#finish("failed", `workload exited with code ${r.exitCode}`);
    return this.#finish("stopped", "workload exited with code 0");
  }

  /** The one way to the end: record the final state, make sure the VM is gone, stop the services. */
  async #finish(state: WorkspaceState, detail: string): Promise<void> {
    if (this.#phase.final) return;
    this.#transitionPhase("exited", "exit", { state, detail });
    for (const c of this.#consoles) c.close();
    await this.deps.record(state, detail).catch((e) => this.deps.log(`recording ${state} failed: ${(e as Error).message}`));
    if (this.#vm && !this.#vm.exitStatus()) await this.#vm.kill().catch(() => {});
    await this.#stopServices();
    // The VM ended: a result that arrived is handed out; waiters without one learn why there is none.
    if (this.#workload) this.#relay.settle(this.#workload);
    this.#relay.end(this.#bootError ?? SupervisorErrors.VM_DIED({ message: `workspace ${this.config.workspace} ended (${state}) before its workload reported a result` }));
    this.#done.resolve(state);
  }

  /** Returns a promise when the guest's credit must wait for attachers to have room. */
  #onWorkloadOutput(stream: OutputStream, frame: Buffer): Promise<unknown> | undefined {
    return this.#relay.push(stream, frame);
  }

  async #onWorkloadResult(result: WorkloadResult): Promise<void> {
    this.#workload = result;
    await this.deps.writeResult(result).catch((e) => this.deps.log(`writing result.json failed: ${(e as Error).message}`));
    this.#relay.settle(result);
    if (!result.ran || this.phase !== "running") return;
    // The workload is the VM's purpose: when it ends, the VM ends.
    this.#transitionPhase("stopping", "workload");
    await this.#powerOff(this.config.shutdownTimeoutMs);
  }

  /** Ask the guest to power off; terminate the VMM if it does not within `timeoutMs`. Returns true when clean. */
  async #powerOff(timeoutMs: number, beforeTerminate?: () => void): Promise<boolean> {
    const vm = this.#vm;
    if (!vm) return true;
    if (vm.exitStatus()) return true;
    const exited = vm.exited.then(() => true);
    try {
      if (this.#link && !this.#severed) await this.#bounded(this.#link.shutdown(timeoutMs), timeoutMs, "the guest to accept shutdown");
      else await vm.requestPowerdown();
    } catch (e) {
      this.deps.log(`graceful shutdown request failed: ${(e as Error).message}`);
    }
    const clean = await Promise.race([exited, sleep(timeoutMs).then(() => false)]);
    if (!clean) {
      beforeTerminate?.();
      await vm.terminate({ graceMs: 2000 }).catch(() => {});
    }
    return clean;
  }

  // ---- control handlers ----

  status(): SupervisorStatus {
    return {
      workspace: this.config.workspace,
      phase: this.phase,
      supervisorPid: process.pid,
      ...(this.#vm ? { vmmPid: this.#vm.pid } : {}),
      accel: this.config.launch.accel,
      bootId: this.bootId,
      startedAt: this.startedAt.toISOString(),
      ...(this.#bootMs !== undefined ? { bootMs: this.#bootMs } : {}),
      ...(this.#workload ? { workload: this.#workload } : {}),
    };
  }

  async ping(): Promise<{ guestMs: number }> {
    const link = this.#requireLink("exec");
    return { guestMs: await this.#guard(link.ping(5000)) };
  }

  async waitReady(timeoutMs: number | undefined): Promise<SupervisorStatus> {
    if (this.#bootError) throw this.#bootError;
    const wait = timeoutMs ? this.#bounded(this.#ready.promise, timeoutMs, "the workspace to be running") : this.#ready.promise;
    try {
      await wait;
    } catch (e) {
      if (this.#bootError) throw this.#bootError;
      // Killed, halted or quarantined while booting: say so (a retry cannot help); only our own timer is a timeout.
      if (isMicroagentError(e)) throw e;
      throw SupervisorErrors.WAIT_TIMEOUT({ message: (e as Error).message });
    }
    return this.status();
  }

  #requireLink(what: "exec" | "console"): GuestLink {
    // Refused at once: a request to frozen vCPUs would only wait out its timeout.
    if (this.phase === "paused") throw this.#pausedError(what);
    if (this.phase === "quarantined") {
      throw SupervisorErrors.QUARANTINED({ message: `workspace ${this.config.workspace} is quarantined: ${what} is severed` });
    }
    if (!GUEST_REACHABLE_PHASES.has(this.phase) || !this.#link) {
      if (what === "console") {
        throw SupervisorErrors.CONSOLE_UNAVAILABLE({ message: `console input is unavailable: workspace ${this.config.workspace} is ${this.phase}, not running` });
      }
      throw SupervisorErrors.NOT_RUNNING({ message: `workspace ${this.config.workspace} is ${this.phase}, not running: cannot ${what}` });
    }
    return this.#link;
  }

  async exec(req: ExecRequest, onOutput: OutputSink | undefined, signal: AbortSignal, io?: ExecIo): Promise<ExecResult> {
    if (this.phase === "booting") await this.waitReady(this.config.bootTimeoutMs);
    const link = this.#requireLink("exec");
    return this.#guard(link.exec(req, onOutput, signal, io));
  }

  attach(onOutput: OutputSink, signal: AbortSignal): Promise<WorkloadResult> {
    return this.#relay.attach(onOutput, signal);
  }

  waitResult(signal: AbortSignal): Promise<WorkloadResult> {
    return this.#relay.waitResult(signal);
  }

  async console(opts: ConsoleOpenOptions): Promise<ConsoleSession> {
    const link = this.#requireLink("console");
    const session = await this.#guard(link.openConsole(opts));
    this.#consoles.add(session);
    void session.closed.then(() => this.#consoles.delete(session));
    return session;
  }

  readiness(timeoutMs: number | undefined): Promise<Readiness> {
    const reachable = GUEST_REACHABLE_PHASES.has(this.phase) && !this.#severed;
    return probeReadiness({
      link: reachable ? this.#link : undefined,
      unreachable: `phase ${this.phase}`,
      ...(this.#guestReadyAt ? { guestReadyAt: this.#guestReadyAt } : {}),
      ...(this.#ioPause?.paused ? { ioPaused: this.#ioPause.error() } : {}),
      workload: this.#workload,
      shell: this.config.shell,
      services: this.#services,
      ...(timeoutMs ? { timeoutMs } : {}),
      log: this.deps.log,
    });
  }

  /** What each service reports about itself (`{[name]: describe()}`), for the `services` control op. */
  services(): Record<string, Record<string, unknown>> {
    const out: Record<string, Record<string, unknown>> = {};
    for (const s of this.#services) {
      try {
        out[s.name] = s.describe?.() ?? {};
      } catch (e) {
        out[s.name] = { error: (e as Error).message };
      }
    }
    return out;
  }

  async shutdown(mode: "halt" | "stop", timeoutMs: number | undefined): Promise<OpResult<"shutdown">> {
    const limit = timeoutMs ?? this.config.shutdownTimeoutMs;
    const final = this.#phase.final;
    if (final) {
      // Ended just before this request (a kill or crash racing the halt): not a clean halt either.
      if (mode === "halt" && final.state !== "halted" && this.#phase.stopCause !== "workload") throw this.#haltNotClean(final.state);
      return { state: final.state };
    }
    if (this.#phase.stopCause === "workload") return { state: await this.#done.promise };
    if (!canStop(this.#phase, mode)) {
      // Already ending another way (a kill, a failed boot, a timed-out halt): report how it ends.
      const state = await this.#done.promise;
      if (mode === "halt" && state !== "halted") throw this.#haltNotClean(state);
      return { state };
    }
    const wasSevered = this.#severed;
    const wasPaused = this.phase === "paused";
    this.#transitionPhase("stopping", mode);
    await this.deps.record("stopping", `${mode} requested${wasPaused ? " (paused: resumed to power off)" : ""}`).catch((e) => this.deps.log(`recording stopping failed: ${(e as Error).message}`));
    // A paused guest cannot power off: thaw it first (a failed thaw leaves the timeout to terminate it).
    if (wasPaused && this.#vm && this.deps.thaw) await this.deps.thaw(this.#vm).catch((e) => this.deps.log(`resuming the paused VM to shut it down failed: ${(e as Error).message}`));
    this.#ready.reject(SupervisorErrors.NOT_RUNNING({ message: `workspace ${this.config.workspace} was ${mode === "halt" ? "halted" : "stopped"} while booting` }));
    const haltTimedOut = () => {
      if (mode === "halt" && canStop(this.#phase, "halt-timeout")) this.#transitionPhase("stopping", "halt-timeout");
    };
    // A VM paused on a full disk cannot shut down: resume it if there is room again, else end it now
    // (asking a frozen guest would only wait out the timeout).
    if (this.#ioPause?.paused && !(await this.#ioPause.resumeIfSpace())) {
      const why = this.#ioPause.error();
      haltTimedOut();
      await this.#vm?.terminate({ graceMs: 2000 }).catch(() => {});
      if (mode === "stop") return { state: await this.#done.promise };
      await this.#finish("failed", `halt: the VM was paused on a full host disk and was terminated without a clean shutdown`);
      throw CommonErrors.DISK_FULL({
        message: `workspace ${this.config.workspace} could not be halted cleanly: ${why.message}; it was terminated and recorded failed (writes the guest had not flushed are lost)`,
        remediation: why.remediation.replace(/: the VM resumes by itself.*$/, ", then `microagent start " + this.config.workspace + "`."),
      });
    }
    if (!this.#vm || wasSevered || !this.#link) {
      // No guest to ask (still booting, or severed): end the VMM. The disk is kept either way.
      if (this.#vm) await this.#vm.terminate({ graceMs: 2000 });
      else if (!this.#phase.final) await this.#finish("stopped", `${mode} requested before the VM was launched`);
    } else {
      const clean = await this.#powerOff(limit, haltTimedOut);
      if (!clean && mode === "halt") {
        const tail = await this.deps.serialTail().catch(() => "");
        await this.#finish("failed", `halt: the guest did not power off within ${limit} ms; the VM was terminated`);
        throw SupervisorErrors.SHUTDOWN_TIMEOUT({
          message: `workspace ${this.config.workspace} did not shut down within ${limit} ms; it was terminated and recorded failed${tail ? `\nserial log tail:\n${tail.trimEnd()}` : ""}`,
        });
      }
    }
    const state = await this.#done.promise;
    // Something else ended the VM before the guest flushed and powered off (a concurrent kill):
    // that is not a clean halt, whatever state it left.
    if (mode === "halt" && state !== "halted") throw this.#haltNotClean(state);
    return { state };
  }

  #haltNotClean(state: WorkspaceState): MicroagentError {
    const detail = this.#phase.final?.detail ?? "";
    return SupervisorErrors.HALT_NOT_CLEAN({
      message: `workspace ${this.config.workspace} was not halted cleanly: it ended ${state} (${detail || "no detail"}) before the guest powered off; writes it had not flushed may be lost`,
      details: { state, detail },
    });
  }

  async kill(): Promise<OpResult<"kill">> {
    if (this.#phase.final) return { state: this.#phase.final.state };
    // A kill overtakes any stop but a failed boot's (which ends the VM itself).
    if (canStop(this.#phase, "kill")) this.#transitionPhase("stopping", "kill");
    this.#ready.reject(SupervisorErrors.NOT_RUNNING({ message: `workspace ${this.config.workspace} was killed while booting` }));
    if (this.#vm) await this.#vm.kill();
    else if (this.#phase.stopCause === "kill") await this.#finish("stopped", "killed before the VM was launched");
    return { state: await this.#done.promise };
  }

  #pausedError(what: string): MicroagentError {
    const name = this.config.workspace;
    return WorkspaceErrors.WORKSPACE_PAUSED({
      message: `workspace ${name} is paused (vCPUs frozen): cannot ${what}`,
      remediation: `Run \`microagent resume ${name}\`, then retry.`,
      details: { workspace: name, state: "paused" },
    });
  }

  /**
   * Freeze the vCPUs. The phase moves first (synchronously), so no exec or console slips in while
   * the VMM is asked; a failed freeze moves it back. Memory, disk, the channel and network flows
   * are kept: the guest simply does not run until resume.
   */
  async pause(): Promise<OpResult<"pause">> {
    if (this.phase === "paused") return { state: "paused", changed: false, ms: 0 };
    const vm = this.#vm;
    if (!this.deps.freeze || !this.deps.thaw) {
      throw SupervisorErrors.PAUSE_UNSUPPORTED({ message: `the ${this.deps.backend.name} backend cannot pause workspace ${this.config.workspace}` });
    }
    if (this.phase !== "running" || !vm) {
      throw SupervisorErrors.NOT_RUNNING({ message: `workspace ${this.config.workspace} is ${this.phase}; only a running workspace can be paused` });
    }
    this.#transitionPhase("paused", "pause");
    const t0 = performance.now();
    try {
      await this.deps.freeze(vm);
    } catch (e) {
      if ((this.phase as SupervisorPhase) === "paused") this.#transitionPhase("running", "resume");
      throw e;
    }
    const ms = performance.now() - t0;
    // A kill or quarantine during the freeze owns the state now.
    if ((this.phase as SupervisorPhase) !== "paused") return { state: "paused", changed: true, ms };
    await this.deps.record("paused", `paused on request (vCPUs frozen in ${ms.toFixed(1)} ms; memory, disk and flows kept)`);
    return { state: "paused", changed: true, ms };
  }

  /** Thaw the vCPUs; the phase returns to running only once the VMM runs them again. */
  async resume(): Promise<OpResult<"resume">> {
    if (this.phase === "running") return { state: "running", changed: false, ms: 0 };
    const vm = this.#vm;
    if (this.phase !== "paused" || !vm || !this.deps.thaw) {
      throw SupervisorErrors.NOT_RUNNING({ message: `workspace ${this.config.workspace} is ${this.phase}, not paused: nothing to resume` });
    }
    const t0 = performance.now();
    await this.deps.thaw(vm);
    const ms = performance.now() - t0;
    // A kill or a stop may have overtaken the thaw: then it is no longer ours to move back.
    if ((this.phase as SupervisorPhase) !== "paused") return { state: "running", changed: false, ms };
    this.#transitionPhase("running", "resume");
    await this.deps.record("running", `resumed on request (vCPUs running again in ${ms.toFixed(1)} ms)`);
    if (this.#secretsPending) await this.#redeliverSecrets();
    return { state: "running", changed: true, ms };
  }

  /**
   * Tell a restored guest it was restored: fresh entropy (two restores of one snapshot must not share
   * a random stream), the host's time (its clock is the snapshot's), and for a fork its own hostname
   * and NIC identity. The network part is what the services would put in a boot config.
   */
  async #resumeGuest(link: GuestLink, restore: NonNullable<ResolvedSupervisorConfig["restore"]>, timeoutMs: number): Promise<void> {
    if (!link.resume) throw SupervisorErrors.BOOT_FAILED({ message: "the guest link cannot resume a restored guest" });
    let network: Record<string, unknown> | undefined;
    const mac = this.#launch.network?.mac;
    // A guest captured before its boot config gets hostname and addressing from that config; it only
    // needs its NIC's new hardware address first.
    const unconfigured = link.hello.state === "awaiting-config";
    if (mac && mac !== restore.sourceMac) {
      let cfg: Record<string, unknown> = {};
      for (const s of this.#services) if (s.bootConfig) cfg = await s.bootConfig({ ...cfg });
      if (cfg.network && typeof cfg.network === "object") {
        const n = cfg.network as Record<string, unknown>;
        network = unconfigured ? { iface: n.iface, mac: n.mac } : n;
      }
    }
    const report = await link.resume(
      {
        entropyBase64: randomBytes(64).toString("base64"),
        timeUnixMs: Date.now(),
        ...(restore.hostname !== restore.sourceHostname && !unconfigured ? { hostname: restore.hostname } : {}),
        ...(network ? { network } : {}),
      },
      timeoutMs,
    );
    if (report.error) throw SupervisorErrors.BOOT_FAILED({ message: `the restored guest could not apply its new state: ${report.error}`, details: { ...report } });
    const parts = [`guest RNG reseeded (${report.entropyBytes} bytes), clock stepped ${report.clockStepMs} ms`];
    // A configured guest gets no boot config again: its secrets (wiped before the capture) come back
    // by `refresh`, and a fork's trust files are rewritten for its own, new workspace CA.
    if (!unconfigured) {
      const refreshed = await this.#refreshGuest(link, { trust: restore.fork === true }, timeoutMs);
      if (refreshed) parts.push(refreshed);
    }
    if (report.hostnameSet) parts.push(`hostname ${restore.hostname}`);
    if (report.networkSet) parts.push(`NIC ${mac}`);
    if (restore.fork) parts.push("network flows and console sessions from before the snapshot were reset");
    this.#resumeNote = parts.join(", ");
    this.deps.log(`resumed from snapshot ${restore.tag}: ${this.#resumeNote}`);
  }

  /**
   * This boot's secrets and (with `trust`) its egress trust files, as the services would put them in a
   * boot config, sent with `refresh`; nothing is sent when there is neither. Fails the caller when the
   * guest cannot apply them (a guest without its secrets must not look healthy).
   */
  async #refreshGuest(link: GuestLink, opts: { trust: boolean }, timeoutMs: number): Promise<string | undefined> {
    let cfg: Record<string, unknown> = {};
    for (const s of this.#services) if (s.bootConfig) cfg = await s.bootConfig({ ...cfg });
    const secrets = Array.isArray(cfg.secrets) && cfg.secrets.length > 0 ? (cfg.secrets as Array<{ name: string; contentBase64: string }>) : undefined;
    const files = Array.isArray(cfg.files) ? (cfg.files as Array<{ path?: unknown; contentBase64?: unknown }>) : [];
    const trust = opts.trust
      ? files.filter((f): f is { path: string; contentBase64: string } => typeof f.path === "string" && f.path.startsWith("/run/microagent/egress/") && typeof f.contentBase64 === "string").map((f) => ({ path: f.path, contentBase64: f.contentBase64 }))
      : [];
    if (!secrets && trust.length === 0) return undefined;
    if (!link.refresh) throw SupervisorErrors.BOOT_FAILED({ message: "the guest's init cannot take its secrets or trust files again after a snapshot (no `refresh`): rebuild the workspace with the current microagent" });
    const r = await link.refresh({ ...(secrets ? { secrets } : {}), ...(trust.length ? { trust } : {}) }, timeoutMs);
    if (r.error) throw SupervisorErrors.BOOT_FAILED({ message: `the guest could not take its secrets or trust files again: ${r.error}` });
    return [r.secrets ? `${r.secrets} secret(s) delivered again` : "", r.trustFiles ? `${r.trustFiles} trust file(s) for the new workspace CA` : ""].filter(Boolean).join(", ");
  }

  /** True when this boot delivered secrets to /run/secrets. */
  async #hasSecrets(): Promise<boolean> {
    // From the service's description (names only): building its boot config would copy every value.
    for (const s of this.#services) {
      if (s.name !== "secrets" || !s.describe) continue;
      const d = (await s.describe()) as { secrets?: unknown[] };
      if (Array.isArray(d.secrets) && d.secrets.length > 0) return true;
    }
    return false;
  }

  /**
   * After a capture that wiped /run/secrets: deliver them again, now if the guest runs, else at the
   * next `resume` (a `--leave-paused` capture). A failure is logged and recorded: the workspace runs
   * on without its secrets, and says so.
   */
  async #redeliverSecrets(): Promise<void> {
    const link = this.#link;
    if (this.phase !== "running" || !link) {
      this.#secretsPending = true;
      return;
    }
    this.#secretsPending = false;
    try {
      await this.#refreshGuest(link, { trust: false }, 30_000);
    } catch (e) {
      this.deps.log(`delivering the secrets again after the snapshot failed: ${(e as Error).message}`);
      await this.deps.record("running", `the secrets could not be delivered again after a snapshot: ${(e as Error).message}`).catch(() => {});
    }
  }

  /** Before a capture: /run/secrets wiped in the guest when this boot delivered any (so no snapshot holds a value). */
  async #wipeGuestSecrets(): Promise<boolean> {
    if (!(await this.#hasSecrets())) return false;
    const link = this.#link;
    if (!link?.wipeSecrets) throw WorkspaceErrors.SNAPSHOT_NOT_ALLOWED({ message: `workspace ${this.config.workspace} has secrets in /run/secrets and its guest cannot wipe them before a snapshot`, remediation: "Restart the workspace with the current microagent, then snapshot it." });
    const r = await link.wipeSecrets(30_000);
    if (r.error) throw WorkspaceErrors.SNAPSHOT_NOT_ALLOWED({ message: `workspace ${this.config.workspace}: /run/secrets could not be wiped before the snapshot: ${r.error}`, remediation: "Check the guest's /run/secrets mount (`microagent exec NAME -- grep secrets /proc/mounts`) and retry." });
    return true;
  }

  /** The warm-run capture (config.warmCapture): pause, freeze the disk, save, thaw; failures only logged. */
  async #captureWarm(vm: RunningVm, link: GuestLink, w: { stateFile: string; overlayPath: string }): Promise<void> {
    const snap = this.deps.backend.snapshot;
    if (!snap || !this.deps.freeze || !this.deps.thaw) return;
    const t0 = performance.now();
    let paused = false;
    try {
      // A ping answered means the guest has taken our welcome and its session is active. Captured any
      // earlier, it would still wait for a welcome that was in flight (bytes in flight are not part of
      // the saved state) and ignore every later host's hello request: each restore of that snapshot
      // then timed out waiting for the guest's hello, with nothing on the serial console.
      await link.ping(10_000);
      await this.deps.freeze(vm);
      paused = true;
      const frozen = await snap.freezeDisk(vm, this.#launch, w.overlayPath);
      this.#launch = { ...this.#launch, disk: { path: w.overlayPath, format: "qcow2" } };
      await this.deps.diskSwitched?.(this.#launch.disk);
      const saved = await snap.saveState(vm, this.#launch, w.stateFile, { timeoutMs: 60_000 });
      await this.deps.thaw(vm);
      paused = false;
      this.deps.warmCaptured?.({ frozen, stateBytes: saved.bytes, ...(this.#launch.network?.mac ? { mac: this.#launch.network.mac } : {}) });
      this.deps.log(`warm snapshot captured after the hello in ${Math.round(performance.now() - t0)} ms (${saved.bytes} bytes of state)`);
    } catch (e) {
      this.deps.log(`warm snapshot capture failed (the boot goes on cold): ${(e as Error).message}`);
    } finally {
      if (paused) await this.deps.thaw(vm).catch((e) => this.deps.log(`resuming after the failed warm capture failed: ${(e as Error).message}`));
    }
  }

  /**
   * Capture the VM (the `snapshot` op): paused for the capture, its disk frozen onto the new overlay
   * (recorded at once, so whatever happens next the workspace boots from the layer QEMU writes to),
   * memory and device state saved, then running again unless asked to stay paused. The phase is
   * `paused` while it happens, so no exec or console slips in; the channel stays connected.
   */
  async snapshot(req: { stateFile: string; overlayPath: string; leavePaused: boolean; timeoutMs?: number | undefined }): Promise<OpResult<"snapshot">> {
    const snap = this.deps.backend.snapshot;
    const vm = this.#vm;
    if (!snap || !this.deps.freeze || !this.deps.thaw) {
      throw WorkspaceErrors.SNAPSHOT_UNSUPPORTED({ message: `the ${this.deps.backend.name} backend cannot snapshot workspace ${this.config.workspace}` });
    }
    if ((this.phase !== "running" && this.phase !== "paused") || !vm) {
      throw SupervisorErrors.NOT_RUNNING({ message: `workspace ${this.config.workspace} is ${this.phase}; only a running or paused workspace can be snapshotted` });
    }
    if (this.#snapshotting) throw WorkspaceErrors.SNAPSHOT_NOT_ALLOWED({ message: `workspace ${this.config.workspace} is already being snapshotted` });
    this.#snapshotting = true;
    const wasPaused = this.phase === "paused";
    let pauseMs = 0;
    let resumeMs = 0;
    let wiped = false;
    try {
      // The guest must run to wipe its secrets: a paused workspace with secrets is thawed for it.
      if (wasPaused && !this.#secretsPending && (await this.#hasSecrets())) {
        throw WorkspaceErrors.SNAPSHOT_NOT_ALLOWED({
          message: `workspace ${this.config.workspace} is paused with secrets in /run/secrets, which a snapshot must not hold`,
          remediation: `Resume it (\`microagent resume ${this.config.workspace}\`) and snapshot the running workspace: the secrets are wiped for the capture and delivered again after it.`,
        });
      }
      // As for a warm capture: the guest has consumed what the host sent so far (a frame half-read
      // at the capture would garble the restored guest's first frame from its new host).
      if (!wasPaused && this.#link) await this.#link.ping(10_000);
      if (!wasPaused) wiped = await this.#wipeGuestSecrets();
      if (!wasPaused) {
        this.#transitionPhase("paused", "pause");
        const t0 = performance.now();
        try {
          await this.deps.freeze(vm);
        } catch (e) {
          if ((this.phase as SupervisorPhase) === "paused") this.#transitionPhase("running", "resume");
          throw e;
        }
        pauseMs = performance.now() - t0;
      } else if ((await vm.runState?.().catch(() => undefined))?.status === "postmigrate") {
        // Paused by an earlier capture (`--leave-paused`): QEMU has inactivated the disks and refuses
        // another migration until the VM ran again. Thaw and freeze at once (the guest runs for about a
        // millisecond) so this capture starts from a normal pause.
        await this.deps.thaw(vm);
        await this.deps.freeze(vm);
      }
      let frozen: Awaited<ReturnType<typeof snap.freezeDisk>>;
      let saved: { bytes: number; ms: number };
      let freezeMs = 0;
      try {
        const tf = performance.now();
        frozen = await snap.freezeDisk(vm, this.#launch, req.overlayPath);
        freezeMs = performance.now() - tf;
        this.#launch = { ...this.#launch, disk: { path: req.overlayPath, format: "qcow2" } };
        await this.deps.diskSwitched?.(this.#launch.disk);
        saved = await snap.saveState(vm, this.#launch, req.stateFile, req.timeoutMs !== undefined ? { timeoutMs: req.timeoutMs } : {});
      } finally {
        if (!wasPaused && !req.leavePaused && (this.phase as SupervisorPhase) === "paused") {
          const tr = performance.now();
          try {
            await this.deps.thaw(vm);
            this.#transitionPhase("running", "resume");
          } catch (e) {
            this.deps.log(`resuming after the snapshot failed (the VM stays paused): ${(e as Error).message}`);
          }
          resumeMs = performance.now() - tr;
        }
      }
      if (wiped) {
        wiped = false;
        await this.#redeliverSecrets();
      }
      const state = (this.phase as SupervisorPhase) === "running" ? "running" : "paused";
      if (!wasPaused && state === "paused" && (this.phase as SupervisorPhase) === "paused") {
        await this.deps.record("paused", `paused after snapshot (vCPUs frozen; memory, disk and flows kept)`);
      }
      return {
        state,
        wasPaused,
        disk: { path: frozen.path, format: frozen.format, virtualSizeBytes: frozen.virtualSizeBytes },
        stateBytes: saved.bytes,
        ...(this.#launch.network?.mac ? { mac: this.#launch.network.mac } : {}),
        pauseMs,
        freezeMs,
        saveMs: saved.ms,
        resumeMs,
      };
    } finally {
      // A failed capture after the wipe: the guest gets its secrets back all the same.
      if (wiped) await this.#redeliverSecrets();
      this.#snapshotting = false;
    }
  }

  async quarantine(): Promise<OpResult<"quarantine">> {
    if (this.phase === "quarantined") return { state: "quarantined" };
    if (!canTransitionPhase(this.phase, "quarantined")) {
      throw SupervisorErrors.NOT_RUNNING({ message: `workspace ${this.config.workspace} is ${this.phase}; only a running or starting workspace can be quarantined` });
    }
    this.#transitionPhase("quarantined", "quarantine");
    // Sever first, record second: nothing may reach the guest once the request is accepted. All of
    // it is synchronous, so no request slips in between.
    this.#severed = true;
    this.#link?.close();
    for (const c of this.#consoles) c.close();
    for (const s of this.#services) {
      try {
        s.sever?.("quarantined");
      } catch (e) {
        this.deps.log(`service ${s.name}: sever failed (severing the others anyway): ${(e as Error).message}`);
      }
    }
    this.#ready.reject(SupervisorErrors.QUARANTINED({ message: `workspace ${this.config.workspace} was quarantined while booting` }));
    let frozen = false;
    if (this.#vm && this.deps.freeze) {
      frozen = await this.deps.freeze(this.#vm).then(
        () => true,
        (e) => {
          this.deps.log(`freezing the VM failed: ${(e as Error).message}`);
          return false;
        },
      );
    }
    await this.deps.record("quarantined", `quarantined: guest channel and console input severed; VM ${frozen ? "frozen" : "kept running without any host path"}; disk and events kept`);
    return { state: "quarantined", frozen };
  }
}

function firstLine(s: string): string {
  return s.split("\n")[0] ?? s;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms).unref());
}
