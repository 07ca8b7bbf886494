/**
 * The CLI entry point: lift global flags, parse with commander, run the command, render the
 * outcome or error once, and set the exit code. No command has its own try/catch + exit.
 */
import { CommanderError } from "commander";
import { buildProgram, tailStartFor } from "./program.ts";
import { GlobalFlagError, splitGlobalFlags, type GlobalOptions } from "./globals.ts";
import { makeContext, emitError, EXIT_USAGE, type Streams } from "./output.ts";
import { setCliContext } from "./action.ts";
import { CommonErrors } from "../contract/errors.ts";

export async function main(argv: readonly string[], streams: Streams = { stdout: process.stdout, stderr: process.stderr }): Promise<number> {
  const program = buildProgram();
  let globals: GlobalOptions;
  let rest: string[];
  const fallback = { format: "text" as const, mode: "ux" as const, color: false };
  try {
    ({ globals, rest } = splitGlobalFlags(argv, process.env, tailStartFor(program), Boolean(streams.stdout.isTTY)));
  } catch (e) {
    if (e instanceof GlobalFlagError) {
      const jsonWanted = argv.includes("--json") || process.env.MICROAGENT_MODE === "ax";
      emitError(CommonErrors.USAGE({ message: e.message }), jsonWanted ? { ...fallback, format: "json" } : fallback, streams);
      return EXIT_USAGE;
    }
    throw e;
  }
  setCliContext(makeContext(globals, streams));
  program.exitOverride();
  const quietErrors = globals.format === "json" || globals.mode === "ax";
  const configure = (cmd: typeof program) => {
    cmd.exitOverride();
    cmd.configureOutput({
      writeOut: (s) => streams.stdout.write(s),
      writeErr: (s) => streams.stderr.write(s),
      // Usage errors are rendered by emitError below (JSON in JSON/AX mode).
      outputError: (s, write) => {
        if (!quietErrors) write(s);
      },
    });
    for (const sub of cmd.commands) configure(sub);
  };
  configure(program);
  try {
    await program.parseAsync(rest as string[], { from: "user" });
    return typeof process.exitCode === "number" ? process.exitCode : 0;
  } catch (e) {
    if (e instanceof CommanderError) {
      if (e.code === "commander.helpDisplayed" || e.code === "commander.version" || e.code === "commander.help") return 0;
      // A group run without a subcommand prints its help: an explanation, not a failure.
      if (e.code === "commander.executeSubCommandAsync") return 0;
      if (quietErrors) emitError(CommonErrors.USAGE({ message: e.message.replace(/^error: /, "") }), globals, streams);
      return EXIT_USAGE;
    }
    return emitError(e, globals, streams);
  }
}
