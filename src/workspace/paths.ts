/**
 * The on-disk layout of workspaces. Everything about one workspace lives in
 * `<state-dir>/workspaces/<name>/`; its Unix sockets live in a short per-workspace runtime dir
 * because a socket path must fit in sun_path (108 bytes on Linux, 104 on macOS) and state dirs
 * can be arbitrarily deep.
 */
import { sha256Bytes } from "../util/hash.ts";
import { homedir, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { WorkspaceErrors } from "./errors.ts";

/** Names users and scripts type: lowercase, no path separators, at most 63 characters. */
export const WORKSPACE_NAME_PATTERN = /^[a-z0-9][a-z0-9_.-]{0,62}$/;

export interface WorkspacePaths {
  /** The workspace's name (validated). */
  name: string;
  /** `<state-dir>/workspaces/<name>` (absolute). */
  dir: string;
  /** What was asked for: image, resources, boot spec, artifact hashes. */
  manifest: string;
  /** Current state; rewritten atomically on every transition. */
  state: string;
  /** Append-only history, one JSON event per line. */
  events: string;
  /** Written by the supervisor while a VM exists: pids, accel, socket paths. */
  runtime: string;
  /** The guest serial console, appended by the supervisor. */
  serialLog: string;
  /** The supervisor's own stdout/stderr. */
  supervisorLog: string;
  /** The guest workload's result. */
  result: string;
  /** The boot config sent to the guest; its sha256 is in the manifest. */
  bootConfig: string;
  /** qcow2 overlay over the cached base rootfs. */
  disk: string;
  /** The per-workspace exclusive lock file. */
  lock: string;
  /** Short directory for the workspace's Unix sockets (0700). */
  runtimeDir: string;
  /** Supervisor control socket. */
  controlSocket: string;
  /** Host end of the guest channel (virtio-serial port chardev). */
  channelSocket: string;
  /** QEMU's QMP socket. */
  qmpSocket: string;
  /** Serial console socket (when the backend exposes one). */
  consoleSocket: string;
}

/** Throw WORKSPACE_INVALID_NAME unless `name` is a valid workspace name. */
export function validateWorkspaceName(name: string): string {
  if (!WORKSPACE_NAME_PATTERN.test(name)) {
    throw WorkspaceErrors.WORKSPACE_INVALID_NAME({
      message: `invalid workspace name '${name}': it must match ${WORKSPACE_NAME_PATTERN.source}`,
      details: { name },
    });
  }
  return name;
}

/** `--state-dir` default: $MICROAGENT_STATE_DIR, else ~/.microagent (the CLI resolves the same way). */
export function defaultStateDir(env: NodeJS.ProcessEnv = process.env): string {
  return env.MICROAGENT_STATE_DIR || join(homedir(), ".microagent");
}

export function workspacesRoot(stateDir: string): string {
  return join(resolve(stateDir), "workspaces");
}

/**
 * The short runtime dir for a workspace's sockets:
 * `${XDG_RUNTIME_DIR:-<tmp>}/microagent-<uid>/<first 16 hex of sha256(workspace dir)>`.
 * Deterministic, so any process (CLI, supervisor) finds the same sockets from the workspace dir.
 */
export function runtimeDirFor(workspaceDir: string, env: NodeJS.ProcessEnv = process.env): string {
  const base = env.XDG_RUNTIME_DIR && env.XDG_RUNTIME_DIR.length < 40 ? env.XDG_RUNTIME_DIR : tmpdir();
  const uid = typeof process.getuid === "function" ? process.getuid() : 0;
  const hash = sha256Bytes(resolve(workspaceDir)).slice(0, 16);
  return join(base, `microagent-${uid}`, hash);
}

export function workspacePaths(stateDir: string, name: string, env: NodeJS.ProcessEnv = process.env): WorkspacePaths {
  validateWorkspaceName(name);
  const dir = join(workspacesRoot(stateDir), name);
  return pathsForDir(dir, env);
}

/** Paths from a workspace directory alone (what the supervisor is handed on its command line). */
export function pathsForDir(workspaceDir: string, env: NodeJS.ProcessEnv = process.env): WorkspacePaths {
  const dir = resolve(workspaceDir);
  const name = dir.split("/").pop() ?? "";
  validateWorkspaceName(name);
  const runtimeDir = runtimeDirFor(dir, env);
  return {
    name,
    dir,
    manifest: join(dir, "manifest.json"),
    state: join(dir, "state.json"),
    events: join(dir, "events.jsonl"),
    runtime: join(dir, "runtime.json"),
    serialLog: join(dir, "serial.log"),
    supervisorLog: join(dir, "supervisor.log"),
    result: join(dir, "result.json"),
    bootConfig: join(dir, "boot-config.json"),
    disk: join(dir, "disk.qcow2"),
    lock: join(dir, "lock"),
    runtimeDir,
    controlSocket: join(runtimeDir, "control.sock"),
    channelSocket: join(runtimeDir, "channel.sock"),
    qmpSocket: join(runtimeDir, "qmp.sock"),
    consoleSocket: join(runtimeDir, "console.sock"),
  };
}
