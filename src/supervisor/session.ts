/**
 * The supervisor's core: one VM's life from launch to exit. It boots the VM through the backend,
 * completes the guest handshake, sends the boot config, records every state change, relays
 * workload output and result, and serves the control operations (exec, console, shutdown, kill,
 * quarantine, readiness). Everything with side effects comes in through `SupervisorDeps`, so the
 * whole life cycle is unit-tested with a fake backend and a fake guest link.
 *
 * Quarantine decision: the guest channel and every console are severed at once, and the VM is
 * frozen (vCPUs stopped via QMP when available) but kept, so its disk and memory stay as evidence
 * until halt/stop/kill; those end it without talking to the guest.
 */
import type { Duplex } from "node:stream";
import { randomUUID } from "node:crypto";
import { CommonErrors, isMicroagentError, toMicroagentError, type MicroagentError } from "../contract/errors.ts";
import type { Backend, RunningVm, VmExit, VmLaunchSpec } from "../backend/types.ts";
import type { WorkspaceState } from "../workspace/events.ts";
import { SupervisorErrors } from "./errors.ts";
import type { GuestLink } from "./guest-link.ts";
import { IoPauseWatch } from "./io-pause.ts";
import type { ExecRequest, ExecResult, Readiness, ReadinessProbe, SupervisorPhase, SupervisorStatus, WorkloadResult } from "./protocol.ts";
import type { ConsoleSession, ControlHandlers, ExecIo, OutputSink, OutputStream } from "./server.ts";
import type { ServiceContext, SupervisorService } from "./service.ts";

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
  /** Per-VM services (network stack, ...), called at the hook points of service.ts. */
  services?: readonly SupervisorService[];
  log(message: string): void;
}

type StopIntent = "halt" | "halt-timeout" | "stop" | "kill" | "workload" | "boot-failed";

/**
 * Output retained for late attachers: bounded, oldest dropped first. It is credited to the guest at
 * once when nobody is attached (the workload runs free); while clients are attached, a chunk is
 * credited only once every attacher has room, so a stalled attacher holds the workload back
 * (blocked on its stdout) until the control server disconnects it.
 */
const WORKLOAD_BUFFER_BYTES = 8 * 1024 * 1024;

export class Supervisor implements ControlHandlers {
  readonly config: ResolvedSupervisorConfig;
  readonly deps: SupervisorDeps;
  readonly startedAt = new Date();
  readonly bootId = randomUUID();
  phase: SupervisorPhase = "booting";
  vm: RunningVm | undefined;
  link: GuestLink | undefined;
  bootMs: number | undefined;
  workload: WorkloadResult | undefined;
  #intent: StopIntent | undefined;
  #finalState: WorkspaceState | undefined;
  #finalDetail = "";
  #ioPause: IoPauseWatch | undefined;
  #bootError: MicroagentError | undefined;
  #ready: Promise<void>;
  #readyResolve!: () => void;
  #readyReject!: (e: unknown) => void;
  #done: Promise<WorkspaceState>;
  #doneResolve!: (s: WorkspaceState) => void;
  #vmDeath: Promise<never>;
  #vmDeathReject!: (e: unknown) => void;
  #output: { seq: number; stream: OutputStream; data: Buffer }[] = [];
  #outputSeq = 0;
  #outputBytes = 0;
  #outputTruncated = false;
  #attachers = new Set<OutputSink>();
  #attachedOnce = false;
  #resultWaiters: ((r: WorkloadResult) => void)[] = [];
  #consoles = new Set<ConsoleSession>();
  #guestReadyAt: string | undefined;
  #servicesStopped: Promise<void> | undefined;

  constructor(config: ResolvedSupervisorConfig, deps: SupervisorDeps) {
    this.config = config;
    this.deps = deps;
    this.#ready = new Promise((res, rej) => {
      this.#readyResolve = res;
      this.#readyReject = rej;
    });
    this.#ready.catch(() => {});
    this.#done = new Promise((res) => (this.#doneResolve = res));
    this.#vmDeath = new Promise((_res, rej) => (this.#vmDeathReject = rej));
    this.#vmDeath.catch(() => {});
  }

  /** Resolves with the final state once the VM is gone and the state recorded. */
  get done(): Promise<WorkspaceState> {
    return this.#done;
  }

  /** Whether a client ever attached to the workload output (the main loop lingers otherwise). */
  get attachedOnce(): boolean {
    return this.#attachedOnce;
  }

  /** Boot the VM and bring the guest up. Never throws: failures are recorded and end the session. */
  async boot(): Promise<void> {
    const started = Date.now();
    const deadline = started + this.config.bootTimeoutMs;
    const services = this.deps.services ?? [];
    try {
      let launch = this.config.launch;
      for (const s of services) if (s.beforeLaunch) launch = await s.beforeLaunch(launch);
      const vm = await this.deps.backend.lifecycle.launch(launch);
      this.vm = vm;
      this.#ioPause = new IoPauseWatch(vm, { workspace: this.config.workspace, diskPath: this.config.launch.disk.path, ...this.config.ioPause, log: this.deps.log });
      void vm.exited.then((exit) => this.#onVmExit(exit));
      await this.deps.vmLaunched(vm);
      const ctx: ServiceContext = { vm, launch, remainingMs: () => Math.max(0, deadline - Date.now()), log: this.deps.log };
      for (const s of services) if (s.afterLaunch) await this.#guard(s.afterLaunch(ctx));
      const channel = this.deps.backend.channel;
      if (!channel) throw SupervisorErrors.BOOT_FAILED({ message: `backend ${this.deps.backend.name} has no guest channel` });
      const stream = await this.#guard(channel.openChannel(vm, this.config.launch));
      const remaining = () => Math.max(1, deadline - Date.now());
      // The boot bound is this #bounded; the link's own hello timeout is only a backstop, set past it so
      // that one message ("timed out after N ms waiting for ...") reports an overrun boot.
      const link = await this.#guard(this.#bounded(this.deps.connectLink(stream, remaining() + 1000), remaining(), "the guest's hello", this.config.bootTimeoutMs));
      this.link = link;
      this.#guestReadyAt = new Date().toISOString();
      link.onWorkloadOutput((s, d) => this.#onWorkloadOutput(s, d));
      let bootConfig = this.config.bootConfig as Record<string, unknown>;
      for (const s of services) if (s.bootConfig) bootConfig = await s.bootConfig(bootConfig);
      await this.#guard(this.#bounded(link.sendBootConfig(bootConfig), remaining(), "the guest to accept its boot config", this.config.bootTimeoutMs));
      this.bootMs = Date.now() - started;
      if (this.#intent) return; // stopped or killed while booting
      this.phase = "running";
      await this.deps.record("running", `guest ready in ${this.bootMs} ms (accel ${this.config.launch.accel})`);
      this.#readyResolve();
      void link.workloadResult().then(
        (r) => this.#onWorkloadResult(r),
        () => {},
      );
      void link.closed.then((reason) => {
        if (this.phase === "running" && !this.#intent) this.deps.log(`guest channel closed: ${reason?.message ?? "eof"}`);
      });
    } catch (e) {
      await this.#bootFailed(e);
    }
  }

  async #bootFailed(e: unknown): Promise<void> {
    if (this.#intent && this.#intent !== "boot-failed") return; // a stop/kill during boot explains it
    const tail = await this.deps.serialTail().catch(() => "");
    const cause = isMicroagentError(e) ? e : toMicroagentError(e);
    const err =
      cause.code === "VM_DIED" || cause.code === "BOOT_FAILED" || cause.code === "DISK_FULL" || cause.code.startsWith("NETWORK_")
        ? cause
        : SupervisorErrors.BOOT_FAILED({
            message: `workspace ${this.config.workspace} failed to boot: ${cause.message}\nserial log tail:\n${tail.trimEnd() || "(empty: the guest printed nothing yet)"}`,
            remediation: cause.remediation,
            cause,
            details: { code: cause.code, serialTail: tail },
          });
    this.#bootError = err;
    this.#intent = "boot-failed";
    this.deps.log(err.message);
    // Record first, answer second: whoever waits on the boot reads `failed` once it hears why.
    await this.#finish("failed", firstLine(err.message));
    this.#readyReject(err);
  }

  /**
   * Reject when the VM dies before `p` settles. The channel usually notices first (the socket
   * closes a moment before QEMU is reaped), so a channel failure waits briefly for the VM's exit
   * and then reports VM_DIED with the exit status and serial tail instead of a bare "peer closed".
   */
  #guard<T>(p: Promise<T>): Promise<T> {
    const translated = p.catch(async (e: unknown) => {
      const vm = this.vm;
      if (vm && isMicroagentError(e) && e.code.startsWith("CHANNEL_")) {
        const exited = await Promise.race([vm.exited.then(() => true), sleep(1500).then(() => false)]);
        if (exited) await this.#vmDeath;
      }
      throw e;
    });
    const guarded = Promise.race([translated, this.#vmDeath]);
    // A VM paused on a full host disk answers nothing: fail at once with DISK_FULL instead.
    return this.#ioPause ? this.#ioPause.race(guarded) : guarded;
  }

  /** `p`, or a timeout after `ms`; the message names `boundMs` (the whole bound a boot step is part of). */
  #bounded<T>(p: Promise<T>, ms: number, what: string, boundMs = ms): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_r, rej) => {
      timer = setTimeout(() => rej(new Error(`timed out after ${boundMs} ms waiting for ${what}`)), ms);
    });
    return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
  }

  async #onVmExit(exit: VmExit): Promise<void> {
    const how = exit.signal ? `killed by ${exit.signal}` : `exit code ${exit.code}`;
    const tail = await this.deps.serialTail().catch(() => "");
    const stderr = this.vm?.stderrTail() ?? "";
    const requested = this.#intent === "halt" || this.#intent === "halt-timeout" || this.#intent === "stop" || this.#intent === "kill";
    this.#vmDeathReject(
      requested
        ? // Requests in flight when someone halted/stopped/killed the workspace: not a crash.
          SupervisorErrors.NOT_RUNNING({
            message: `workspace ${this.config.workspace} was ${this.#intent === "kill" ? "killed" : this.#intent === "stop" ? "stopped" : "halted"} on request while this request was in flight`,
            details: { exit, intent: this.#intent },
          })
        : SupervisorErrors.VM_DIED({
            message: `the VM of workspace ${this.config.workspace} exited (${how})${tail ? `; serial log tail:\n${tail.trimEnd()}` : ""}${stderr ? `\nQEMU error output:\n${stderr.trimEnd()}` : ""}`,
            details: { exit, serialTail: tail, stderrTail: stderr },
          }),
    );
    this.link?.close();
    for (const c of this.#consoles) c.close();
    void this.#stopServices();
    if (this.#finalState) return;
    switch (this.#intent) {
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
        if (this.workload) return this.#finishWorkload();
        return this.#finish("failed", `the VM exited unexpectedly (${how})`);
    }
  }

  #finishWorkload(): Promise<void> {
    const r = this.workload;
    if (!r) return this.#finish("failed", "the VM exited before the workload reported a result");
    if (r.startError) return this.#finish("failed", `workload failed to start: ${r.startError}`);
    if (r.signal) return this.#finish("failed", `workload killed by signal ${r.signal}`);
    if ((r.exitCode ?? 0) !== 0) return this.#finish("failed", `workload exited with code ${r.exitCode}`);
    return this.#finish("stopped", "workload exited with code 0");
  }

  async #finish(state: WorkspaceState, detail: string): Promise<void> {
    if (this.#finalState) return;
    this.#finalState = state;
    this.#finalDetail = detail;
    this.phase = "exited";
    for (const c of this.#consoles) c.close();
    await this.deps.record(state, detail).catch((e) => this.deps.log(`recording ${state} failed: ${(e as Error).message}`));
    if (this.vm && !this.vm.exitStatus()) await this.vm.kill().catch(() => {});
    await this.#stopServices();
    this.#doneResolve(state);
  }

  /** Returns a promise when the guest's credit must wait for attachers to have room. */
  #onWorkloadOutput(stream: OutputStream, frame: Buffer): Promise<unknown> | undefined {
    // A copy: the frame may be a slice of a larger read buffer, which the ring must not pin.
    const data = Buffer.from(frame);
    this.#output.push({ seq: this.#outputSeq++, stream, data });
    this.#outputBytes += data.length;
    while (this.#outputBytes > WORKLOAD_BUFFER_BYTES && this.#output.length > 1) {
      this.#outputBytes -= (this.#output.shift() as { data: Buffer }).data.length;
      this.#outputTruncated = true;
    }
    const waits = [...this.#attachers].map((a) => a(stream, data)).filter((w) => w instanceof Promise);
    return waits.length > 0 ? Promise.all(waits) : undefined;
  }

  async #onWorkloadResult(result: WorkloadResult): Promise<void> {
    this.workload = result;
    await this.deps.writeResult(result).catch((e) => this.deps.log(`writing result.json failed: ${(e as Error).message}`));
    for (const w of this.#resultWaiters.splice(0)) w(result);
    if (!result.ran || this.#intent) return;
    // The workload is the VM's purpose: when it ends, the VM ends.
    this.#intent = "workload";
    this.phase = "stopping";
    await this.#powerOff(this.config.shutdownTimeoutMs);
  }

  /** Ask the guest to power off; terminate the VMM if it does not within `timeoutMs`. Returns true when clean. */
  async #powerOff(timeoutMs: number, beforeTerminate?: () => void): Promise<boolean> {
    const vm = this.vm;
    if (!vm) return true;
    if (vm.exitStatus()) return true;
    const exited = vm.exited.then(() => true);
    try {
      if (this.link && this.phase !== "quarantined") await this.#bounded(this.link.shutdown(timeoutMs), timeoutMs, "the guest to accept shutdown");
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

  /** The VM is gone: release every service (reverse order), once. */
  #stopServices(): Promise<void> {
    this.#servicesStopped ??= (async () => {
      for (const s of [...(this.deps.services ?? [])].reverse()) {
        await Promise.resolve(s.stop?.()).catch((e: unknown) => this.deps.log(`service ${s.name}: stop failed: ${(e as Error).message}`));
      }
    })();
    return this.#servicesStopped;
  }

  /** What each service reports (`microagent network`, `status`). */
  services(): Record<string, Record<string, unknown>> {
    const out: Record<string, Record<string, unknown>> = {};
    for (const s of this.deps.services ?? []) if (s.describe) out[s.name] = s.describe();
    return out;
  }

  // ---- control handlers ----

  status(): SupervisorStatus {
    return {
      workspace: this.config.workspace,
      phase: this.phase,
      supervisorPid: process.pid,
      ...(this.vm ? { vmmPid: this.vm.pid } : {}),
      accel: this.config.launch.accel,
      bootId: this.bootId,
      startedAt: this.startedAt.toISOString(),
      ...(this.bootMs !== undefined ? { bootMs: this.bootMs } : {}),
      ...(this.workload ? { workload: this.workload } : {}),
    };
  }

  async ping(): Promise<{ guestMs: number }> {
    const link = this.#requireLink("exec");
    return { guestMs: await this.#guard(link.ping(5000)) };
  }

  async waitReady(timeoutMs: number | undefined): Promise<SupervisorStatus> {
    if (this.#bootError) throw this.#bootError;
    const wait = timeoutMs ? this.#bounded(this.#ready, timeoutMs, "the workspace to be running") : this.#ready;
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
    if (this.phase === "quarantined") {
      throw SupervisorErrors.QUARANTINED({ message: `workspace ${this.config.workspace} is quarantined: ${what} is severed` });
    }
    if (this.phase !== "running" || !this.link) {
      if (what === "console") {
        throw SupervisorErrors.CONSOLE_UNAVAILABLE({ message: `console input is unavailable: workspace ${this.config.workspace} is ${this.phase}, not running` });
      }
      throw SupervisorErrors.NOT_RUNNING({ message: `workspace ${this.config.workspace} is ${this.phase}, not running: cannot ${what}` });
    }
    return this.link;
  }

  async exec(req: ExecRequest, onOutput: OutputSink | undefined, signal: AbortSignal, io?: ExecIo): Promise<ExecResult> {
    if (this.phase === "booting") await this.waitReady(this.config.bootTimeoutMs);
    const link = this.#requireLink("exec");
    return this.#guard(link.exec(req, onOutput, signal, io));
  }

  async attach(onOutput: OutputSink, signal: AbortSignal): Promise<WorkloadResult> {
    this.#attachedOnce = true;
    if (this.#outputTruncated) this.deps.log("a late attach missed the oldest workload output (buffer cap)");
    // Replay at the client's pace; output that arrives meanwhile joins the ring and is replayed too.
    // Once caught up (checked and registered synchronously), the attacher follows live.
    let next = 0;
    for (;;) {
      const pending = this.#output.filter((o) => o.seq >= next);
      if (pending.length === 0 || signal.aborted) break;
      for (const o of pending) {
        if (signal.aborted) break;
        await onOutput(o.stream, o.data);
        next = o.seq + 1;
      }
    }
    if (signal.aborted) throw new Error("client went away");
    if (this.workload) return this.workload;
    if (this.#bootError) throw this.#bootError;
    this.#attachers.add(onOutput);
    try {
      return await this.waitResult(signal);
    } finally {
      this.#attachers.delete(onOutput);
    }
  }

  waitResult(signal: AbortSignal): Promise<WorkloadResult> {
    if (this.workload) return Promise.resolve(this.workload);
    if (this.#bootError) return Promise.reject(this.#bootError);
    return new Promise<WorkloadResult>((resolve, reject) => {
      this.#resultWaiters.push(resolve);
      signal.addEventListener("abort", () => reject(new Error("client went away")), { once: true });
      void this.#done.then((state) => {
        // The VM ended without a result (killed, crashed, halted while the workload ran).
        setImmediate(() => {
          if (this.workload) resolve(this.workload);
          else if (this.#bootError) reject(this.#bootError);
          else reject(SupervisorErrors.VM_DIED({ message: `workspace ${this.config.workspace} ended (${state}) before its workload reported a result` }));
        });
      });
    });
  }

  async console(size: { cols: number; rows: number }): Promise<ConsoleSession> {
    const link = this.#requireLink("console");
    const session = await this.#guard(link.openConsole(size));
    this.#consoles.add(session);
    void session.closed.then(() => this.#consoles.delete(session));
    return session;
  }

  async readiness(timeoutMs: number | undefined): Promise<Readiness> {
    const now = () => new Date().toISOString();
    const probe = (ready: boolean, detail?: string, error?: string): ReadinessProbe => ({
      ready,
      observedAt: now(),
      ...(detail ? { detail } : {}),
      ...(error ? { error } : {}),
    });
    const resultReady = this.workload ? probe(true, describeResult(this.workload)) : probe(false, "no workload result yet");
    if (this.#ioPause?.paused) {
      // Paused by the VMM on a failed disk write: nothing in the guest can answer; say why.
      const why = this.#ioPause.error();
      const paused = probe(false, undefined, `${why.code}: ${why.message}. ${why.remediation}`);
      return { guestReady: paused, execReady: paused, shellReady: paused, resultReady };
    }
    const guestReady = this.link && this.phase === "running" ? probe(true, `handshake at ${this.#guestReadyAt}`) : probe(false, `phase ${this.phase}`);
    let execReady = probe(false, "guest not running");
    let shellReady = probe(false, "guest not running");
    if (guestReady.ready && this.link) {
      const limit = timeoutMs ?? 5000;
      try {
        const started = Date.now();
        // Any completed exec proves the round trip, even "failed_to_start" for an image without `true`.
        const r = await this.#bounded(this.link.exec({ argv: ["true"], timeoutMs: limit }, undefined), limit, "an exec round trip");
        execReady = probe(true, `no-op exec ${r.status} in ${Date.now() - started} ms`);
      } catch (e) {
        execReady = probe(false, undefined, (e as Error).message);
      }
      try {
        const r = await this.#bounded(this.link.exec({ argv: [this.config.shell, "-c", "exit 0"], timeoutMs: limit }, undefined), limit, "a shell");
        shellReady = r.status === "exited" && r.exitCode === 0 ? probe(true, `${this.config.shell} answered`) : probe(false, `${this.config.shell}: ${r.status}${r.error ? ` ${r.error}` : ""}`);
      } catch (e) {
        shellReady = probe(false, undefined, (e as Error).message);
      }
    }
    return { guestReady, execReady, shellReady, resultReady };
  }

  async shutdown(mode: "halt" | "stop", timeoutMs: number | undefined): Promise<unknown> {
    const limit = timeoutMs ?? this.config.shutdownTimeoutMs;
    if (this.#finalState) {
      // Ended just before this request (a kill or crash racing the halt): not a clean halt either.
      if (mode === "halt" && this.#finalState !== "halted" && this.#intent !== "workload") throw this.#haltNotClean(this.#finalState);
      return { state: this.#finalState };
    }
    if (this.#intent === "workload") return { state: await this.#done };
    this.#intent = mode;
    const wasQuarantined = this.phase === "quarantined";
    this.phase = "stopping";
    await this.deps.record("stopping", `${mode} requested`).catch((e) => this.deps.log(`recording stopping failed: ${(e as Error).message}`));
    this.#readyReject(SupervisorErrors.NOT_RUNNING({ message: `workspace ${this.config.workspace} was ${mode === "halt" ? "halted" : "stopped"} while booting` }));
    // A VM paused on a full disk cannot shut down: resume it if there is room again, else end it now
    // (asking a frozen guest would only wait out the timeout).
    if (this.#ioPause?.paused && !(await this.#ioPause.resumeIfSpace())) {
      const why = this.#ioPause.error();
      if (mode === "halt") this.#intent = "halt-timeout";
      await this.vm?.terminate({ graceMs: 2000 }).catch(() => {});
      if (mode === "stop") return { state: await this.#done };
      await this.#finish("failed", `halt: the VM was paused on a full host disk and was terminated without a clean shutdown`);
      throw CommonErrors.DISK_FULL({
        message: `workspace ${this.config.workspace} could not be halted cleanly: ${why.message}; it was terminated and recorded failed (writes the guest had not flushed are lost)`,
        remediation: why.remediation.replace(/: the VM resumes by itself.*$/, ", then `microagent start " + this.config.workspace + "`."),
      });
    }
    if (!this.vm || wasQuarantined || !this.link) {
      // No guest to ask (still booting, or severed): end the VMM. The disk is kept either way.
      await this.vm?.terminate({ graceMs: 2000 });
    } else {
      const clean = await this.#powerOff(limit, () => {
        if (mode === "halt") this.#intent = "halt-timeout";
      });
      if (!clean && mode === "halt") {
        const tail = await this.deps.serialTail().catch(() => "");
        await this.#finish("failed", `halt: the guest did not power off within ${limit} ms; the VM was terminated`);
        throw SupervisorErrors.SHUTDOWN_TIMEOUT({
          message: `workspace ${this.config.workspace} did not shut down within ${limit} ms; it was terminated and recorded failed${tail ? `\nserial log tail:\n${tail.trimEnd()}` : ""}`,
        });
      }
    }
    const state = await this.#done;
    // Something else ended the VM before the guest flushed and powered off (a concurrent kill):
    // that is not a clean halt, whatever state it left.
    if (mode === "halt" && state !== "halted") throw this.#haltNotClean(state);
    return { state };
  }

  #haltNotClean(state: WorkspaceState): MicroagentError {
    return SupervisorErrors.HALT_NOT_CLEAN({
      message: `workspace ${this.config.workspace} was not halted cleanly: it ended ${state} (${this.#finalDetail || "no detail"}) before the guest powered off; writes it had not flushed may be lost`,
      details: { state, detail: this.#finalDetail },
    });
  }

  async kill(): Promise<unknown> {
    if (this.#finalState) return { state: this.#finalState };
    this.#intent = "kill";
    this.#readyReject(SupervisorErrors.NOT_RUNNING({ message: `workspace ${this.config.workspace} was killed while booting` }));
    if (this.vm) await this.vm.kill();
    else await this.#finish("stopped", "killed before the VM was launched");
    return { state: await this.#done };
  }

  async quarantine(): Promise<unknown> {
    if (this.phase === "quarantined") return { state: "quarantined" };
    if (this.phase !== "running" && this.phase !== "booting") {
      throw SupervisorErrors.NOT_RUNNING({ message: `workspace ${this.config.workspace} is ${this.phase}; only a running or starting workspace can be quarantined` });
    }
    this.phase = "quarantined";
    // Sever first, record second: nothing may reach the guest once the request is accepted.
    for (const s of this.deps.services ?? []) {
      try {
        s.sever?.("quarantine");
      } catch (e) {
        this.deps.log(`service ${s.name}: sever failed: ${(e as Error).message}`);
      }
    }
    this.link?.close();
    for (const c of this.#consoles) c.close();
    this.#readyReject(SupervisorErrors.QUARANTINED({ message: `workspace ${this.config.workspace} was quarantined while booting` }));
    let frozen = false;
    if (this.vm && this.deps.freeze) {
      frozen = await this.deps.freeze(this.vm).then(
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

function describeResult(r: WorkloadResult): string {
  if (!r.ran) return "no workload";
  if (r.startError) return `failed to start: ${r.startError}`;
  if (r.signal) return `killed by ${r.signal}`;
  return `exited with code ${r.exitCode}`;
}

function firstLine(s: string): string {
  return s.split("\n")[0] ?? s;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms).unref());
}
