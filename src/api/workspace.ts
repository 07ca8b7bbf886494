/**
 * The Workspace facade: one object per workspace, sharing its supervisor connection details.
 * `Workspace.start(name)` boots one, `Workspace.connect(name)` attaches to a running one; then
 * `exec`, `console`, `halt`, `stop`, `kill`, `quarantine`, `wait`, `readiness`.
 */
import type { WorkspaceAccessOptions } from "../workspace/access.ts";
import type { ConsoleConnection, SupervisorClient } from "../supervisor/client.ts";
import type { Readiness, SupervisorStatus } from "../supervisor/protocol.ts";
import { ExecHandle, type ExecOptions } from "./exec.ts";
import {
  startWorkspace,
  stopWorkspace,
  quarantineWorkspace,
  supervisorFor,
  waitWorkspace,
  type LifecycleOptions,
  type StartOptions,
  type StartResult,
  type StopResult,
  type WaitResult,
} from "./lifecycle.ts";

export class Workspace {
  readonly name: string;
  readonly #opts: LifecycleOptions;
  #client: SupervisorClient;

  private constructor(name: string, client: SupervisorClient, opts: LifecycleOptions) {
    this.name = name;
    this.#client = client;
    this.#opts = opts;
  }

  /** Boot a workspace (prepared/halted/stopped/failed) and connect to it once it is running. */
  static async start(name: string, opts: StartOptions = {}): Promise<Workspace & { started: StartResult }> {
    const started = await startWorkspace(name, opts);
    const ws = await Workspace.connect(name, opts);
    return Object.assign(ws, { started });
  }

  /** Connect to a running workspace. */
  static async connect(name: string, opts: LifecycleOptions = {}): Promise<Workspace> {
    const { client } = await supervisorFor(name, opts);
    return new Workspace(name, client, opts);
  }

  /** Run a command in the guest; await it for the result or iterate it for output as it arrives. */
  exec(argv: readonly string[], opts: ExecOptions = {}): ExecHandle {
    return new ExecHandle(this.#client, argv, opts);
  }

  /** Open the guest's interactive console (a PTY running the workspace shell). */
  console(size: { cols: number; rows: number } = { cols: 80, rows: 24 }): Promise<ConsoleConnection> {
    return this.#client.console(size);
  }

  /** Round trip to the guest (no process started there); `guestMs` is the supervisor<->guest part. */
  ping(): Promise<{ guestMs: number }> {
    return this.#client.ping();
  }

  status(): Promise<SupervisorStatus> {
    return this.#client.status();
  }

  readiness(timeoutMs?: number): Promise<Readiness> {
    return this.#client.readiness(timeoutMs);
  }

  halt(opts: { timeoutMs?: number } = {}): Promise<StopResult> {
    return stopWorkspace(this.name, "halt", { ...this.#opts, ...opts });
  }

  stop(opts: { timeoutMs?: number } = {}): Promise<StopResult> {
    return stopWorkspace(this.name, "stop", { ...this.#opts, ...opts });
  }

  kill(): Promise<StopResult> {
    return stopWorkspace(this.name, "kill", this.#opts);
  }

  quarantine(): Promise<{ workspace: string; state: string; frozen: boolean }> {
    return quarantineWorkspace(this.name, this.#opts);
  }

  wait(opts: WorkspaceAccessOptions & { timeoutMs?: number } = {}): Promise<WaitResult> {
    return waitWorkspace(this.name, { ...this.#opts, ...opts });
  }
}
