/**
 * The one place the host probes run child processes. A probe must never hang doctor and must never
 * throw because a tool is missing: every run is bounded by a timeout, output is capped, and spawn
 * failures (ENOENT, EACCES) come back as data for the probe's decision function to judge.
 */
import { spawn } from "node:child_process";

export interface ToolRun {
  /** Exit code, or null when killed by a signal or never started. */
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** The spawn failed (e.g. ENOENT); the process never ran. */
  spawnErrno?: string;
  /** The run was cut off by the timeout. */
  timedOut: boolean;
  durationMs: number;
}

export interface RunToolOptions {
  timeoutMs: number;
  /** Keep at most this many bytes of each stream (the tail is dropped). */
  maxOutputBytes?: number;
  env?: NodeJS.ProcessEnv;
}

export function runTool(command: string, args: readonly string[], opts: RunToolOptions): Promise<ToolRun> {
  const max = opts.maxOutputBytes ?? 64 * 1024;
  const started = performance.now();
  return new Promise((resolve) => {
    let stdout = "";
    let stderr = "";
    let timedOut = false;
    let settled = false;
    const finish = (run: Omit<ToolRun, "stdout" | "stderr" | "timedOut" | "durationMs">) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve({ ...run, stdout, stderr, timedOut, durationMs: Math.round(performance.now() - started) });
    };
    const child = spawn(command, args, {
      stdio: ["ignore", "pipe", "pipe"],
      env: opts.env ?? process.env,
      // Own process group so a timeout kills anything the tool started too.
      detached: true,
    });
    const timer = setTimeout(() => {
      timedOut = true;
      try {
        if (child.pid !== undefined) process.kill(-child.pid, "SIGKILL");
      } catch {
        child.kill("SIGKILL");
      }
    }, opts.timeoutMs);
    child.stdout.setEncoding("utf8").on("data", (d: string) => {
      if (stdout.length < max) stdout += d.slice(0, max - stdout.length);
    });
    child.stderr.setEncoding("utf8").on("data", (d: string) => {
      if (stderr.length < max) stderr += d.slice(0, max - stderr.length);
    });
    child.on("error", (e: NodeJS.ErrnoException) => finish({ code: null, signal: null, spawnErrno: e.code ?? "EUNKNOWN" }));
    child.on("close", (code, signal) => finish({ code, signal }));
  });
}

/** First non-empty line of a tool's output, trimmed (version banners). */
export function firstLine(text: string): string {
  for (const line of text.split("\n")) {
    const t = line.trim();
    if (t !== "") return t;
  }
  return "";
}
