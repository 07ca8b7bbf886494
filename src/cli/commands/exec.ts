import { createReadStream, openSync } from "node:fs";
import { Command, Option } from "commander";
import { action } from "../action.ts";
import { Workspace } from "../../api/workspace.ts";
import { exitCodeFor } from "../../api/exit-code.ts";
import { execJson } from "../../api/results.ts";
import { addRefusedDockerFlags, collectEnvFile, formatDurationMs, parseDurationFlag, refuseDockerFlags } from "./workspace-flags.ts";
import { attachTerminal, requireTerminal, terminalSize } from "../tty.ts";
import { CommonErrors } from "../../contract/errors.ts";
import { parseWholeNumber } from "./workspace-flags.ts";
import { EXIT_BROKEN_PIPE, watchBrokenPipe } from "../pipe.ts";

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

export const parseLimitBytes = parseWholeNumber("an output limit in bytes", 1, Number.MAX_SAFE_INTEGER);

/** The guest's default per-stream limit (what an unset flag means). */
const DEFAULT_LIMIT_BYTES = 16 * 1024 * 1024;
/** V8's longest string (0x1fffffe8 characters): the JSON document holding both base64 streams must fit it. */
export const MAX_JSON_STRING_CHARS = 0x1fffffe8;
const JSON_OVERHEAD_CHARS = 64 * 1024;

const base64Chars = (n: number) => 4 * Math.ceil(n / 3);

/**
 * In JSON mode the output is carried base64 inside one JSON string; limits whose encoding cannot fit
 * V8's longest string would only fail after holding everything, so they are refused up front.
 */
export function checkJsonLimits(stdoutLimit: number | undefined, stderrLimit: number | undefined): void {
  const so = stdoutLimit ?? DEFAULT_LIMIT_BYTES;
  const se = stderrLimit ?? DEFAULT_LIMIT_BYTES;
  const chars = base64Chars(so) + base64Chars(se) + JSON_OVERHEAD_CHARS;
  if (chars <= MAX_JSON_STRING_CHARS) return;
  const flag = stdoutLimit !== undefined && (stderrLimit === undefined || so >= se) ? "--stdout-limit" : "--stderr-limit";
  const other = flag === "--stdout-limit" ? se : so;
  const room = Math.floor(((MAX_JSON_STRING_CHARS - JSON_OVERHEAD_CHARS - base64Chars(other)) * 3) / 4);
  throw CommonErrors.USAGE({
    message: `${flag} ${flag === "--stdout-limit" ? so : se} is too large for --json: the output is returned base64 in one JSON string, which holds at most ${MAX_JSON_STRING_CHARS} characters (these limits need ${chars})`,
    remediation: `Lower it to at most ${Math.max(1, room)} bytes, or use text mode with --stream, which writes the output as it arrives and keeps none of it.`,
  });
}

/** The command's stdin: a file, or the CLI's own stdin for `-`; streamed, never read whole. */
function openStdin(path: string): AsyncIterable<Uint8Array> {
  if (path === "-") return process.stdin;
  let fd: number;
  try {
    fd = openSync(path, "r");
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    if (err.code === "ENOENT") throw CommonErrors.PATH_NOT_FOUND({ message: `--stdin ${path}: no such file`, cause: e });
    throw CommonErrors.INVALID_ARGUMENT({ message: `--stdin ${path} cannot be read: ${err.code ?? err.message}`, cause: e });
  }
  return createReadStream(path, { fd, highWaterMark: 64 * 1024 });
}

interface ExecFlags {
  interactive?: boolean;
  tty?: boolean;
  detach?: boolean;
  env: string[];
  envFile?: Record<string, string>;
  workdir?: string;
  cwd?: string;
  user?: string;
  timeout: number;
  stream?: boolean;
  stdin?: string;
  stdoutLimit?: number;
  stderrLimit?: number;
}

export function execCommand(): Command {
  // Docker's flags first (`docker exec -it NAME sh`), then ours.
  const cmd = new Command("exec")
    .description("run a command in a running workspace (-it for a terminal); the exit code is the command's (timed out 124, signaled 128+n, failed to start 127)")
    .argument("<name>", "workspace name")
    .argument("<argv...>", "the command and its arguments (put them after --)")
    .option("-i, --interactive", "stream this terminal's stdin into the command (same as --stdin -; without it the command's stdin is empty)")
    .option("-t, --tty", "run the command on a terminal in the guest (needs a terminal here; no time limit unless --timeout is given)")
    .addOption(new Option("-d, --detach").hideHelp())
    .option("-e, --env <KEY=VAL>", "environment variable for the command (repeatable; wins over --env-file)", collect, [])
    .option("--env-file <file>", "environment variables from a file, docker's format: KEY=VAL lines, KEY alone takes this host's value, # comments (repeatable)", collectEnvFile)
    .option("-w, --workdir <dir>", "working directory in the guest (default: the workspace's)")
    .addOption(new Option("--cwd <dir>", "same as --workdir").hideHelp())
    .option("-u, --user <user[:group]>", "guest user, name or uid, resolved in the guest (default: the workspace's)")
    .addOption(new Option("--timeout <duration>", "kill the command after this long (default 5m; none with -t)").argParser(parseDurationFlag("--timeout")))
    .option("--stream", "write output as it arrives (text mode)")
    .option("--stdin <path>", "feed this file (or - for the CLI's stdin) to the command")
    .option("--stdout-limit <bytes>", "cap on stdout bytes (default 16 MiB; beyond it output is dropped and marked truncated)", parseLimitBytes)
    .option("--stderr-limit <bytes>", "cap on stderr bytes (default 16 MiB)", parseLimitBytes);
  return addRefusedDockerFlags(cmd)
    .action(
      action(
        async (ctx, name: string, argv: string[], o: ExecFlags) => {
          refuseDockerFlags("exec", o as unknown as Record<string, unknown>);
          if (o.detach) {
            throw CommonErrors.USAGE({
              message: "exec does not take docker's -d: an exec's command is killed when its client goes away, so it cannot be left running in the background",
              remediation: "Run the command in the foreground (`microagent exec NAME -- CMD &` in your shell), or start a detached workspace whose command it is: `microagent run -d IMAGE CMD`.",
            });
          }
          if (o.workdir !== undefined && o.cwd !== undefined && o.workdir !== o.cwd) throw CommonErrors.USAGE({ message: "-w/--workdir and --cwd name different directories: pass one" });
          if (o.interactive && o.stdin !== undefined) throw CommonErrors.USAGE({ message: "-i and --stdin both name the command's stdin: pass one", remediation: "-i is --stdin -." });
          const cwd = o.workdir ?? o.cwd;
          const env = { ...(o.envFile ?? {}), ...parseEnvPairs(o.env) };
          if (o.tty) {
            if (ctx.globals.format === "json") throw CommonErrors.USAGE({ message: "exec -t is a terminal session and has no JSON form", remediation: "Drop -t (keep -i to stream stdin), or drop --json." });
            if (o.stdin !== undefined) throw CommonErrors.USAGE({ message: "--stdin cannot feed a terminal session (-t)", remediation: "Use -it to type into it, or drop -t to feed a file." });
            requireTerminal("exec");
            const ws = await Workspace.connect(name, { stateDir: ctx.globals.stateDir });
            const con = await ws.console({ ...terminalSize(ctx.streams.stdout), argv, ...(Object.keys(env).length ? { env } : {}), ...(cwd ? { cwd } : {}), ...(o.user ? { user: o.user } : {}) });
            const timer = o.timeout ? setTimeout(() => con.close(), o.timeout) : undefined;
            let exit;
            try {
              exit = await attachTerminal(con, { stdin: process.stdin, stdout: ctx.streams.stdout }, Boolean(o.interactive));
            } finally {
              if (timer) clearTimeout(timer);
            }
            if (!exit) {
              ctx.streams.stderr.write(`error: the terminal session ended without ${argv[0]}'s exit status (${timer ? "timed out, or " : ""}the workspace stopped)\n`);
              return { exitCode: 1, passthrough: true };
            }
            if (exit.status === "failed_to_start") ctx.streams.stderr.write(`error: ${argv[0]} failed to start: ${exit.error ?? "unknown"}\n`);
            return { exitCode: exitCodeFor(exit), passthrough: true };
          }
          if (ctx.globals.format === "json" || ctx.globals.mode === "ax") checkJsonLimits(o.stdoutLimit, o.stderrLimit);
          const timeout = o.timeout ?? 300_000;
          const ws = await Workspace.connect(name, { stateDir: ctx.globals.stateDir });
          const stdin = o.interactive ? openStdin("-") : o.stdin === undefined ? undefined : openStdin(o.stdin);
          // A reader that closes our stdout early ends the command quietly (and kills it in the guest).
          const abort = new AbortController();
          const pipe = watchBrokenPipe([ctx.streams.stdout, ctx.streams.stderr], () => abort.abort(new Error("broken pipe")));
          const handle = ws.exec(argv, {
            env,
            ...(cwd ? { cwd } : {}),
            ...(o.user ? { user: o.user } : {}),
            timeoutMs: timeout,
            ...(stdin ? { stdin } : {}),
            ...(o.stdoutLimit ? { stdoutLimitBytes: o.stdoutLimit } : {}),
            ...(o.stderrLimit ? { stderrLimitBytes: o.stderrLimit } : {}),
            signal: abort.signal,
          });
          const streaming = ctx.streaming && o.stream;
          const brokenPipe = { exitCode: EXIT_BROKEN_PIPE, passthrough: true };
          let r;
          try {
            if (streaming) {
              // Written as it arrives, kept nowhere; a slow reader holds the stream back.
              for await (const chunk of handle) await pipe.write(chunk.stream === "stdout" ? ctx.streams.stdout : ctx.streams.stderr, chunk.data);
            }
            r = await handle;
          } catch (e) {
            if (pipe.broken) return brokenPipe;
            throw e;
          }
          if (ctx.streaming && !streaming) {
            await pipe.write(ctx.streams.stdout, r.stdout);
            await pipe.write(ctx.streams.stderr, r.stderr);
          }
          if (pipe.broken) return brokenPipe;
          if (ctx.streaming) {
            if (r.stdoutTruncated || r.stderrTruncated) ctx.streams.stderr.write(`note: output was truncated (${[r.stdoutTruncated && "stdout", r.stderrTruncated && "stderr"].filter(Boolean).join(", ")} over its limit)\n`);
            if (r.status === "failed_to_start") ctx.streams.stderr.write(`error: ${argv[0]} failed to start: ${r.error ?? "unknown"}\n`);
            if (r.status === "timed_out") ctx.streams.stderr.write(`error: ${argv[0]} timed out after ${formatDurationMs(timeout)}\n`);
          }
          return {
            json: execJson(r),
            exitCode: exitCodeFor(r),
            passthrough: true,
          };
        },
      ),
    );
}
