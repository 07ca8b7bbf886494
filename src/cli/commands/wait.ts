import { Command } from "commander";
import { action } from "../action.ts";
import { waitJson } from "../../api/results.ts";
import { waitWorkspace } from "../../api/lifecycle.ts";
import { parseDurationFlag } from "./workspace-flags.ts";

export function waitCommand(): Command {
  return new Command("wait")
    .description("block until a workspace reaches a terminal state (stopped/halted/prepared: exit 0; failed/quarantined: exit 1)")
    .argument("<name>", "workspace name")
    .option("--timeout <duration>", "give up after this long (0 = forever)", parseDurationFlag("--timeout", { allowZero: true }), 0)
    .action(
      action(async (ctx, name: string, o: { timeout: number }) => {
        const timeoutMs = o.timeout;
        const r = await waitWorkspace(name, { stateDir: ctx.globals.stateDir, ...(timeoutMs > 0 ? { timeoutMs } : {}) });
        return { json: waitJson(r), text: `${name} is ${r.state}: ${r.detail}`, exitCode: r.ok ? 0 : 1 };
      }),
    );
}
