/**
 * The one place the host probes run child processes. A probe must never hang doctor and must never
 * throw because a tool is missing: every run is bounded by a timeout, output is capped, and spawn
 * failures (ENOENT, EACCES) come back as data for the probe's decision function to judge.
 */
import { run, type RunResult } from "../util/run.ts";

export type ToolRun = Pick<RunResult, "code" | "signal" | "stdout" | "stderr" | "timedOut" | "durationMs"> & {
  /** The spawn failed (e.g. ENOENT); the process never ran. */
  spawnErrno?: string;
};

export interface RunToolOptions {
  timeoutMs: number;
  /** Keep at most this many bytes of each stream (the tail is dropped: banners come first). */
  maxOutputBytes?: number;
  env?: NodeJS.ProcessEnv;
}

export async function runTool(command: string, args: readonly string[], opts: RunToolOptions): Promise<ToolRun> {
  const r = await run(command, args, { timeoutMs: opts.timeoutMs, env: opts.env, maxOutputBytes: opts.maxOutputBytes ?? 64 * 1024, keep: "head" });
  return {
    code: r.code,
    signal: r.signal,
    stdout: r.stdout,
    stderr: r.stderr,
    ...(r.spawnError ? { spawnErrno: r.spawnError.code ?? "EUNKNOWN" } : {}),
    timedOut: r.timedOut,
    durationMs: r.durationMs,
  };
}

/** First non-empty line of a tool's output, trimmed (version banners). */
export function firstLine(text: string): string {
  for (const line of text.split("\n")) {
    const t = line.trim();
    if (t !== "") return t;
  }
  return "";
}
