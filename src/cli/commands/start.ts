import { Command } from "commander";
import { action } from "../action.ts";
import { tcgNote } from "../notes.ts";
import { mediationWarning, startWorkspace, waitWorkspace } from "../../api/lifecycle.ts";
import { parseDurationFlag } from "./workspace-flags.ts";
import { startJson } from "../../api/results.ts";

export function startCommand(): Command {
  return new Command("start")
    .description("boot a prepared, halted, stopped or failed workspace and wait until its guest is up")
    .argument("<name>", "workspace name")
    .option("--wait", "after boot, block until the workspace reaches a terminal state")
    .option("--timeout <duration>", "bound on the boot (e.g. 90s, 2m)", parseDurationFlag("--timeout"))
    .option("--wait-timeout <duration>", "bound on --wait (implies --wait)", parseDurationFlag("--wait-timeout"))
    .option("--force", "boot even if the kernel or init diverged from the manifest")
    .option("--from-snapshot <tag>", "restore this snapshot (memory, devices, disk as of the capture) instead of booting; what the disk got since is dropped")
    .action(
      action(async (ctx, name: string, o: { wait?: boolean; timeout?: number; waitTimeout?: number; force?: boolean; fromSnapshot?: string }) => {
        const opts = { stateDir: ctx.globals.stateDir, ...(ctx.globals.supervisor ? { supervisorPath: ctx.globals.supervisor } : {}) };
        ctx.progress(`booting ${name}...`);
        const started = await startWorkspace(name, {
          ...opts,
          ...(o.force ? { force: true } : {}),
          ...(o.fromSnapshot !== undefined ? { fromSnapshot: o.fromSnapshot } : {}),
          ...(o.timeout !== undefined ? { timeoutMs: o.timeout } : {}),
        });
        const accel = started.accel;
        if (ctx.globals.format === "text" && accel === "tcg") ctx.streams.stderr.write(tcgNote());
        if (ctx.globals.format === "text") {
          const warning = await mediationWarning(name, opts);
          if (warning) ctx.streams.stderr.write(warning);
        }
        if (!o.wait && o.waitTimeout === undefined) {
          const how = started.restoredFrom ? `restored from ${started.restoredFrom.workspace}:${started.restoredFrom.tag} in` : "booted in";
          return { json: startJson(started), text: `${name} is running (${how} ${((started.bootMs ?? 0) / 1000).toFixed(1)} s, ${accel})` };
        }
        const waited = await waitWorkspace(name, { ...opts, ...(o.waitTimeout !== undefined ? { timeoutMs: o.waitTimeout } : {}) });
        return {
          json: startJson(started, waited),
          text: `${name} is ${waited.state}: ${waited.detail}`,
          exitCode: waited.ok ? 0 : 1,
        };
      }),
    );
}
