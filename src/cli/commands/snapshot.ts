import { Command } from "commander";
import { action } from "../action.ts";
import { createSnapshot, deleteWorkspaceSnapshot, listWorkspaceSnapshots } from "../../api/snapshot.ts";
import { SnapshotCreateJsonSchema, SnapshotDeleteJsonSchema, SnapshotListJsonSchema } from "../../contract/results.ts";
import { humanBytes } from "./image.ts";

export function snapshotCommand(): Command {
  const snapshot = new Command("snapshot").description("capture a workspace's memory, devices and disk (restore with `start --from-snapshot`, fork with `create --from-snapshot`)");

  snapshot
    .command("create")
    .description("snapshot a running or paused workspace: paused for the capture, then resumed (unless --leave-paused)")
    .argument("<name>", "workspace name")
    .argument("[tag]", "snapshot tag (default snap-YYYYMMDD-HHMMSS, UTC)")
    .option("--leave-paused", "keep the workspace paused after the capture")
    .action(
      action(async (ctx, name: string, tag: string | undefined, o: { leavePaused?: boolean }) => {
        const r = SnapshotCreateJsonSchema.parse(
          await createSnapshot(name, { stateDir: ctx.globals.stateDir, ...(tag !== undefined ? { tag } : {}), ...(o.leavePaused ? { leavePaused: true } : {}) }),
        );
        const s = r.snapshot;
        return {
          json: r,
          text: `${name}: snapshot ${s.tag} (${humanBytes(s.stateBytes)} memory + device state, ${humanBytes(s.diskBytes)} disk layer) in ${Math.round(r.timingsMs.total)} ms; ${name} is ${r.state}`,
        };
      }),
    );

  snapshot
    .command("list")
    .description("a workspace's snapshots, oldest first, with their sizes")
    .argument("<name>", "workspace name")
    .action(
      action(async (ctx, name: string) => {
        const r = SnapshotListJsonSchema.parse(await listWorkspaceSnapshots(name, { stateDir: ctx.globals.stateDir }));
        const rows = r.snapshots.map((s) => `${s.tag.padEnd(24)} ${s.createdAt}  ${humanBytes(s.sizeBytes).padStart(9)}  (state ${humanBytes(s.stateBytes)}, disk ${humanBytes(s.diskBytes)})`);
        return { json: r, text: rows.length > 0 ? `TAG${" ".repeat(22)}CREATED${" ".repeat(20)}SIZE\n${rows.join("\n")}` : `${name} has no snapshots` };
      }),
    );

  snapshot
    .command("delete")
    .description("remove a snapshot (its disk layer stays while the workspace's disk or a fork is layered on it)")
    .argument("<name>", "workspace name")
    .argument("<tag>", "snapshot tag")
    .action(
      action(async (ctx, name: string, tag: string) => {
        const r = SnapshotDeleteJsonSchema.parse(await deleteWorkspaceSnapshot(name, tag, { stateDir: ctx.globals.stateDir }));
        return { json: r, text: `${name}: snapshot ${tag} deleted (${humanBytes(r.freedBytes)} freed)` };
      }),
    );

  return snapshot;
}
