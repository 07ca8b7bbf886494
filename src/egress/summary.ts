/**
 * The egress summary `status` shows and `run --json` carries as a receipt: the workspace's mode and
 * lists (from its manifest settings) and its audit counted by decision and by record type. Read from
 * the host-only audit file, so it works for a stopped workspace too. Coalesced denies count as
 * the events they fold (`count`).
 */
import { join } from "node:path";
import { EGRESS_LOG, readEgress } from "./audit.ts";
import type { ResolvedEgressOptions } from "./flags.ts";
import type { EgressMode } from "./policy.ts";

export interface EgressSummary {
  mode: EgressMode;
  allow: string[];
  passthrough: string[];
  /** `GUEST_PORT=HOST:PORT` mediation targets and whether they are required. */
  mediation: string[];
  mediationRequired: boolean;
  /** Events by decision (flows, DNS answers, TLS errors, caps; `egress_close` is not counted). */
  counts: { allow: number; deny: number };
  /** Events by record type (every type seen, closes included). */
  byType: Record<string, number>;
  /** The audit file (null when mediation is off: nothing is audited). */
  audit: string | null;
}

export async function egressSummary(workspaceDir: string, egress: ResolvedEgressOptions): Promise<EgressSummary> {
  const counts = { allow: 0, deny: 0 };
  const byType: Record<string, number> = {};
  if (egress.mode !== "off") {
    for (const r of await readEgress(workspaceDir)) {
      const n = r.count ?? 1;
      byType[r.type] = (byType[r.type] ?? 0) + n;
      if (r.type !== "egress_close") counts[r.decision] += n;
    }
  }
  return {
    mode: egress.mode,
    allow: egress.allow,
    passthrough: egress.passthrough,
    mediation: egress.mediation.map((m) => m.source),
    mediationRequired: egress.mediationRequired,
    counts,
    byType,
    audit: egress.mode === "off" ? null : join(workspaceDir, EGRESS_LOG),
  };
}
