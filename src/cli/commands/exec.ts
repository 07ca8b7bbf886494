import { readFileSync } from "node:fs";
import { Command, Option } from "commander";
import { action } from "../action.ts";
import { Workspace } from "../../api/workspace.ts";
import { execExitCode } from "../../api/exec.ts";
import { execJson } from "../../api/results.ts";
import { formatDurationMs, parseDurationFlag } from "./workspace-flags.ts";
import { CommonErrors } from "../../contract/errors.ts";

function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

export function parseEnvPairs(pairs: readonly string[]): Record<string, string> {
  const env: Record<string, string> = {};
  for (const p of pairs) {
    const eq = p.indexOf("=");
    if (eq <= 0) throw CommonErrors.INVALID_ARGUMENT({ message: `invalid environment entry '${p}': expected KEY=VALUE` });
    env[p.slice(0, eq)] = p.slice(eq + 1);
  }
  return env;
}

export function execCommand(): Command {
  return new Command("exec")
    .description("run a command in a running workspace; the exit code is the command's (timed out 124, signaled 128+n, failed to start 127)")
    .argument("<name>", "workspace name")
    .argument("<argv...>", "the command and its arguments (put them after --)")
    .option("-e, --env <KEY=VAL>", "environment variable for the command (repeatable)", collect, [])
    .option("--cwd <dir>", "working directory in the guest")
    .option("--user <user>", "run as this guest user (name or uid[:gid])")
    .addOption(new Option("--timeout <duration>", "kill the command after this long").argParser(parseDurationFlag("--timeout")).default(300_000, "5m"))
    .option("--stream", "write output as it arrives (text mode)")
    .option("--stdin <path>", "feed this file (or - for the CLI's stdin) to the command")
    .option("--stdout-limit <bytes>", "cap on captured stdout bytes")
    .option("--stderr-limit <bytes>", "cap on captured stderr bytes")
    .action(
      action(
        async (
          ctx,
          name: string,
          argv: string[],
          o: { env: string[]; cwd?: string; user?: string; timeout: number; stream?: boolean; stdin?: string; stdoutLimit?: string; stderrLimit?: string },
        ) => {
          const ws = await Workspace.connect(name, { stateDir: ctx.globals.stateDir });
          const stdin = o.stdin === undefined ? undefined : readFileSync(o.stdin === "-" ? 0 : o.stdin);
          const handle = ws.exec(argv, {
            env: parseEnvPairs(o.env),
            ...(o.cwd ? { cwd: o.cwd } : {}),
            ...(o.user ? { user: o.user } : {}),
            timeoutMs: o.timeout,
            ...(stdin ? { stdin } : {}),
            ...(o.stdoutLimit ? { stdoutLimitBytes: Number(o.stdoutLimit) } : {}),
            ...(o.stderrLimit ? { stderrLimitBytes: Number(o.stderrLimit) } : {}),
          });
          const streaming = ctx.streaming && o.stream;
          if (streaming) {
            for await (const chunk of handle) (chunk.stream === "stdout" ? ctx.streams.stdout : ctx.streams.stderr).write(chunk.data);
          }
          const r = await handle;
          if (ctx.streaming && !streaming) {
            ctx.streams.stdout.write(r.stdout);
            ctx.streams.stderr.write(r.stderr);
          }
          if (ctx.streaming) {
            if (r.stdoutTruncated || r.stderrTruncated) ctx.streams.stderr.write(`note: output was truncated (${[r.stdoutTruncated && "stdout", r.stderrTruncated && "stderr"].filter(Boolean).join(", ")} over its limit)\n`);
            if (r.status === "failed_to_start") ctx.streams.stderr.write(`error: ${argv[0]} failed to start: ${r.error ?? "unknown"}\n`);
            if (r.status === "timed_out") ctx.streams.stderr.write(`error: ${argv[0]} timed out after ${formatDurationMs(o.timeout)}\n`);
          }
          return {
            json: execJson(r),
            exitCode: execExitCode(r),
            passthrough: true,
          };
        },
      ),
    );
}
