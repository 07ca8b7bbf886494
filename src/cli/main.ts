/**
 * The CLI entry point: lift global flags, parse with commander, run the command, render the
 * outcome or error once, and set the exit code. No command has its own try/catch + exit.
 */
import { CommanderError } from "commander";
import { buildProgram, tailStartFor } from "./program.ts";
import { GlobalFlagError, splitGlobalFlags, type GlobalOptions } from "./globals.ts";
import { makeContext, emitError, EXIT_USAGE, type Streams } from "./output.ts";
import { setCliContext } from "./action.ts";
import { CommonErrors, type MicroagentError } from "../contract/errors.ts";

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
  const configure = (cmd: typeof program) => {
    cmd.exitOverride();
    cmd.configureOutput({
      writeOut: (s) => streams.stdout.write(s),
      writeErr: (s) => streams.stderr.write(s),
      // Usage errors are rendered once, by emitError below, in the same `error:`/`fix:` form as
      // every other error (JSON in JSON/AX mode); commander's own text is not printed.
      outputError: () => {},
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
      emitError(usageErrorFrom(e, rest), globals, streams);
      return EXIT_USAGE;
    }
    return emitError(e, globals, streams);
  }
}

/**
 * Turns commander's usage error into ours: its sentence (and its "Did you mean" hint, folded into
 * the message), with a remediation naming the help of the command that was being parsed.
 */
export function usageErrorFrom(e: CommanderError, argv: readonly string[]): MicroagentError {
  const lines = e.message.replace(/^error: /, "").split("\n").map((l) => l.trim()).filter((l) => l !== "");
  const message = lines.map((l) => l.replace(/^\((.*)\)$/, "$1").replace(/^Did you mean/, "did you mean")).join("; ");
  // The command whose help to name: the first word, unless that word is itself the unknown command.
  const words = argv.filter((a) => !a.startsWith("-"));
  const sub = e.code === "commander.unknownCommand" && words.length < 2 ? undefined : words[0];
  const remediation = sub ? `Run \`microagent ${sub} --help\` for its arguments and flags.` : "Run `microagent --help` for the list of commands.";
  return CommonErrors.USAGE({ message, remediation });
}
