import { Command } from "commander";
import { action } from "../action.ts";
import { stopJson } from "../../api/results.ts";
import { stopWorkspace } from "../../api/lifecycle.ts";
import { parseDurationFlag } from "./workspace-flags.ts";

export function stopCommand(): Command {
  return new Command("stop")
    .description("graceful shutdown request; the VM is terminated if the guest does not power off in time (state stopped)")
    .argument("<name>", "workspace name")
    .option("--timeout <duration>", "how long the guest may take to power off (default 15s)", parseDurationFlag("--timeout"))
    .action(
      action(async (ctx, name: string, o: { timeout?: number }) => {
        const r = await stopWorkspace(name, "stop", {
          stateDir: ctx.globals.stateDir,
          timeoutMs: o.timeout,
        });
        const text = r.changed ? `${name} is ${r.state}` : `${name} was already ${r.state}`;
        return { json: stopJson(r), text };
      }),
    );
}
