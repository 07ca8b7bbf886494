import { Command } from "commander";
import { action } from "../action.ts";
import { openWorkspace } from "../../workspace/access.ts";
import { readEgress } from "../../egress/audit.ts";
import type { EgressRecord } from "../../egress/audit.ts";

/** How often `-f` looks for new records (the log is append-only; a poll costs one read). */
const FOLLOW_POLL_MS = 500;

export function egressCommand(): Command {
  return new Command("egress")
    .description("a workspace's egress audit (flows, DNS answers, denies, TLS errors), oldest first; -f follows it")
    .argument("<name>", "workspace name")
    .option("-f, --follow", "keep printing new records until interrupted")
    .action(
      action(async (ctx, name: string, o: { follow?: boolean }) => {
        const paths = await openWorkspace(name, { stateDir: ctx.globals.stateDir });
        const records = await readEgress(paths.dir);
        if (!o.follow) return { json: { egress: records }, text: records.map(egressLine).join("\n") };
        const ac = new AbortController();
        const stop = () => ac.abort();
        process.once("SIGINT", stop);
        const print = (r: EgressRecord) => ctx.streams.stdout.write(ctx.globals.format === "json" ? `${JSON.stringify(r)}\n` : `${egressLine(r)}\n`);
        // Records are identified by their line; coalesced denies are written late, so keep a seen-set.
        const seen = new Set<string>();
        for (const r of records) {
          seen.add(JSON.stringify(r));
          print(r);
        }
        try {
          while (!ac.signal.aborted) {
            await new Promise((r) => setTimeout(r, FOLLOW_POLL_MS));
            for (const r of await readEgress(paths.dir)) {
              const k = JSON.stringify(r);
              if (seen.has(k)) continue;
              seen.add(k);
              print(r);
            }
          }
        } finally {
          process.removeListener("SIGINT", stop);
        }
        return ctx.globals.mode === "ax" ? { json: { followed: seen.size } } : {};
      }),
    );
}

/** One line per record: time, type, decision, destination, name, signal, reason (pure, for tests). */
export function egressLine(r: EgressRecord): string {
  const who = r.name ?? (r.sni ? `sni=${r.sni}` : r.host ? `host=${r.host}` : "-");
  const extra = [
    r.signal ? `signal=${r.signal}` : "",
    r.count && r.count > 1 ? `x${r.count}` : "",
    r.bytesUp !== undefined ? `up=${r.bytesUp} down=${r.bytesDown} ${r.durationMs}ms` : "",
    r.answers ? `answers=${r.answers.join(",") || "none"}` : "",
  ]
    .filter(Boolean)
    .join(" ");
  return `${r.time}  ${r.type.padEnd(28)} ${r.decision.padEnd(5)} ${r.proto.padEnd(3)} ${(r.dst ?? "-").padEnd(21)} ${who}  ${r.reason}${extra ? `  (${extra})` : ""}`;
}
