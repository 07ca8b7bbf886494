import { Command } from "commander";
import { action } from "../action.ts";
import { listJson } from "../../api/results.ts";
import { formatTable } from "../output.ts";
import { listWorkspaces, type WorkspaceSummary } from "../../workspace/list.ts";

export function listCommand(): Command {
  return new Command("list")
    .alias("ls")
    .description("every workspace in the state dir, with its reconciled state")
    .action(
      action(async (ctx) => {
        const workspaces = await listWorkspaces({ stateDir: ctx.globals.stateDir });
        return { json: listJson(workspaces), text: workspaceTable(workspaces) };
      }),
    );
}

/** The NAME STATE BACKEND PROFILE NETWORK IMAGE table (shared with `ps`). */
export function workspaceTable(rows: readonly WorkspaceSummary[]): string {
  if (rows.length === 0) return "No workspaces.";
  return formatTable(
    ["NAME", "STATE", "BACKEND", "PROFILE", "NETWORK", "IMAGE"],
    rows.map((w) => [w.name, w.state, w.backend ?? "-", w.profile ?? "-", w.network ?? "-", w.image ?? (w.error ? `error: ${w.error}` : "-")]),
  );
}
