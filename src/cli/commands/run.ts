import { Command } from "commander";
import { action } from "../action.ts";
import { runWorkspace } from "../../api/run.ts";
import { runJson } from "../../api/results.ts";
import { tcgNote } from "../notes.ts";
import { CommonErrors } from "../../contract/errors.ts";
import { EXIT_BROKEN_PIPE, watchBrokenPipe } from "../pipe.ts";
import type { SecretRef } from "../../secrets/ref.ts";
import { addNetworkOptions, addResourceOptions, collectEnv, collectList, collectSecret, formatDurationMs, networkOptions, parseDurationFlag, resourceOptions, type NetworkFlags, type ResourceFlags } from "./workspace-flags.ts";

interface RunFlags extends ResourceFlags, NetworkFlags {
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
  return addNetworkOptions(addResourceOptions(new Command("run")))
    .description("boot a scratch workspace from IMAGE, run a command in it, stream its output and exit with its code; the workspace is deleted afterwards unless --keep")
    .usage("[flags] IMAGE [CMD ARG...]  |  run --image REF --exec \"shell command\"")
    .argument("[image]", "image reference (tag or digest); pulled if needed")
    .argument("[cmd...]", "command and arguments (default: the image's Entrypoint/Cmd)")
    .passThroughOptions()
    .option("--image <ref>", "image reference (instead of the IMAGE positional)")
    .option("--exec <command>", "shell command to run with /bin/sh -c (instead of CMD)")
    .option("--keep", "keep the workspace after the run (its name is printed on stderr)")
    .option("--rm", "delete the workspace after the run (the default)")
    .option("--name <name>", "workspace name (default: run-<adjective>-<noun>-<hex>)")
    .option("--timeout <duration>", "wall-clock limit on the command; on expiry the VM is killed and the exit code is 124", parseDurationFlag("--timeout"))
    .option("-e, --env <KEY=VAL>", "environment variable (repeatable)", collectEnv)
    .option("--secret <NAME=SOURCE>", "secret from env:VAR, file:PATH or cmd:COMMAND (repeatable); see `microagent secret --help`", collectSecret)
    .option("--setup <command>", "shell command run before the command (repeatable, in order)", collectList)
    .option("--file <path>", "a microagent.yaml spec; flags override it")
    .action(
      action(async (ctx, imageArg: string | undefined, cmd: string[], o: RunFlags) => {
        if (o.keep && o.rm) throw CommonErrors.USAGE({ message: "--keep and --rm contradict each other: pass one" });
        let image = o.image;
        let command = cmd;
        if (image && imageArg) command = [imageArg, ...cmd]; // with --image, every positional is the command
        image ??= imageArg;
        if (!image) throw CommonErrors.USAGE({ message: "run needs an image: `microagent run IMAGE [CMD...]` or `--image REF`" });
        if (o.exec !== undefined && command.length > 0) {
          throw CommonErrors.USAGE({ message: "pass the command either as --exec \"...\" or after IMAGE, not both" });
        }
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
            ...(o.name ? { name: o.name } : {}),
            stateDir: ctx.globals.stateDir,
            keep: Boolean(o.keep),
            ...(o.timeout !== undefined ? { timeoutMs: o.timeout } : {}),
            ...(o.env ? { env: o.env } : {}),
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
