import { Command } from "commander";
import { action } from "../action.ts";
import { CommonErrors, type ErrorObject } from "../../contract/errors.ts";
import { SecretErrors } from "../../secrets/errors.ts";
import { SECRET_CMD_TIMEOUT_MS, checkSecrets, type SecretCheck } from "../../secrets/resolve.ts";
import { parseDurationFlag } from "./workspace-flags.ts";
import { describeSource, mergeSecretRefs, parseSecretRef, type SecretRef } from "../../secrets/ref.ts";
import { loadSpec } from "../../workspace/spec.ts";

interface CheckFlags {
  file?: string;
  /** Milliseconds (parsed by commander). */
  timeout?: number;
}

/** One row of `secret check --json`: never the value, only whether it resolved and its size. */
export interface SecretCheckRow {
  name: string;
  ok: boolean;
  source: string;
  delivery: SecretRef["delivery"];
  hosts: string[];
  bytes?: number;
  error?: ErrorObject;
}

export function secretCommand(): Command {
  const group = new Command("secret").description("secret references: check that each resolves, without printing a value");
  group.addCommand(
    new Command("check")
      .description("resolve each NAME=SOURCE[@HOST,...] (and a spec's secrets:) as a start would; report name, source and size, never the value")
      .argument("[refs...]", "references: NAME=env:VAR, NAME=file:PATH, NAME=cmd:COMMAND, optionally @HOST[,HOST...]")
      .option("--file <path>", "also check the secrets: of this spec file (microagent.yaml)")
      .option("--timeout <duration>", `limit on each cmd: helper (default ${SECRET_CMD_TIMEOUT_MS / 1000}s, as at start)`, parseDurationFlag("--timeout"))
      .addHelpText("after", "\nExit status: 0 when every secret resolves, 1 when any fails, 2 for a malformed reference.")
      .action(
        action(async (ctx, refsText: string[], o: CheckFlags) => {
          const fromArgs = refsText.map((t) => parseSecretRef(t, { baseDir: process.cwd(), what: "secret check" }));
          const fromSpec = o.file !== undefined ? ((await loadSpec(o.file)).secrets ?? []) : [];
          const refs = mergeSecretRefs(fromSpec, fromArgs);
          if (refs.length === 0) {
            throw CommonErrors.USAGE({
              message: o.file !== undefined ? `${o.file} has no secrets: and no reference was given` : "secret check needs at least one NAME=SOURCE reference or --file",
              remediation: "Run `microagent secret check NAME=SOURCE...` or `microagent secret check --file microagent.yaml`.",
            });
          }
          const rows = (await checkSecrets(refs, o.timeout !== undefined ? { cmdTimeoutMs: o.timeout } : {})).map(checkRow);
          const failed = rows.filter((r) => !r.ok);
          return {
            json: { secrets: rows },
            text: formatSecretCheckText(rows),
            exitCode: failed.length > 0 ? 1 : 0,
            ...(failed.length > 0
              ? {
                  failure: SecretErrors.SECRET_SOURCE_FAILED({
                    message: `${failed.length} of ${rows.length} secret${rows.length > 1 ? "s" : ""} did not resolve: ${failed.map((r) => r.name).join(", ")}`,
                    details: { secrets: rows },
                  }),
                }
              : {}),
          };
        }),
      ),
  );
  return group;
}

export function checkRow(c: SecretCheck): SecretCheckRow {
  return {
    name: c.ref.name,
    ok: c.ok,
    source: describeSource(c.ref.source),
    delivery: c.ref.delivery,
    hosts: c.ref.hosts,
    ...(c.bytes !== undefined ? { bytes: c.bytes } : {}),
    ...(c.error ? { error: c.error.toJSON() } : {}),
  };
}

/** The text table: NAME, STATUS, BYTES, DELIVERY, SOURCE, then each failure's message and fix. */
export function formatSecretCheckText(rows: readonly SecretCheckRow[]): string {
  const table = [
    ["NAME", "STATUS", "BYTES", "DELIVERY", "SOURCE"],
    ...rows.map((r) => [r.name, r.ok ? "ok" : "FAILED", r.bytes !== undefined ? String(r.bytes) : "-", r.delivery === "swap" ? `swap @${r.hosts.join(",")}` : "file", r.source]),
  ];
  const widths = table[0]!.map((_, i) => Math.max(...table.map((row) => row[i]!.length)));
  const lines = table.map((row) => row.map((cell, i) => (i === row.length - 1 ? cell : cell.padEnd(widths[i]!))).join("  "));
  for (const r of rows) {
    if (r.error) lines.push(`error: ${r.error.message}`, `  fix: ${r.error.remediation}`);
  }
  return lines.join("\n");
}
