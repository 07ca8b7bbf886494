import { Command } from "commander";
import { action } from "../action.ts";
import { runWorkspace } from "../../api/run.ts";
import { runJson } from "../../api/results.ts";
import { tcgNote } from "../notes.ts";
import { CommonErrors } from "../../contract/errors.ts";
import { EXIT_BROKEN_PIPE, watchBrokenPipe } from "../pipe.ts";
import type { SecretRef } from "../../secrets/ref.ts";
import { addNetworkOptions, addRefusedDockerFlags, addResourceOptions, collectEnv, collectEnvFile, collectList, collectSecret, formatDurationMs, networkOptions, parseDurationFlag, refuseDockerFlags, resourceOptions, type NetworkFlags, type ResourceFlags } from "./workspace-flags.ts";
import { attachTerminal, requireTerminal, terminalSize } from "../tty.ts";

interface RunFlags extends ResourceFlags, NetworkFlags {
  cold?: boolean;
  interactive?: boolean;
  tty?: boolean;
  detach?: boolean;
  envFile?: Record<string, string>;
  workdir?: string;
  user?: string;
  entrypoint?: string;
  image?: string;
  exec?: string;
  keep?: boolean;
  rm?: boolean;
  name?: string;
  /** Milliseconds (parsed by commander). */
  timeout?: number;
  env?: Record<string, string>;
  setup?: string[];
  file?: string;
  secret?: SecretRef[];
}

export function runCommand(): Command {
  // Docker's everyday flags first, in the order `docker run` users reach for them; ours follow.
  const cmd = new Command("run")
    .description("boot a scratch workspace from IMAGE, run a command in it, stream its output and exit with its code (-it for a terminal, -d to detach); the workspace is deleted afterwards unless --keep")
    .usage("[flags] IMAGE [CMD ARG...]  |  run --image REF --exec \"shell command\"")
    .argument("[image]", "image reference (tag or digest); pulled if needed")
    .argument("[cmd...]", "command and arguments (default: the image's Entrypoint/Cmd)")
    .passThroughOptions()
    .option("-i, --interactive", "stream this terminal's stdin into the command (without it the command's stdin is empty)")
    .option("-t, --tty", "run the command on a terminal in the guest (needs a terminal here; -it IMAGE with no command gives the image's shell)")
    .option("-d, --detach", "create and start the workspace, print its name and return; follow it with logs -f, wait, exec, delete")
    .option("-e, --env <KEY=VAL>", "environment variable (repeatable; wins over --env-file)", collectEnv)
    .option("--env-file <file>", "environment variables from a file, docker's format: KEY=VAL lines, KEY alone takes this host's value, # comments (repeatable)", collectEnvFile)
    .option("-w, --workdir <dir>", "working directory in the guest (default: the image's WorkingDir)")
    .option("-u, --user <user[:group]>", "guest user, name or uid, resolved in the guest (default: the image's User)")
    .option("--entrypoint <command>", "replace the image's Entrypoint (and drop its Cmd): --entrypoint X IMAGE A B runs X A B")
    .option("--name <name>", "workspace name (default: run-<adjective>-<noun>-<hex>)")
    .option("--rm", "delete the workspace after the run (the default; -d keeps it)")
    .option("--keep", "keep the workspace after the run (its name is printed on stderr)")
    .option("--cold", "boot cold: do not restore (or capture) the warm snapshot of this image, kernel and resources")
    .option("--image <ref>", "image reference (instead of the IMAGE positional)")
    .option("--exec <command>", "shell command to run with /bin/sh -c (instead of CMD)")
    .option("--timeout <duration>", "wall-clock limit on the command; on expiry the VM is killed and the exit code is 124", parseDurationFlag("--timeout"))
    .option("--secret <NAME=SOURCE>", "secret from env:VAR, file:PATH or cmd:COMMAND (repeatable); see `microagent secret --help`", collectSecret)
    .option("--setup <command>", "shell command run before the command (repeatable, in order)", collectList)
    .option("--file <path>", "a microagent.yaml spec; flags override it");
  return addRefusedDockerFlags(addNetworkOptions(addResourceOptions(cmd)))
    .action(
      action(async (ctx, imageArg: string | undefined, cmd: string[], o: RunFlags) => {
        refuseDockerFlags("run", o as Record<string, unknown>);
        if (o.keep && o.rm) throw CommonErrors.USAGE({ message: "--keep and --rm contradict each other: pass one" });
        if (o.detach && o.rm) {
          throw CommonErrors.USAGE({
            message: "-d keeps the workspace (nothing stays behind to delete it when the command ends), so --rm cannot apply",
            remediation: "Drop --rm, and delete it yourself: `microagent wait NAME && microagent delete NAME`.",
          });
        }
        if (o.tty) {
          if (ctx.globals.format === "json") throw CommonErrors.USAGE({ message: "run -t is a terminal session and has no JSON form", remediation: "Drop -t (keep -i to stream stdin), or drop --json." });
          requireTerminal("run");
        }
        let image = o.image;
        let command = cmd;
        if (image && imageArg) command = [imageArg, ...cmd]; // with --image, every positional is the command
        image ??= imageArg;
        if (!image) throw CommonErrors.USAGE({ message: "run needs an image: `microagent run IMAGE [CMD...]` or `--image REF`" });
        if (o.exec !== undefined && command.length > 0) {
          throw CommonErrors.USAGE({ message: "pass the command either as --exec \"...\" or after IMAGE, not both" });
        }
        if (o.detach && (o.interactive || o.tty)) {
          throw CommonErrors.USAGE({ message: "-d cannot be combined with -i or -t: nothing stays attached to the command", remediation: "Drop -d for an attached run, or drop -i/-t and use `microagent exec -it NAME sh` on the detached workspace." });
        }
        const env = o.envFile || o.env ? { ...(o.envFile ?? {}), ...(o.env ?? {}) } : undefined;
        const text = ctx.globals.format === "text";
        const out: Buffer[] = [];
        const err: Buffer[] = [];
        const abort = new AbortController();
        // A reader that closes our stdout early ends the run quietly, as SIGINT would (the VM is killed).
        const pipe = watchBrokenPipe([ctx.streams.stdout, ctx.streams.stderr], () => abort.abort(new Error("broken pipe")));
        const onSigint = () => abort.abort(new Error("interrupted"));
        process.once("SIGINT", onSigint);
        let r;
        try {
          r = await runWorkspace({
            image,
            ...(command.length > 0 ? { cmd: command } : {}),
            ...(o.exec !== undefined ? { exec: o.exec } : {}),
            ...(o.entrypoint !== undefined ? { entrypoint: [o.entrypoint] } : {}),
            ...(o.workdir !== undefined ? { cwd: o.workdir } : {}),
            ...(o.user !== undefined ? { user: o.user } : {}),
            ...(o.detach ? { detach: true } : {}),
            ...(o.interactive && !o.tty ? { stdin: process.stdin } : {}),
            ...(o.tty
              ? { tty: { ...terminalSize(ctx.streams.stdout), attach: (con) => attachTerminal(con, { stdin: process.stdin, stdout: ctx.streams.stdout }, Boolean(o.interactive)) } }
              : {}),
            ...(o.name ? { name: o.name } : {}),
            stateDir: ctx.globals.stateDir,
            keep: Boolean(o.keep),
            ...(o.cold ? { cold: true } : {}),
            ...(o.timeout !== undefined ? { timeoutMs: o.timeout } : {}),
            ...(env ? { env } : {}),
            ...(o.setup ? { setup: o.setup } : {}),
            ...(o.file ? { specFile: o.file } : {}),
            ...(o.secret ? { secrets: o.secret } : {}),
            ...resourceOptions(o),
            ...networkOptions(o),
            ...(ctx.globals.backend ? { backend: ctx.globals.backend } : {}),
            ...(ctx.globals.arch ? { arch: ctx.globals.arch } : {}),
            ...(ctx.globals.supervisor ? { supervisorPath: ctx.globals.supervisor } : {}),
            // A slow reader holds the workload back (the supervisor credits the guest as we drain).
            onOutput: (stream, data) => {
              if (text) return pipe.write(stream === "stdout" ? ctx.streams.stdout : ctx.streams.stderr, data);
              (stream === "stdout" ? out : err).push(data);
              return undefined;
            },
            onProgress: (m) => ctx.progress(m),
            onStarted: (started) => {
              if (text && started.accel === "tcg") ctx.streams.stderr.write(tcgNote());
            },
            signal: abort.signal,
          });
        } catch (e) {
          if (pipe.broken) return { exitCode: EXIT_BROKEN_PIPE, passthrough: true };
          throw e;
        } finally {
          process.off("SIGINT", onSigint);
        }
        if (pipe.broken) return { exitCode: EXIT_BROKEN_PIPE, passthrough: true };
        if (r.detached) {
          // Like `docker run -d`: the name alone on stdout, for `NAME=$(microagent run -d ...)`.
          return { json: runJson(r, { stdout: Buffer.alloc(0), stderr: Buffer.alloc(0) }, ctx.globals.stateDir), text: r.workspace };
        }
        if (text && r.kept) ctx.streams.stderr.write(`kept workspace ${r.workspace}\n`);
        if (text && r.interrupted) ctx.streams.stderr.write("error: interrupted; the workspace was killed\n");
        if (text && r.timedOut) ctx.streams.stderr.write(`error: the command timed out after ${formatDurationMs(o.timeout ?? 0)}; the workspace was killed\n`);
        if (text && r.result?.startError) ctx.streams.stderr.write(`error: the command failed to start: ${r.result.startError}\n`);
        return {
          json: runJson(r, { stdout: Buffer.concat(out), stderr: Buffer.concat(err) }, ctx.globals.stateDir),
          exitCode: r.exitCode,
          passthrough: true,
        };
      }),
    );
}
