import { Command } from "commander";
import { StringDecoder } from "node:string_decoder";
import { action } from "../action.ts";
import { followLogs, readLogBytes } from "../../workspace/history.ts";
import { sanitizeTerminalText } from "../../util/terminal.ts";

export function logsCommand(): Command {
  return new Command("logs")
    .alias("log")
    .description("the guest's serial console (boot messages, setup and entrypoint output); -f follows it")
    .argument("<name>", "workspace name")
    .option("-f, --follow", "keep printing as the guest writes; ends when the workspace is no longer starting/running/stopping")
    .option("--raw", "text mode: the bytes exactly as the guest wrote them, escape sequences included (default: control characters neutralised)")
    .action(
      action(async (ctx, name: string, o: { follow?: boolean; raw?: boolean }) => {
        const access = { stateDir: ctx.globals.stateDir };
        // The log is guest-controlled: in text mode its escape sequences would drive the host terminal
        // (clipboard writes, title changes, screen clears), so they are neutralised unless --raw.
        const raw = Boolean(o.raw);
        if (!o.follow) {
          const bytes = await readLogBytes(name, access);
          const logs = bytes.toString("utf8");
          if (raw && ctx.globals.format === "text" && ctx.globals.mode === "ux") {
            ctx.streams.stdout.write(bytes);
            return {};
          }
          return { json: { logs }, text: sanitizeTerminalText(logs) };
        }
        const ac = new AbortController();
        const stop = () => ac.abort();
        process.once("SIGINT", stop);
        // One decoder across chunks: a UTF-8 character split between two reads stays one character.
        const decoder = new StringDecoder("utf8");
        try {
          for await (const chunk of followLogs(name, { ...access, signal: ac.signal })) {
            // JSON: one {"logs": "<chunk>"} object per line; text: sanitized, or the bytes as written with --raw.
            if (ctx.globals.format === "json") ctx.streams.stdout.write(`${JSON.stringify({ logs: chunk.toString("utf8") })}\n`);
            else if (raw) ctx.streams.stdout.write(chunk);
            else ctx.streams.stdout.write(sanitizeTerminalText(decoder.write(chunk)));
          }
        } finally {
          process.removeListener("SIGINT", stop);
        }
        return ctx.globals.mode === "ax" ? { json: { followed: true } } : {};
      }),
    );
}
