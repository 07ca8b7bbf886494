import { Command, InvalidArgumentError, Option } from "commander";
import { action } from "../action.ts";
import { connectJson } from "../../api/results.ts";
import { Workspace } from "../../api/workspace.ts";
import { supervisorFor } from "../../api/lifecycle.ts";
import { attachConsole, sendConsoleLine, waitForPrompt } from "../console.ts";
import { CommonErrors } from "../../contract/errors.ts";
import { SupervisorErrors } from "../../supervisor/errors.ts";

export function connectCommand(): Command {
  return new Command("connect")
    .description("open the interactive console of a running workspace (detach with Ctrl-]), or send one line with --send")
    .argument("<name>", "workspace name")
    .option("--send <line>", "send one line, print the output, and exit")
    .addOption(new Option("--timeout <seconds>", "how long to wait for output after --send").argParser(secondsArg("--timeout")).default(5000, "5"))
    .addOption(new Option("--ready-timeout <seconds>", "wait this long for a shell prompt first; 0 skips the wait").argParser(secondsArg("--ready-timeout")).default(10_000, "10"))
    .action(
      action(async (ctx, name: string, o: { send?: string; timeout: number; readyTimeout: number }) => {
        const timeoutMs = o.timeout;
        const readyMs = o.readyTimeout;
        if (o.send === undefined && ctx.globals.format === "json") {
          throw CommonErrors.USAGE({ message: "connect without --send is interactive and has no JSON form", remediation: "Pass --send LINE, or drop --json." });
        }
        try {
          await supervisorFor(name, { stateDir: ctx.globals.stateDir });
        } catch (e) {
          if (SupervisorErrors.NOT_RUNNING.is(e)) {
            throw SupervisorErrors.CONSOLE_UNAVAILABLE({ message: `console input is unavailable: ${e.message}`, remediation: `Start it first: \`microagent start ${name}\`, then connect again.` });
          }
          throw e;
        }
        const ws = await Workspace.connect(name, { stateDir: ctx.globals.stateDir });
        // A terminal may report 0x0 (e.g. under `script`): fall back to 80x24.
        const cols = (ctx.streams.stdout as { columns?: number }).columns || 80;
        const rows = (ctx.streams.stdout as { rows?: number }).rows || 24;
        const con = await ws.console({ cols, rows });
        const transcript = readyMs > 0 ? await waitForPrompt(con, readyMs) : "";
        if (o.send !== undefined) {
          const output = await sendConsoleLine(con, o.send, timeoutMs);
          con.close();
          await con.done.catch(() => {});
          return { json: connectJson(name, o.send, output), text: output };
        }
        if (!process.stdin.isTTY) {
          throw CommonErrors.USAGE({ message: "connect needs a terminal on stdin for an interactive console", remediation: "Run it from a terminal, or pass --send LINE." });
        }
        ctx.streams.stderr.write(`connected to ${name}; detach with Ctrl-]\r\n`);
        if (transcript) ctx.streams.stdout.write(transcript);
        await attachConsole(con, process.stdin, ctx.streams.stdout);
        ctx.streams.stderr.write(`\r\ndetached from ${name}\n`);
        return {};
      }),
    );
}

/** A number of seconds (0 or more) as milliseconds; a bad value is a usage error before anything connects. */
function secondsArg(what: string): (value: string) => number {
  return (value: string) => {
    const n = Number(value);
    if (value.trim() === "" || !Number.isFinite(n) || n < 0) throw new InvalidArgumentError(`invalid ${what} '${value}': expected a number of seconds (0 or more)`);
    return Math.round(n * 1000);
  };
}
