import { Command } from "commander";
import { action } from "../action.ts";
import { hostReport } from "../../host/doctor.ts";
import { formatHostText } from "../../host/format.ts";

export function hostCommand(): Command {
  return new Command("host")
    .description("report what the backend supports on this host (console, exec, pause/resume, snapshots, networking), from the same probes as doctor")
    .configureHelp({ showGlobalOptions: true })
    .addHelpText("after", "\nExit status: 0 whenever the probes ran, whatever they found; use `microagent doctor` for a pass/fail health check.")
    .action(
      action(async (ctx) => {
        const g = ctx.globals;
        const res = await hostReport({
          stateDir: g.stateDir,
          ...(g.backend ? { backend: g.backend } : {}),
          ...(g.arch ? { arch: g.arch } : {}),
          ...(g.supervisor !== undefined ? { supervisor: g.supervisor } : {}),
        });
        return { json: res, text: formatHostText(res, { color: g.color }) };
      }),
    );
}
