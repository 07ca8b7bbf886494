import { Command } from "commander";
import { action } from "../action.ts";
import { stopJson } from "../../api/results.ts";
import { stopWorkspace } from "../../api/lifecycle.ts";


export function killCommand(): Command {
  return new Command("kill")
    .description("hard termination of the VM at once, no flush; the disk is kept (state stopped)")
    .argument("<name>", "workspace name")

    .action(
      action(async (ctx, name: string) => {
        const r = await stopWorkspace(name, "kill", {
          stateDir: ctx.globals.stateDir,

        });
        const text = r.changed ? `${name} is ${r.state}` : `${name} was already ${r.state}`;
        return { json: stopJson(r), text };
      }),
    );
}
