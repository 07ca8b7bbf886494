import { Command } from "commander";
import { action } from "../action.ts";
import { cp } from "../../api/cp.ts";
import { parseDurationFlag } from "./workspace-flags.ts";

function size(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KiB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

export function cpCommand(): Command {
  return new Command("cp")
    .description("copy files or directories between the host and a running workspace (NAME:/path on one side; SRC/. copies a directory's contents)")
    .argument("<src>", "source: a host path or NAME:/guest/path")
    .argument("<dst>", "destination: a host path or NAME:/guest/path")
    .option("-a, --archive", "keep owners: into the guest the host uid/gid (else root:root); out of it the guest's (only when run as root)")
    .option("-L, --follow-link", "follow SRC itself if it is a symlink (links inside a directory are always copied as links)")
    .option("--timeout <duration>", "bound for the copy (default: none)", parseDurationFlag("--timeout"))
    .action(
      action(async (ctx, src: string, dst: string, o: { archive?: boolean; followLink?: boolean; timeout?: number }) => {
        const r = await cp(src, dst, {
          ...(ctx.globals.stateDir ? { stateDir: ctx.globals.stateDir } : {}),
          ...(o.archive ? { archive: true } : {}),
          ...(o.followLink ? { followLink: true } : {}),
          ...(o.timeout ? { timeoutMs: o.timeout } : {}),
        });
        const text = `copied ${r.entries} ${r.entries === 1 ? "entry" : "entries"} (${size(r.bytes)}) to ${r.destination}`;
        return { json: r, text };
      }),
    );
}
