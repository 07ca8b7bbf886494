import { Command } from "commander";
import { action } from "../action.ts";
import { pauseWorkspace } from "../../api/lifecycle.ts";
import { PauseJsonSchema } from "../../contract/results.ts";

function command(verb: "pause" | "resume", description: string): Command {
  return new Command(verb)
    .description(description)
    .argument("<name>", "workspace name")
    .action(
      action(async (ctx, name: string) => {
        const r = PauseJsonSchema.parse(await pauseWorkspace(name, verb, { stateDir: ctx.globals.stateDir }));
        const text =
          verb === "pause"
            ? r.changed
              ? `${name} is paused (vCPUs frozen in ${r.ms} ms); \`microagent resume ${name}\` thaws it`
              : `${name} was already paused`
            : r.changed
              ? `${name} is running again (resumed in ${r.ms} ms)`
              : `${name} was already running`;
        return { json: r, text };
      }),
    );
}

export function pauseCommand(): Command {
  return command("pause", "freeze a running workspace's vCPUs (memory, disk, network flows and channel kept); exec/connect/cp are refused until resume");
}

export function resumeCommand(): Command {
  return command("resume", "thaw a paused workspace's vCPUs; the guest continues where it stopped");
}
