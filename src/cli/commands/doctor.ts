import { Command } from "commander";
import { action } from "../action.ts";
import { EXIT_FAILED, EXIT_OK } from "../output.ts";
import { doctor, doctorFailure } from "../../host/doctor.ts";
import { formatDoctorText } from "../../host/format.ts";

export function doctorCommand(): Command {
  return new Command("doctor")
    .description(
      "check that this host can run workspaces: backend, KVM, VMM, supervisor, kernel, console, networking (uses the global --backend, --arch, --supervisor)",
    )
    .configureHelp({ showGlobalOptions: true })
    .addHelpText("after", "\nExit status: 0 when every required check passes (even if optional ones fail), 1 otherwise.")
    .action(
      action(async (ctx) => {
        const g = ctx.globals;
        const res = await doctor({
          stateDir: g.stateDir,
          ...(g.backend ? { backend: g.backend } : {}),
          ...(g.arch ? { arch: g.arch } : {}),
          ...(g.supervisor !== undefined ? { supervisor: g.supervisor } : {}),
        });
        return {
          json: res,
          text: formatDoctorText(res, { color: g.color }),
          exitCode: res.ok ? EXIT_OK : EXIT_FAILED,
          ...(res.ok ? {} : { failure: doctorFailure(res) }),
        };
      }),
    );
}
