import { Command } from "commander";
import { action } from "../action.ts";
import { stopJson } from "../../api/results.ts";
import { stopWorkspace } from "../../api/lifecycle.ts";
import { parseDurationFlag } from "./workspace-flags.ts";

export function haltCommand(): Command {
  return new Command("halt")
    .description("clean shutdown: the guest stops its workload, syncs and powers off; the disk is kept (state halted)")
    .argument("<name>", "workspace name")
    .option("--timeout <duration>", "how long the guest may take to power off (default 15s)", parseDurationFlag("--timeout"))
    .action(
      action(async (ctx, name: string, o: { timeout?: number }) => {
        const r = await stopWorkspace(name, "halt", {
          stateDir: ctx.globals.stateDir,
          timeoutMs: o.timeout,
        });
        const text = r.changed ? `${name} is ${r.state}` : `${name} was already ${r.state}`;
        return { json: stopJson(r), text };
      }),
    );
}
