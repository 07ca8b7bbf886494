import { Command } from "commander";
import { action } from "../action.ts";
import { deleteJson } from "../../api/results.ts";
import { stopWorkspace } from "../../api/lifecycle.ts";
import { deleteWorkspace } from "../../workspace/delete.ts";

export function deleteCommand(): Command {
  return new Command("delete")
    .alias("rm")
    .description("remove a workspace (disk overlay, logs, events); refused while its VM runs unless --force")
    .argument("<name>", "workspace name")
    .option("--force", "kill the VM first if it is running")
    .action(
      action(async (ctx, name: string, o: { force?: boolean }) => {
        const stateDir = ctx.globals.stateDir;
        const r = await deleteWorkspace(name, {
          stateDir,
          ...(o.force ? { force: true, kill: async () => void (await stopWorkspace(name, "kill", { stateDir })) } : {}),
        });
        const text = r.deleted ? `deleted ${name}${r.killed ? " (its VM was killed first)" : ""}` : `workspace ${name} does not exist; nothing to delete`;
        return { json: deleteJson(r), text };
      }),
    );
}
