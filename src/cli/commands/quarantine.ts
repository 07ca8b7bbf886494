import { Command } from "commander";
import { action } from "../action.ts";
import { quarantineJson } from "../../api/results.ts";
import { quarantineWorkspace } from "../../api/lifecycle.ts";

export function quarantineCommand(): Command {
  return new Command("quarantine")
    .description("sever every host path into a running workspace (guest channel, console input); disk and events are kept, the VM is frozen, and start is refused until halt/stop/kill")
    .argument("<name>", "workspace name")
    .action(
      action(async (ctx, name: string) => {
        const r = await quarantineWorkspace(name, { stateDir: ctx.globals.stateDir });
        return {
          json: quarantineJson(r),
          text: `${name} is quarantined (channel and console input severed${r.frozen ? ", VM frozen" : ""}); run \`microagent halt ${name}\` (or stop / kill) to end it`,
        };
      }),
    );
}
