/**
 * Builds the commander program: global flags (for help), and every command from commands/.
 */
import { Command, Option } from "commander";
import { COMMANDS } from "./commands/index.ts";
import { packageVersion } from "../version.ts";

/** `microagent --help` lists commands by purpose: the groups and the commands in this order. */
export const HELP_GROUPS: Readonly<Record<string, string>> = {
  run: "Lifecycle:",
  create: "Lifecycle:",
  start: "Lifecycle:",
  exec: "Lifecycle:",
  cp: "Lifecycle:",
  connect: "Lifecycle:",
  wait: "Lifecycle:",
  halt: "Lifecycle:",
  stop: "Lifecycle:",
  kill: "Lifecycle:",
  quarantine: "Lifecycle:",
  pause: "Lifecycle:",
  resume: "Lifecycle:",
  snapshot: "Lifecycle:",
  delete: "Lifecycle:",
  status: "Inspect:",
  list: "Inspect:",
  ps: "Inspect:",
  logs: "Inspect:",
  events: "Inspect:",
  egress: "Inspect:",
  network: "Inspect:",
  image: "Images and kernels:",
  registry: "Images and kernels:",
  rootfs: "Images and kernels:",
  kernel: "Images and kernels:",
  secret: "Secrets:",
  serve: "Agent interfaces:",
  doctor: "Host:",
  host: "Host:",
  version: "Host:",
};

export function buildProgram(): Command {
  const program = new Command("microagent")
    .description("Run AI-agent workspaces in microVMs: boot a Linux VM from an OCI image, run commands in it, keep it or throw it away.")
    .version(packageVersion(), "--version", "print the version")
    .enablePositionalOptions()
    .showSuggestionAfterError(true)
    .configureHelp({ showGlobalOptions: true });
  // The global flags are read by globals.ts from any position; they are declared here so that
  // `--help` lists them.
  program
    .addOption(new Option("--json", "print JSON (same as --output json)"))
    .addOption(new Option("--output <format>", "output format").choices(["json", "text"]))
    .addOption(new Option("--text", "print text (same as --output text)"))
    .addOption(new Option("--mode <mode>", "ux for people, ax for agents (one JSON envelope on stdout)").choices(["ux", "ax"]).env("MICROAGENT_MODE"))
    .addOption(new Option("--state-dir <dir>", "state directory").default("~/.microagent"))
    // A test and development override: not something a user needs to see in every help page.
    .addOption(new Option("--supervisor <path>", "backend supervisor executable override").hideHelp())
    .addOption(new Option("--backend <name>", "backend (linux-qemu; the others are reported by doctor, not implemented yet)"))
    .addOption(new Option("--arch <arch>", "guest architecture: amd64, arm64"))
    .addOption(new Option("--no-color", "no colour in text output (also NO_COLOR)"));
  const order = Object.keys(HELP_GROUPS);
  const rank = (c: Command) => (order.includes(c.name()) ? order.indexOf(c.name()) : order.length);
  for (const cmd of COMMANDS.map((make) => make()).sort((a, b) => rank(a) - rank(b))) {
    const group = HELP_GROUPS[cmd.name()];
    if (group) cmd.helpGroup(group);
    program.addCommand(cmd);
  }
  program.commandsGroup("Host:").helpCommand("help [command]", "display help for a command"); // listed under Host
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
