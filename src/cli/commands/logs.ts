import { Command } from "commander";
import { action } from "../action.ts";
import { followLogs, readLogs } from "../../workspace/history.ts";

export function logsCommand(): Command {
  return new Command("logs")
    .alias("log")
    .description("the guest's serial console (boot messages, setup and entrypoint output); -f follows it")
    .argument("<name>", "workspace name")
    .option("-f, --follow", "keep printing as the guest writes; ends when the workspace is no longer starting/running/stopping")
    .action(
      action(async (ctx, name: string, o: { follow?: boolean }) => {
        const access = { stateDir: ctx.globals.stateDir };
        if (!o.follow) {
          const logs = await readLogs(name, access);
          return { json: { logs }, text: logs };
        }
        const ac = new AbortController();
        const stop = () => ac.abort();
        process.once("SIGINT", stop);
        try {
          for await (const chunk of followLogs(name, { ...access, signal: ac.signal })) {
            // JSON: one {"logs": "<chunk>"} object per line; text: the bytes as the guest wrote them.
            if (ctx.globals.format === "json") ctx.streams.stdout.write(`${JSON.stringify({ logs: chunk.toString("utf8") })}\n`);
            else ctx.streams.stdout.write(chunk);
          }
        } finally {
          process.removeListener("SIGINT", stop);
        }
        return ctx.globals.mode === "ax" ? { json: { followed: true } } : {};
      }),
    );
}
