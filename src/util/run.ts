/**
 * The one child-process runner for host tools (qemu-img, mke2fs, debugfs, apt-get, xz, the KVM
 * probe...). Every area wraps it with its own errors; this module never throws for what the child
 * did, only reports it:
 *
 * - the child gets its own process group, and a timeout or an abort kills the whole group (SIGKILL),
 *   so nothing a tool started outlives it;
 * - while any child runs, a SIGINT/SIGTERM/SIGHUP to us (which no longer reaches a child in its own
 *   group) and our own exit kill the children's groups too; the handlers exist only while children run;
 * - stdout and stderr are capped (head or tail kept, by choice), or stdout is kept whole as bytes;
 * - the environment is exactly what the caller passes (default: ours), never merged: rootfs runs
 *   debugfs in a fenced one with no PATH and SHELL=/bin/false.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { StringDecoder } from "node:string_decoder";

export interface RunOptions {
  /** Kill the child's group after this long. */
  timeoutMs: number;
  /** The child's whole environment (not merged with ours). Default: `process.env`. */
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Aborting kills the child's group; the result then has `aborted: true`. */
  signal?: AbortSignal;
  /** Bytes of stdout and of stderr kept (default 256 KiB each). */
  maxOutputBytes?: number;
  /** Which end of over-long output is kept (default "tail": errors are at the end). */
  keep?: "head" | "tail";
  /** Keep stdout whole as bytes in `stdoutBytes` (decompressors), up to this many bytes; the text `stdout` is then empty. */
  stdoutBytesLimit?: number;
  /** Sees all of stdout as text, as it streams (the result keeps only the capped part). */
  onStdout?: (text: string) => void;
}

export interface RunResult {
  /** Exit code, or null when killed by a signal or never started. */
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** With `stdoutBytesLimit`: all of stdout (up to the limit). */
  stdoutBytes?: Buffer;
  /** stdout (bytes mode) went beyond `stdoutBytesLimit`; the child was killed. */
  stdoutOverflow?: boolean;
  /** The spawn failed (ENOENT, EACCES...): the process never ran. */
  spawnError?: NodeJS.ErrnoException;
  /** Killed by the timeout. */
  timedOut: boolean;
  /** Killed because `signal` was aborted (or it was aborted before the start). */
  aborted: boolean;
  durationMs: number;
}

const DEFAULT_MAX = 256 * 1024;

/** A byte-capped collector keeping the head or the tail. */
class Capped {
  private chunks: Buffer[] = [];
  private bytes = 0;
  private readonly max: number;
  private readonly keep: "head" | "tail";
  constructor(max: number, keep: "head" | "tail") {
    this.max = max;
    this.keep = keep;
  }

  push(chunk: Buffer): void {
    if (this.keep === "head") {
      if (this.bytes >= this.max) return;
      const piece = chunk.subarray(0, this.max - this.bytes);
      this.chunks.push(piece);
      this.bytes += piece.length;
      return;
    }
    this.chunks.push(chunk);
    this.bytes += chunk.length;
    // Drop whole chunks from the front while the rest still covers the cap.
    while (this.chunks.length > 1 && this.bytes - (this.chunks[0] as Buffer).length >= this.max) this.bytes -= (this.chunks.shift() as Buffer).length;
  }

  text(): string {
    const all = Buffer.concat(this.chunks);
    return (this.keep === "tail" && all.length > this.max ? all.subarray(all.length - this.max) : all).toString("utf8");
  }
}

/** Run `command` to completion. Resolves always (spawn failures are data); never rejects. */
export function run(command: string, args: readonly string[], opts: RunOptions): Promise<RunResult> {
  const started = performance.now();
  const max = opts.maxOutputBytes ?? DEFAULT_MAX;
  const keep = opts.keep ?? "tail";
  const elapsed = () => Math.round(performance.now() - started);
  if (opts.signal?.aborted) {
    return Promise.resolve({ code: null, signal: null, stdout: "", stderr: "", timedOut: false, aborted: true, durationMs: 0 });
  }
  return new Promise((resolve) => {
    const stdout = new Capped(max, keep);
    const stderr = new Capped(max, keep);
    const bytes: Buffer[] | undefined = opts.stdoutBytesLimit === undefined ? undefined : [];
    let byteCount = 0;
    let overflow = false;
    let timedOut = false;
    let aborted = false;
    let settled = false;
    const child = spawn(command, args, {
      stdio: ["ignore", "pipe", "pipe"],
      env: opts.env ?? process.env,
      cwd: opts.cwd,
      // Its own process group, so a kill reaches whatever the tool started too.
      detached: true,
    });
    track(child);
    const kill = () => killGroup(child);
    const timer = setTimeout(() => {
      timedOut = true;
      kill();
    }, opts.timeoutMs);
    const onAbort = () => {
      aborted = true;
      kill();
    };
    opts.signal?.addEventListener("abort", onAbort, { once: true });
    const finish = (r: Pick<RunResult, "code" | "signal" | "spawnError">) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      opts.signal?.removeEventListener("abort", onAbort);
      untrack(child);
      resolve({
        ...r,
        stdout: stdout.text(),
        stderr: stderr.text(),
        ...(bytes ? { stdoutBytes: Buffer.concat(bytes, byteCount), stdoutOverflow: overflow } : {}),
        timedOut,
        aborted,
        durationMs: elapsed(),
      });
    };
    const decoder = new StringDecoder("utf8");
    child.stdout.on("data", (c: Buffer) => {
      if (opts.onStdout) opts.onStdout(decoder.write(c));
      if (!bytes) return stdout.push(c);
      if (byteCount + c.length > (opts.stdoutBytesLimit as number)) {
        if (!overflow) kill();
        overflow = true;
        return;
      }
      bytes.push(c);
      byteCount += c.length;
    });
    child.stdout.on("end", () => {
      const rest = decoder.end();
      if (rest !== "") opts.onStdout?.(rest);
    });
    child.stderr.on("data", (c: Buffer) => stderr.push(c));
    child.on("error", (e: NodeJS.ErrnoException) => finish({ code: null, signal: null, spawnError: e }));
    child.on("close", (code, signal) => finish({ code, signal }));
  });
}

/** SIGKILL the child's process group (the child alone when the group is already gone). */
function killGroup(child: ChildProcess): void {
  if (child.pid === undefined) return;
  try {
    process.kill(-child.pid, "SIGKILL");
  } catch {
    child.kill("SIGKILL");
  }
}

// Children run in their own groups, so a terminal's Ctrl-C no longer reaches them: while any runs,
// our exit and the usual terminating signals kill their groups. Our handler goes first (prepended),
// so it sees every other listener still registered (a `once` one removes itself when called): when
// there is none, the signal is re-raised so its default action (exit) still happens; when there is,
// that listener decides, as it would without us.
const live = new Set<ChildProcess>();
const SIGNALS = ["SIGINT", "SIGTERM", "SIGHUP"] as const;

function killAll(): void {
  for (const c of live) killGroup(c);
}

function onSignal(sig: NodeJS.Signals): void {
  const others = process.listenerCount(sig) - 1;
  killAll();
  live.clear();
  removeHandlers();
  if (others === 0) process.kill(process.pid, sig);
}

function removeHandlers(): void {
  process.off("exit", killAll);
  for (const s of SIGNALS) process.off(s, onSignal);
}

function track(child: ChildProcess): void {
  if (live.size === 0) {
    process.on("exit", killAll);
    for (const s of SIGNALS) process.prependListener(s, onSignal);
  }
  live.add(child);
}

function untrack(child: ChildProcess): void {
  if (!live.delete(child) || live.size > 0) return;
  removeHandlers();
}

/** The last lines of a tool's output, for error messages. */
export function tail(text: string, lines = 12): string {
  return text.trim().split("\n").slice(-lines).join("\n");
}
