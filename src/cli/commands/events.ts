import { Command } from "commander";
import { action } from "../action.ts";
import { eventsJson } from "../../api/results.ts";
import { followEvents, readEvents } from "../../workspace/history.ts";
import type { WorkspaceEvent } from "../../workspace/events.ts";

export function eventsCommand(): Command {
  return new Command("events")
    .description("a workspace's lifecycle history, oldest first; -f follows it until it settles")
    .argument("<name>", "workspace name")
    .option("-f, --follow", "keep printing new events; ends when the workspace next reaches prepared, halted, stopped, quarantined or failed")
    .action(
      action(async (ctx, name: string, o: { follow?: boolean }) => {
        const access = { stateDir: ctx.globals.stateDir };
        if (!o.follow) {
          const events = await readEvents(name, access);
          return { json: eventsJson(events), text: events.map(eventLine).join("\n") };
        }
        // Follow: one line per event as it happens (JSON: one compact object per line).
        const ac = new AbortController();
        const stop = () => ac.abort();
        process.once("SIGINT", stop);
        let count = 0;
        try {
          for await (const e of followEvents(name, { ...access, signal: ac.signal })) {
            count++;
            ctx.streams.stdout.write(ctx.globals.format === "json" ? `${JSON.stringify(e)}\n` : `${eventLine(e)}\n`);
          }
        } finally {
          process.removeListener("SIGINT", stop);
        }
        return ctx.globals.mode === "ax" ? { json: { followed: count } } : {};
      }),
    );
}

export function eventLine(e: WorkspaceEvent): string {
  const who = [e.identity.runtimeId ? `runtime ${e.identity.runtimeId.slice(0, 8)}` : "", e.identity.requestId ? `by ${e.identity.requestId}` : ""].filter(Boolean).join(", ");
  return `${e.observedAt}  ${e.state.padEnd(11)}  ${e.detail}${who ? `  (${who})` : ""}`;
}
