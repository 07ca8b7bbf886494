/**
 * The Workspace facade: one object per workspace, addressed by name, sharing its host options and
 * (once the workspace runs) one supervisor client. `Workspace.create()` makes one, `Workspace.get()`
 * opens an existing one, `Workspace.list()` lists them; then `start`, `exec`, `files`, `console`,
 * `status`, `halt`, `stop`, `kill`, `quarantine`, `wait` and `delete`.
 *
 * Every call is stateless underneath (the supervisor owns the VM; the state dir is the truth), so a
 * Workspace object may be dropped and re-got at any time, and two processes may hold one each.
 */
import { Buffer } from "node:buffer";
import { CommonErrors } from "../contract/errors.ts";
import { SupervisorErrors } from "../supervisor/errors.ts";
import { createSnapshot, deleteWorkspaceSnapshot, forkFromSnapshot, listWorkspaceSnapshots } from "./snapshot.ts";
import type { SnapshotCreateJson, SnapshotDeleteJson, SnapshotListJson } from "../contract/results.ts";
import type { CreateJson, DeleteJson, ListJson, PauseJson, QuarantineJson, StartJson, StopJson, WaitJson } from "../contract/results.ts";
import { openWorkspace, type WorkspaceAccessOptions } from "../workspace/access.ts";
import { createWorkspace } from "../workspace/create.ts";
import { deleteWorkspace } from "../workspace/delete.ts";
import { listWorkspaces } from "../workspace/list.ts";
import { SupervisorClient, type ConsoleConnection } from "../supervisor/client.ts";
import type { ExecResult as ControlExecResult, Readiness, SupervisorStatus } from "../supervisor/protocol.ts";
import { ApiErrors } from "./errors.ts";
import { ExecHandle, type ExecOptions } from "./exec.ts";
import {
  startWorkspace,
  stopWorkspace,
  quarantineWorkspace,
  pauseWorkspace,
  supervisorFor,
  waitWorkspace,
  type LifecycleOptions,
  type StartOptions,
  type StartResult,
  type StopResult,
  type WaitResult,
} from "./lifecycle.ts";
import { ExecRequestSchema, networkOptionsFrom, parseRequest, WorkspaceRequestSchema, type HostOptions, type WorkspaceRequest } from "./requests.ts";
import { createJson, startJson } from "./results.ts";
import { workspaceStatus, type WorkspaceStatus } from "./status.ts";

/**
 * The largest file `files.write` sends. The content is streamed to the guest as exec stdin (flow
 * controlled, no protocol limit); the cap matches reads, since the caller holds the whole file in memory.
 */
export const FILE_WRITE_MAX_BYTES = 64 * 1024 * 1024;
/** The largest file `files.read` returns (the exec stdout cap it asks for). */
export const FILE_READ_MAX_BYTES = 64 * 1024 * 1024;

/** Options of `ws.exec`: the request fields plus what only a local caller can pass. */
export type WorkspaceExecOptions = ExecOptions;

export class Workspace {
  readonly name: string;
  readonly #host: HostOptions;
  #client: SupervisorClient | undefined;
  /** File access in the guest, through exec (`cat`); see FILE_WRITE_MAX_BYTES. */
  readonly files: WorkspaceFiles;

  private constructor(name: string, host: HostOptions, client?: SupervisorClient) {
    this.name = name;
    this.#host = host;
    this.#client = client;
    this.files = new WorkspaceFiles(this);
  }

  /** Create a persistent workspace (state `prepared`; boot it with `start()`). */
  static async create(name: string, request: WorkspaceRequest, host: HostOptions = {}): Promise<Workspace & { created: CreateJson }> {
    const req = parseRequest(WorkspaceRequestSchema, request, "workspace request");
    const r = await createWorkspace({
      name,
      image: req.image,
      entrypoint: req.entrypoint,
      cmd: req.cmd,
      imageCommand: req.imageCommand,
      env: req.env,
      cwd: req.cwd,
      user: req.user,
      setup: req.setup,
      hostname: req.hostname,
      profile: req.resources?.profile,
      memoryMib: req.resources?.memoryMib,
      cpus: req.resources?.cpus,
      sizeMib: req.resources?.sizeMib,
      network: req.network,
      ...networkOptionsFrom(req.networkOptions),
      backend: req.backend,
      arch: req.arch,
      stateDir: host.stateDir,
      specFile: host.specFile,
      mke2fs: host.mke2fs,
      debugfs: host.debugfs,
      providers: host.providers,
      onProgress: host.onProgress,
    });
    return Object.assign(new Workspace(name, host), { created: createJson(r) });
  }

  /** An existing workspace (any state); WORKSPACE_NOT_FOUND when there is none. */
  static async get(name: string, host: HostOptions = {}): Promise<Workspace> {
    await openWorkspace(name, access(host));
    return new Workspace(name, host);
  }

  /** Every workspace in the state dir, each reconciled, sorted by name. */
  static async list(host: HostOptions = {}): Promise<ListJson["workspaces"]> {
    return listWorkspaces(access(host));
  }

  /** Boot a workspace (prepared/halted/stopped/failed) and connect to it once it is running. */
  static async start(name: string, opts: StartOptions = {}): Promise<Workspace & { started: StartResult }> {
    const started = await startWorkspace(name, opts);
    const ws = await Workspace.connect(name, opts);
    return Object.assign(ws, { started });
  }

  /** Connect to a running workspace (NOT_RUNNING otherwise). */
  static async connect(name: string, opts: LifecycleOptions = {}): Promise<Workspace> {
    const { client } = await supervisorFor(name, opts);
    return new Workspace(name, opts, client);
  }

  /** Boot this workspace and wait until its guest is up. */
  async start(opts: { timeoutMs?: number; force?: boolean; fromSnapshot?: string } = {}): Promise<StartJson> {
    this.#client = undefined;
    const started = await startWorkspace(this.name, { ...this.#lifecycle(), ...opts });
    return startJson(started);
  }

  /** Run a command in the guest; await it for the result or iterate it for output as it arrives. */
  exec(argv: readonly string[], opts: WorkspaceExecOptions = {}): ExecHandle {
    const { stdin: _stdin, signal: _signal, ...request } = opts;
    parseRequest(ExecRequestSchema, request, "exec request");
    return new ExecHandle(this.#client ?? new LiveClient(this), argv, opts);
  }

  /**
   * Open an interactive PTY in the guest: the workspace shell, or `opts.argv` (a command, with the
   * env/cwd/user an exec takes). `done` resolves with how the process ended when the guest reported it.
   */
  async console(opts: { cols: number; rows: number; argv?: string[]; env?: Record<string, string>; cwd?: string; user?: string } = { cols: 80, rows: 24 }): Promise<ConsoleConnection> {
    return (await this.client()).console(opts);
  }

  /** Round trip to the guest (no process started there); `guestMs` is the supervisor<->guest part. */
  async ping(): Promise<{ guestMs: number }> {
    return (await this.client()).ping();
  }

  /** State, latest event, verification of the recorded hashes, live readiness, workload result. */
  status(): Promise<WorkspaceStatus> {
    return workspaceStatus(this.name, access(this.#host));
  }

  /** The running supervisor's own view (phase, pids, accelerator). */
  async supervisorStatus(): Promise<SupervisorStatus> {
    return (await this.client()).status();
  }

  async readiness(timeoutMs?: number): Promise<Readiness> {
    return (await this.client()).readiness(timeoutMs);
  }

  halt(opts: { timeoutMs?: number } = {}): Promise<StopResult & StopJson> {
    return this.#ended(stopWorkspace(this.name, "halt", { ...this.#lifecycle(), ...opts }));
  }

  stop(opts: { timeoutMs?: number } = {}): Promise<StopResult & StopJson> {
    return this.#ended(stopWorkspace(this.name, "stop", { ...this.#lifecycle(), ...opts }));
  }

  kill(): Promise<StopResult & StopJson> {
    return this.#ended(stopWorkspace(this.name, "kill", this.#lifecycle()));
  }

  quarantine(): Promise<QuarantineJson> {
    return quarantineWorkspace(this.name, this.#lifecycle());
  }

  /** Freeze the vCPUs (memory, disk, flows and channel kept); exec/console are refused until `resume()`. */
  pause(): Promise<PauseJson> {
    return pauseWorkspace(this.name, "pause", this.#lifecycle());
  }

  /** Thaw a paused workspace; the guest continues where it stopped. */
  resume(): Promise<PauseJson> {
    return pauseWorkspace(this.name, "resume", this.#lifecycle());
  }

  /**
   * Snapshot this running or paused workspace (memory, devices, disk at that instant): paused for the
   * capture and resumed after unless `leavePaused`. `tag` defaults to `snap-YYYYMMDD-HHMMSS` (UTC).
   */
  snapshot(opts: { tag?: string; leavePaused?: boolean; timeoutMs?: number } = {}): Promise<SnapshotCreateJson> {
    return createSnapshot(this.name, { ...access(this.#host), ...opts });
  }

  /** This workspace's snapshots, oldest first, with their sizes. */
  snapshots(): Promise<SnapshotListJson> {
    return listWorkspaceSnapshots(this.name, access(this.#host));
  }

  /** Remove a snapshot (its disk layer stays while this workspace's disk or a fork needs it). */
  deleteSnapshot(tag: string): Promise<SnapshotDeleteJson> {
    return deleteWorkspaceSnapshot(this.name, tag, access(this.#host));
  }

  /**
   * Fork snapshot `tag` of this workspace into a new workspace `name` (no copy of disk or image) and
   * restore it: the same memory and files, its own hostname, MAC, random stream and clock.
   */
  async fork(tag: string, name: string, opts: { hostname?: string; timeoutMs?: number } = {}): Promise<Workspace> {
    await forkFromSnapshot(name, `${this.name}:${tag}`, { ...this.#lifecycle(), ...opts });
    return Workspace.connect(name, this.#host);
  }

  wait(opts: WorkspaceAccessOptions & { timeoutMs?: number } = {}): Promise<WaitResult & WaitJson> {
    return waitWorkspace(this.name, { ...this.#lifecycle(), ...opts });
  }

  /** Remove the workspace; refused while its VM runs unless `force` (which kills it first). Idempotent. */
  delete(opts: { force?: boolean } = {}): Promise<DeleteJson> {
    const acc = access(this.#host);
    this.#client = undefined;
    return deleteWorkspace(this.name, {
      ...acc,
      ...(opts.force ? { force: true, kill: async () => void (await stopWorkspace(this.name, "kill", acc)) } : {}),
    });
  }

  /** @internal the supervisor client, resolved (and checked live) on first use. */
  async client(): Promise<SupervisorClient> {
    this.#client ??= (await supervisorFor(this.name, access(this.#host))).client;
    return this.#client;
  }

  /** @internal forget the client after a call that may have failed because the VM went away. */
  forgetClient(): void {
    this.#client = undefined;
  }

  #lifecycle(): LifecycleOptions {
    return { ...access(this.#host), ...(this.#host.supervisorPath ? { supervisorPath: this.#host.supervisorPath } : {}) };
  }

  async #ended<T>(p: Promise<T>): Promise<T> {
    this.#client = undefined;
    return p;
  }
}

function access(host: HostOptions): WorkspaceAccessOptions {
  return host.stateDir ? { stateDir: host.stateDir } : {};
}

/**
 * The client an exec handle gets when the Workspace has not connected yet: it resolves the live
 * supervisor on first use, so a stopped workspace fails NOT_RUNNING (naming its state) instead of
 * a bare unreachable socket.
 */
class LiveClient extends SupervisorClient {
  readonly #ws: Workspace;

  constructor(ws: Workspace) {
    super("");
    this.#ws = ws;
  }

  // Every parameter passes through: dropping `io` would silently send no stdin (files.write) and
  // no signals (ExecHandle.kill).
  override async exec(...args: Parameters<SupervisorClient["exec"]>): Promise<ControlExecResult> {
    const client = await this.#ws.client();
    try {
      return await client.exec(...args);
    } catch (e) {
      if (SupervisorErrors.SUPERVISOR_UNREACHABLE.is(e)) this.#ws.forgetClient();
      throw e;
    }
  }
}

/**
 * `ws.files`: read and write whole files in the guest. There is no file op on the guest channel
 * yet, so both run through exec: `read` is `cat PATH` with the output cap raised, `write` is
 * `cat > PATH` fed through exec's streamed stdin (capped at FILE_WRITE_MAX_BYTES). Paths must be
 * absolute, so none can be mistaken for an option.
 */
export class WorkspaceFiles {
  readonly #ws: Workspace;

  constructor(ws: Workspace) {
    this.#ws = ws;
  }

  /** The file's bytes. */
  async read(path: string, opts: { user?: string; timeoutMs?: number } = {}): Promise<Buffer> {
    checkPath(path);
    const r = await this.#ws.exec(["cat", path], { ...opts, stdoutLimitBytes: FILE_READ_MAX_BYTES, stderrLimitBytes: 64 * 1024 });
    if (r.status !== "exited" || r.exitCode !== 0) {
      throw ApiErrors.FILE_READ_FAILED({
        message: `cannot read ${path} in workspace ${this.#ws.name}: ${failure(r)}`,
        details: { workspace: this.#ws.name, path },
      });
    }
    if (r.stdoutTruncated) {
      throw ApiErrors.FILE_TOO_LARGE({ message: `${path} in workspace ${this.#ws.name} is larger than ${FILE_READ_MAX_BYTES} bytes`, details: { path, limitBytes: FILE_READ_MAX_BYTES } });
    }
    return r.stdout;
  }

  /** The file's text (UTF-8). */
  async readText(path: string, opts: { user?: string; timeoutMs?: number } = {}): Promise<string> {
    return (await this.read(path, opts)).toString("utf8");
  }

  /** Create or replace the file with `data` (the parent directory must exist). */
  async write(path: string, data: Buffer | string, opts: { user?: string; timeoutMs?: number } = {}): Promise<void> {
    checkPath(path);
    const bytes = Buffer.from(data);
    if (bytes.length > FILE_WRITE_MAX_BYTES) {
      throw ApiErrors.FILE_TOO_LARGE({
        message: `${bytes.length} bytes is over the ${FILE_WRITE_MAX_BYTES}-byte limit of files.write (files are written from memory)`,
        details: { path, sizeBytes: bytes.length, limitBytes: FILE_WRITE_MAX_BYTES },
      });
    }
    // "$1" keeps the path out of the shell's parsing; `cat` copies stdin byte for byte.
    const r = await this.#ws.exec(["/bin/sh", "-c", 'cat > "$1"', "sh", path], { ...opts, stdin: bytes, stderrLimitBytes: 64 * 1024 });
    if (r.status !== "exited" || r.exitCode !== 0) {
      throw ApiErrors.FILE_WRITE_FAILED({
        message: `cannot write ${path} in workspace ${this.#ws.name}: ${failure(r)}`,
        details: { workspace: this.#ws.name, path },
      });
    }
  }
}

function checkPath(path: string): void {
  if (!path.startsWith("/") || path.includes("\0")) {
    throw CommonErrors.INVALID_ARGUMENT({
      message: `guest path '${path}' is not absolute`,
      remediation: "Pass an absolute path in the guest, such as /root/notes.txt.",
    });
  }
}

function failure(r: { status: string; exitCode?: number; error?: string; stderr: Buffer }): string {
  const err = r.stderr.toString("utf8").trim().split("\n").at(-1);
  if (r.status === "exited") return `${err || `exit code ${r.exitCode}`}`;
  return r.error ?? r.status;
}
