import { Command } from "commander";
import { action } from "../action.ts";
import { listJson } from "../../api/results.ts";
import { psWorkspaces } from "../../workspace/list.ts";
import { workspaceTable } from "./list.ts";

export function psCommand(): Command {
  return new Command("ps")
    .description("live workspaces only: starting, running, stopping, quarantined")
    .action(
      action(async (ctx) => {
        const workspaces = await psWorkspaces({ stateDir: ctx.globals.stateDir });
        return { json: listJson(workspaces), text: workspaceTable(workspaces) };
      }),
    );
}
