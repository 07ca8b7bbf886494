/**
 * Starting a supervisor: a detached process (own session, stdio to supervisor.log, unref'd) so the
 * CLI that started it can exit or be killed without touching the VM. Then waiting for it: connect
 * to its control socket (retrying while the process is alive) and ask `wait_ready`.
 */
import { spawn } from "node:child_process";
import { openSync, closeSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { FILE_MODE } from "../util/fs.ts";
import { runtimeDirFor, type WorkspacePaths } from "../workspace/paths.ts";
import { dirname, join } from "node:path";
import { pidExists } from "../util/process.ts";
import { readTail } from "../workspace/serial.ts";
import { SupervisorClient } from "./client.ts";
import { SupervisorErrors } from "./errors.ts";
import type { SupervisorStatus } from "./protocol.ts";
import { SECRET_HANDOFF_FD, writeSecretHandoff } from "../secrets/handoff.ts";

/**
 * Node flags for the supervisor: it holds sockets and capped Buffers (outside the V8 heap), never
 * large data on the heap, so a small V8 heap and no background V8 threads. 32 MiB of old space: the
 * worst case measured with the network stack's buffers full and TLS mediation (bench/supervisor-
 * memory.ts) uses 15 MiB of heap; 24 left too little headroom for the mediator's per-flow state, and
 * 64 let V8 defer collection so far that RSS grew by 50 MiB under the same load. See
 * docs/architecture.md ("Memory").
 */
export const SUPERVISOR_NODE_FLAGS: readonly string[] = ["--max-old-space-size=32", "--max-semi-space-size=1", "--single-threaded"];

export interface SpawnSupervisorOptions {
  /** `--supervisor`: an executable run as `<path> <workspace dir>` instead of Node + main. */
  supervisorPath?: string;
  env?: NodeJS.ProcessEnv;
  runtimeId?: string;
  requestId?: string;
  /**
   * The resolved secrets as one handoff frame (secrets/handoff.ts): written to a pipe on the
   * supervisor's fd 3 and ended, never argv, env or a file. Zeroed once written.
   */
  secrets?: Buffer;
}

export interface SpawnedSupervisor {
  pid: number;
  /** Settles once the secrets frame is written (or at once without one); rejects with SECRET_HANDOFF_FAILED. */
  handoff: Promise<void>;
}

/** The per-user runtime root holding every workspace's socket dir (and the cached accel probe). */
export function runtimeRoot(env: NodeJS.ProcessEnv = process.env): string {
  return dirname(runtimeDirFor("/", env));
}

/** The supervisor entry point next to this module (src/*.ts under type stripping, dist/*.js when built). */
export function supervisorEntry(): string {
  const url = import.meta.url;
  return fileURLToPath(new URL(url.endsWith(".ts") ? "./main.ts" : "./main.js", url));
}

export function spawnSupervisor(paths: WorkspacePaths, opts: SpawnSupervisorOptions = {}): SpawnedSupervisor {
  const logFd = openSync(paths.supervisorLog, "a", FILE_MODE);
  try {
    const env: NodeJS.ProcessEnv = {
      ...(opts.env ?? process.env),
      ...(opts.runtimeId ? { MICROAGENT_RUNTIME_ID: opts.runtimeId } : {}),
      ...(opts.requestId ? { MICROAGENT_REQUEST_ID: opts.requestId } : {}),
    };
    // Where the secrets frame arrives (the fd, not the values); absent: the supervisor reads nothing.
    delete env.MICROAGENT_SECRETS_FD;
    if (opts.secrets) env.MICROAGENT_SECRETS_FD = String(SECRET_HANDOFF_FD);
    // V8's on-disk compile cache: every boot starts a fresh supervisor, and parsing its modules is
    // a good part of its start-up time.
    if (!opts.supervisorPath && env.NODE_COMPILE_CACHE === undefined) env.NODE_COMPILE_CACHE = join(runtimeRoot(env), "node-compile-cache");
    const [cmd, args] = opts.supervisorPath
      ? [opts.supervisorPath, [paths.dir]]
      : [process.execPath, [...SUPERVISOR_NODE_FLAGS, supervisorEntry(), paths.dir]];
    const child = spawn(cmd, args, { detached: true, stdio: ["ignore", logFd, logFd, opts.secrets ? "pipe" : "ignore"], env, cwd: paths.dir });
    const pid = child.pid;
    child.on("error", () => {});
    child.unref();
    if (pid === undefined) {
      opts.secrets?.fill(0);
      throw SupervisorErrors.SUPERVISOR_START_FAILED({ message: `could not start the supervisor ${cmd}`, details: { command: cmd } });
    }
    const pipe = child.stdio[SECRET_HANDOFF_FD];
    const handoff = opts.secrets && pipe && "write" in pipe ? writeSecretHandoff(pipe, opts.secrets) : Promise.resolve();
    handoff.catch(() => {}); // the caller awaits it; the supervisor's own failure is reported as well
    return { pid, handoff };
  } finally {
    closeSync(logFd);
  }
}

/**
 * Wait until the supervisor with `pid` reports the workspace running (guest hello + boot config
 * accepted), or fails: its boot error, or its death with the tail of supervisor.log and serial.log.
 */
export async function waitForSupervisorReady(paths: WorkspacePaths, pid: number, timeoutMs: number): Promise<SupervisorStatus> {
  const client = new SupervisorClient(paths.controlSocket);
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const status = await client.waitReady(Math.max(1, deadline - Date.now()));
      // A predecessor that has not finished exiting may still answer on the same path: not ours.
      if (status.supervisorPid === pid) return status;
    } catch (e) {
      if (!SupervisorErrors.SUPERVISOR_UNREACHABLE.is(e)) throw e;
    }
    if (!pidExists(pid)) {
      const supLog = (await readTail(paths.supervisorLog, 2048)).trimEnd();
      const serial = (await readTail(paths.serialLog, 2048)).trimEnd();
      throw SupervisorErrors.SUPERVISOR_START_FAILED({
        message: `the supervisor of workspace ${paths.name} exited before the workspace was running${supLog ? `; supervisor.log tail:\n${supLog}` : ""}${serial ? `\nserial log tail:\n${serial}` : ""}`,
        details: { supervisorPid: pid, supervisorLogTail: supLog, serialTail: serial },
      });
    }
    if (Date.now() > deadline) {
      throw SupervisorErrors.WAIT_TIMEOUT({ message: `the supervisor of workspace ${paths.name} did not answer within ${timeoutMs} ms` });
    }
    await new Promise((r) => setTimeout(r, 25));
  }
}
