/**
 * Builds the commander program: global flags (for help), and every command from commands/.
 */
import { Command, Option } from "commander";
import { COMMANDS } from "./commands/index.ts";
import { packageVersion } from "../version.ts";

export function buildProgram(): Command {
  const program = new Command("microagent")
    .description("Run AI-agent workspaces in microVMs: boot a Linux VM from an OCI image, run commands in it, keep it or throw it away.")
    .version(packageVersion(), "--version", "print the version")
    .enablePositionalOptions()
    .showSuggestionAfterError(true)
    .configureHelp({ showGlobalOptions: true, sortSubcommands: true });
  // The global flags are read by globals.ts from any position; they are declared here so that
  // `--help` lists them.
  program
    .addOption(new Option("--json", "print JSON (same as --output json)"))
    .addOption(new Option("--output <format>", "output format").choices(["json", "text"]))
    .addOption(new Option("--text", "print text (same as --output text)"))
    .addOption(new Option("--mode <mode>", "ux for people, ax for agents (one JSON envelope on stdout)").choices(["ux", "ax"]).env("MICROAGENT_MODE"))
    .addOption(new Option("--state-dir <dir>", "state directory").default("~/.microagent"))
    .addOption(new Option("--supervisor <path>", "backend supervisor executable override"))
    .addOption(new Option("--backend <name>", "backend: linux-kvm, linux-qemu, apple-vf, windows-hyperv"))
    .addOption(new Option("--arch <arch>", "guest architecture: amd64, arm64"))
    .addOption(new Option("--no-color", "no colour in text output (also NO_COLOR)"));
  for (const make of COMMANDS) program.addCommand(make());
  return program;
}

/**
 * Tells the global-flag scanner where a command's guest command tail begins: for `run`, the first
 * token after the IMAGE positional.
 */
export function tailStartFor(program: Command): (sub: string, restSoFar: readonly string[], token: string) => boolean {
  return (sub, restSoFar) => {
    if (sub !== "run") return false;
    const cmd = program.commands.find((c) => c.name() === sub || c.aliases().includes(sub));
    if (!cmd) return false;
    const takesValue = new Set<string>();
    for (const o of cmd.options) {
      if (o.required || o.optional) {
        if (o.long) takesValue.add(o.long);
        if (o.short) takesValue.add(o.short);
      }
    }
    const start = restSoFar.indexOf(sub);
    let positionals = 0;
    for (let i = start + 1; i < restSoFar.length; i++) {
      const t = restSoFar[i] as string;
      if (t.startsWith("-")) {
        if (!t.includes("=") && takesValue.has(t)) i++;
        continue;
      }
      positionals++;
    }
    return positionals >= 1;
  };
}
