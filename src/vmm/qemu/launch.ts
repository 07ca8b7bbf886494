/**
 * Start QEMU as a supervised child: its own process group (so a kill reaches every thread and helper
 * it forks), a bounded tail of its stderr kept for death diagnostics, and a readiness wait that turns
 * "QEMU printed an error and exited" into one typed error carrying that output.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { lstatSync, unlinkSync } from "node:fs";
import type { Readable } from "node:stream";
import { VmmErrors } from "../errors.ts";
import { buildQemuArgs, type QemuSpec } from "./args.ts";
import { findQemu } from "./host.ts";
import { QmpClient } from "./qmp.ts";

export interface LaunchQemuOptions {
  /** How long QEMU may take to create its sockets (or, without sockets, to survive its first moments). Default 10 s. */
  timeoutMs?: number;
  /** The QEMU binary; default `findQemu()`. */
  qemuPath?: string;
  /** Bytes of stderr kept for error messages; default 8 KiB. */
  stderrTailBytes?: number;
  /** Pipe QEMU's stdout (only useful with `serial: {kind: "stdio"}`); default ignored. */
  stdout?: "ignore" | "pipe";
  /** Kill the VM's process group when this Node process exits. Default true. */
  killOnExit?: boolean;
  /** Hard cap on the VM's lifetime: SIGKILL after this many ms. Default none. */
  maxLifetimeMs?: number;
  /** Grace between SIGTERM and SIGKILL in `kill()`; default 3 s. */
  killGraceMs?: number;
  env?: NodeJS.ProcessEnv;
}

export interface QemuExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface QemuHandle {
  pid: number;
  /** The full command line (binary first), for logs and error details. */
  argv: readonly string[];
  /** Settles once QEMU has exited; never rejects. */
  exited: Promise<QemuExit>;
  /** The exit once known, else undefined. */
  exit(): QemuExit | undefined;
  /** SIGTERM the process group, SIGKILL after the grace period; resolves with the exit. */
  kill(graceMs?: number): Promise<QemuExit>;
  /** Send one signal to the whole process group (no-op once exited). */
  signal(sig: NodeJS.Signals): void;
  /** The last bytes QEMU wrote to stderr. */
  stderrTail(): string;
  /** QEMU's stdout when `stdout: "pipe"`. */
  stdout: Readable | null;
  /** Let this Node process exit while QEMU runs (the handle stops holding the event loop). */
  unref(): void;
}

/** Children still running, killed synchronously if this process exits. */
const live = new Set<ChildProcess>();
let exitHookInstalled = false;

function killAllOnExit(): void {
  for (const child of live) {
    if (child.pid !== undefined) {
      try {
        process.kill(-child.pid, "SIGKILL");
      } catch {
        // Already gone.
      }
    }
  }
}

function track(child: ChildProcess): void {
  live.add(child);
  if (!exitHookInstalled) {
    process.on("exit", killAllOnExit);
    exitHookInstalled = true;
  }
}

function untrack(child: ChildProcess): void {
  live.delete(child);
  if (live.size === 0 && exitHookInstalled) {
    process.off("exit", killAllOnExit);
    exitHookInstalled = false;
  }
}

/** A ring of the last `max` bytes of a stream. */
class TailBuffer {
  #chunks: Buffer[] = [];
  #bytes = 0;
  readonly #max: number;
  constructor(max: number) {
    this.#max = max;
  }
  push(chunk: Buffer): void {
    this.#chunks.push(chunk);
    this.#bytes += chunk.length;
    while (this.#bytes - (this.#chunks[0]?.length ?? 0) >= this.#max && this.#chunks.length > 1) {
      this.#bytes -= (this.#chunks.shift() as Buffer).length;
    }
  }
  text(): string {
    const all = Buffer.concat(this.#chunks);
    return all.subarray(Math.max(0, all.length - this.#max)).toString("utf8");
  }
}

/** Paths QEMU will listen on: stale socket files there would make it fail, and are how we see readiness. */
function listeningSockets(spec: QemuSpec): string[] {
  const out: string[] = [];
  if (spec.qmpSocketPath) out.push(spec.qmpSocketPath);
  if (spec.channel) out.push(spec.channel.socketPath);
  if (spec.serial.kind === "socket") out.push(spec.serial.path);
  return out;
}

function removeStaleSocket(path: string): void {
  try {
    if (lstatSync(path).isSocket()) unlinkSync(path);
  } catch {
    // Absent: fine.
  }
}

function socketExists(path: string): boolean {
  try {
    return lstatSync(path).isSocket();
  } catch {
    return false;
  }
}

/**
 * Spawn QEMU for `spec` and wait until it is up: every socket it listens on exists (or, with no
 * sockets, it is still alive after a short settle time). Throws QEMU_START_FAILED with the stderr tail
 * when it exits first or does not come up within `timeoutMs` (the process is killed then).
 */
export async function launchQemu(spec: QemuSpec, opts: LaunchQemuOptions = {}): Promise<QemuHandle> {
  const args = buildQemuArgs(spec);
  const qemu = opts.qemuPath ?? findQemu({ env: opts.env });
  const argv = [qemu, ...args];
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const sockets = listeningSockets(spec);
  for (const s of sockets) removeStaleSocket(s);

  const tail = new TailBuffer(opts.stderrTailBytes ?? 8192);
  const child = spawn(qemu, args, {
    detached: true,
    stdio: ["ignore", opts.stdout ?? "ignore", "pipe"],
    env: opts.env ?? process.env,
  });
  let spawnError: Error | undefined;
  let exitInfo: QemuExit | undefined;
  const exited = new Promise<QemuExit>((resolve) => {
    child.once("error", (err) => {
      spawnError = err;
      // A failed spawn emits no 'exit' event.
      if (child.pid === undefined) {
        exitInfo = { code: null, signal: null };
        resolve(exitInfo);
      }
    });
    child.once("exit", (code, signal) => {
      exitInfo = { code, signal };
      resolve(exitInfo);
    });
  });
  child.stderr?.on("data", (chunk: Buffer) => tail.push(chunk));
  if (opts.killOnExit ?? true) track(child);
  void exited.then(() => untrack(child));

  let lifetimeTimer: NodeJS.Timeout | undefined;
  const signalGroup = (sig: NodeJS.Signals) => {
    if (exitInfo || child.pid === undefined) return;
    try {
      process.kill(-child.pid, sig);
    } catch {
      // The group is already gone.
    }
  };
  const kill = async (graceMs = opts.killGraceMs ?? 3000): Promise<QemuExit> => {
    if (exitInfo) return exitInfo;
    signalGroup("SIGTERM");
    const hard = setTimeout(() => signalGroup("SIGKILL"), graceMs);
    try {
      return await exited;
    } finally {
      clearTimeout(hard);
      // Helpers QEMU forked (none today, but e.g. a bridge helper) must not outlive it.
      if (child.pid !== undefined) {
        try {
          process.kill(-child.pid, "SIGKILL");
        } catch {
          // The group is gone: the normal case.
        }
      }
    }
  };
  if (opts.maxLifetimeMs !== undefined) {
    lifetimeTimer = setTimeout(() => signalGroup("SIGKILL"), opts.maxLifetimeMs);
    void exited.then(() => clearTimeout(lifetimeTimer));
  }

  const handle: QemuHandle = {
    get pid() {
      return child.pid ?? -1;
    },
    argv,
    exited,
    exit: () => exitInfo,
    kill,
    signal: signalGroup,
    stderrTail: () => tail.text(),
    stdout: child.stdout ?? null,
    unref() {
      child.unref();
      // stderr is a net.Socket underneath: unref it too or its open pipe keeps the loop alive.
      (child.stderr as unknown as { unref?: () => void } | null)?.unref?.();
      if (lifetimeTimer) lifetimeTimer.unref();
    },
  };

  // Readiness: sockets created, or (no sockets) alive after a settle period.
  const started = Date.now();
  const settleMs = 150;
  for (;;) {
    if (exitInfo) break;
    const elapsed = Date.now() - started;
    if (sockets.length > 0 ? sockets.every(socketExists) : elapsed >= settleMs) {
      // QEMU creates its sockets before it loads the kernel and builds the machine, so a bad kernel path
      // or disk would still fail after this point. QMP greets only once the machine is built: with a QMP
      // socket, wait for the greeting too.
      const lastError: { message?: string } = {};
      if (!spec.qmpSocketPath || (await qmpGreets(spec.qmpSocketPath, Math.max(1, timeoutMs - elapsed), exited, lastError))) return handle;
      if (!exitInfo) {
        const stderr = tail.text();
        await kill(500);
        throw VmmErrors.QEMU_START_FAILED({
          message: `QEMU's control socket did not answer within ${timeoutMs} ms${lastError.message ? ` (last: ${lastError.message})` : ""}${stderr ? `; its error output:\n${stderr.trimEnd()}` : ""}`,
          details: { argv, timeoutMs, stderrTail: stderr },
        });
      }
      break;
    }
    if (elapsed >= timeoutMs) {
      const stderr = tail.text();
      await kill(500);
      throw VmmErrors.QEMU_START_FAILED({
        message: `QEMU did not come up within ${timeoutMs} ms${stderr ? `; its error output:\n${stderr.trimEnd()}` : ""}`,
        details: { argv, timeoutMs, stderrTail: stderr },
      });
    }
    await Promise.race([exited, delay(20)]);
  }

  // It exited before it was up.
  const stderr = tail.text();
  const e = spawnError as NodeJS.ErrnoException | undefined;
  if (e?.code === "ENOENT") {
    throw VmmErrors.QEMU_NOT_FOUND({ message: `cannot run ${qemu}: not found`, cause: e, details: { path: qemu } });
  }
  if (e) {
    throw VmmErrors.QEMU_START_FAILED({ message: `cannot run ${qemu}: ${e.message}`, cause: e, details: { argv } });
  }
  throw VmmErrors.QEMU_START_FAILED({
    message: `QEMU exited during startup (${describeExit(exitInfo as QemuExit)})${stderr ? `: ${stderr.trimEnd()}` : " with no error output"}`,
    details: { argv, exit: exitInfo, stderrTail: stderr },
  });
}

/** True once QMP greets us; false when QEMU exits or the time runs out first. */
/**
 * True once QEMU's QMP socket greets us. A connection QEMU closes or resets before greeting (seen rarely
 * while it is still building the machine) is retried until the deadline or QEMU's exit, not taken as an
 * answer; `lastError` records the final reason for the caller's message.
 */
async function qmpGreets(path: string, timeoutMs: number, exited: Promise<QemuExit>, lastError: { message?: string }): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  let gone = false;
  void exited.then(() => (gone = true));
  while (!gone && Date.now() < deadline) {
    const abort = new AbortController();
    const connecting = QmpClient.connect(path, { timeoutMs: Math.max(1, deadline - Date.now()), signal: abort.signal }).then(
      (client) => {
        client.close();
        return true;
      },
      (e: Error) => {
        lastError.message = e.message;
        return false;
      },
    );
    const ok = await Promise.race([connecting, exited.then(() => false)]);
    abort.abort();
    await connecting;
    if (ok) return true;
    await delay(50);
  }
  return false;
}

export function describeExit(exit: QemuExit): string {
  if (exit.signal) return `killed by ${exit.signal}`;
  return `exit code ${exit.code ?? "unknown"}`;
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
