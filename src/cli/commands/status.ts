import { Command } from "commander";
import { humanBytes } from "./image.ts";
import { action } from "../action.ts";
import { statusJson } from "../../api/results.ts";
import { workspaceStatus, type WorkspaceStatus } from "../../api/status.ts";
import { sanitizeTerminalText } from "../../util/terminal.ts";
import { forwardsText } from "./network.ts";

export function statusCommand(): Command {
  return new Command("status")
    .alias("inspect")
    .description("a workspace's state, latest event, verification of its recorded hashes, readiness and result")
    .argument("<name>", "workspace name")
    .action(
      action(async (ctx, name: string) => {
        const s = await workspaceStatus(name, { stateDir: ctx.globals.stateDir });
        return { json: statusJson(s), text: statusText(s) };
      }),
    );
}

/** `user` workspaces: the fixed LAN, the datapath and the published ports (`microagent network` has the counters). */
function networkLine(n: WorkspaceStatus["workspace"]["network"]): string {
  if (n.mode === "isolated") return "isolated (no NIC)";
  const extra = [
    n.addHosts?.length ? `add-hosts ${n.addHosts.map((h) => `${h.name}=${h.ip}`).join(",")}` : "",
    n.egressAllow?.length ? `allowed ${n.egressAllow.join(",")}` : "",
    n.dns ? `dns upstream ${n.dns.ip}:${n.dns.port}` : "",
  ].filter(Boolean);
  return `user, userspace-stack, guest 10.200.0.2/24 via 10.200.0.1 (DNS 10.200.0.1); published: ${forwardsText(n.forwards ?? [])}${extra.length ? `; ${extra.join("; ")}` : ""}`;
}

/** `guarded, allow a.test,.b.test; passthrough p.test; 12 allowed, 3 denied (egress.jsonl)`. */
export function egressLine(e: NonNullable<WorkspaceStatus["egress"]>): string {
  if (e.mode === "off") return "off (no mediation: plain NAT, no CA in the guest, no audit)";
  const parts = [
    e.mode,
    e.allow.length ? `allow ${e.allow.join(",")}` : e.mode === "strict" ? "allow nothing listed" : "public destinations allowed",
    e.passthrough.length ? `passthrough ${e.passthrough.join(",")}` : "",
    e.mediation.length ? `mediation ${e.mediation.join(",")}${e.mediationRequired ? " (required)" : " (optional)"}` : "",
    `${e.counts.allow} allowed, ${e.counts.deny} denied (microagent egress NAME)`,
  ];
  return parts.filter(Boolean).join("; ");
}

/** The text rendering; sanitized as a whole, since details and probe errors may quote guest output. */
export function statusText(s: WorkspaceStatus): string {
  const w = s.workspace;
  const lines = [
    `${w.name}: ${s.event.state} since ${s.event.observedAt}`,
    `  detail:       ${s.event.detail}`,
    `  image:        ${w.image.ref} -> ${w.image.resolvedRef}`,
    `  resources:    ${w.resources.profile}: ${w.resources.memoryMib} MiB, ${w.resources.cpus} vCPU, ${w.resources.sizeMib} MiB disk; network ${w.network.mode}; ${s.backend}/${w.arch}`,
  ];
  lines.push(`  network:      ${networkLine(w.network)}`);
  if (w.runtime) lines.push(`  runtime:      supervisor pid ${w.runtime.supervisorPid}${w.runtime.vmmPid ? `, VMM pid ${w.runtime.vmmPid}` : ""}, ${w.runtime.accel}, since ${w.runtime.startedAt}`);
  if (s.verification) {
    if (s.verification.ok) {
      lines.push(`  verification: ok (kernel, init, config${s.verification.rootfs.checked ? ", rootfs" : ""})`);
    } else {
      lines.push(`  verification: DIVERGED`);
      for (const d of s.verification.divergence) lines.push(`    ${d.artifact} ${d.field}: expected ${d.expected}, actual ${d.actual} (${d.path})`);
    }
  }
  lines.push(`  readiness:    ${s.readiness.ready ? "ready" : `not ready${s.readiness.reason ? `: ${s.readiness.reason}` : ""}`}`);
  const med = s.readiness.mediationReady as { ready?: boolean; detail?: string } | undefined;
  if (med && typeof med === "object") lines.push(`  mediation:    ${med.detail ?? (med.ready ? "reachable" : "unreachable")}`);
  if (s.egress) lines.push(`  egress:       ${egressLine(s.egress)}`);
  if (s.result) {
    const r = s.result;
    lines.push(`  result:       ${r.status}${r.exitCode !== null ? ` code ${r.exitCode}` : ""}${r.signal ? ` signal ${r.signal}` : ""}${r.error ? ` (${r.error})` : ""} at ${r.completedAt}`);
  }
  if (s.snapshots && s.snapshots.length > 0) {
    const total = s.snapshots.reduce((n, x) => n + x.sizeBytes, 0);
    lines.push(`  snapshots:    ${s.snapshots.length} (${humanBytes(total)}): ${s.snapshots.map((x) => `${x.tag} ${humanBytes(x.sizeBytes)}`).join(", ")}`);
  }
  return sanitizeTerminalText(lines.join("\n"));
}
