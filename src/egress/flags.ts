/**
 * The egress and mediation flags of `run`/`create` (and the spec's `egress:`/`mediation:` keys),
 * parsed and validated into `ResolvedEgressOptions`. Pure: no files are read here (the
 * `--egress-upstream-ca` paths are read by `loadUpstreamCas` when the mediator starts).
 *
 *   --egress guarded|strict|off        default guarded whenever the network is `user`
 *   --egress-allow ENTRY               repeatable; host, .suffix, ADDR[:PORT], CIDR, host.microagent.internal:PORT
 *   --egress-passthrough HOST          repeatable; host or .suffix: TLS forwarded untouched after the SNI check
 *   --egress-upstream-ca FILE          repeatable; PEM CA(s) trusted for upstream TLS besides the host's store
 *   --egress-max-conns N               concurrent mediated TCP flows (default 256)
 *   --egress-max-total-bytes SIZE      bytes both ways over the workspace's life (default: no cap); 500M, 50GiB
 *   --mediation GUEST_PORT=HOST:PORT   repeatable; the gateway's GUEST_PORT relays to HOST:PORT
 *   --mediation-optional               a missing mediation listener is not a readiness error (development only)
 */
import { checkListsForMode, parseAllowList, parsePassthroughList } from "./allow.ts";
import { EgressErrors } from "./errors.ts";
import { EGRESS_MODES, type EgressMode } from "./policy.ts";

export const DEFAULT_MAX_CONNS = 256;

export interface EgressFlags {
  egress?: string;
  egressAllow?: readonly string[];
  egressPassthrough?: readonly string[];
  egressUpstreamCa?: readonly string[];
  egressMaxConns?: string | number;
  egressMaxTotalBytes?: string | number;
  mediation?: readonly string[];
  mediationOptional?: boolean;
}

export interface MediationTarget {
  /** The port on the gateway (and mediation.microagent.internal) the guest connects to. */
  guestPort: number;
  /** The host listener it is relayed to. */
  host: string;
  port: number;
  /** The flag value as given. */
  source: string;
}

export interface ResolvedEgressOptions {
  mode: EgressMode;
  allow: string[];
  passthrough: string[];
  upstreamCaFiles: string[];
  maxConns: number;
  /** null: no volume cap. */
  maxTotalBytes: number | null;
  mediation: MediationTarget[];
  /** Required (the default): readiness reports `mediationReady` false while the target does not answer. */
  mediationRequired: boolean;
}

function bad(flag: string, value: string, why: string, remediation?: string): never {
  throw EgressErrors.EGRESS_FLAG_INVALID({ message: `${flag} '${value}': ${why}`, ...(remediation ? { remediation } : {}), details: { flag, value } });
}

export function parseEgressMode(v: string): EgressMode {
  const m = v.trim().toLowerCase();
  if ((EGRESS_MODES as readonly string[]).includes(m)) return m as EgressMode;
  if (m === "mitm" || m === "broker") bad("--egress", v, "is upstream microagent's newer name; this one uses guarded (intercept) and strict (allow list only)");
  return bad("--egress", v, `must be one of ${EGRESS_MODES.join(", ")}`);
}

export function parsePositiveInt(flag: string, v: string | number, max = 1_000_000): number {
  const s = String(v).trim();
  if (!/^[0-9]{1,9}$/.test(s) || Number(s) < 1 || Number(s) > max) bad(flag, s, `must be a whole number from 1 to ${max}`);
  return Number(s);
}

const UNITS: Readonly<Record<string, number>> = {
  "": 1,
  b: 1,
  k: 1e3,
  kb: 1e3,
  kib: 1024,
  m: 1e6,
  mb: 1e6,
  mib: 1024 ** 2,
  g: 1e9,
  gb: 1e9,
  gib: 1024 ** 3,
  t: 1e12,
  tb: 1e12,
  tib: 1024 ** 4,
};

/** A byte size: `1048576`, `500M`, `1.5GB`, `50GiB` (decimal units for K/M/G/T, binary for KiB/MiB/...). */
export function parseByteSize(flag: string, v: string | number): number {
  const s = String(v).trim();
  const m = /^([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)$/.exec(s);
  const unit = m ? UNITS[(m[2] as string).toLowerCase()] : undefined;
  if (!m || unit === undefined) return bad(flag, s, "is not a size (e.g. 1048576, 500M, 50GiB)");
  const n = Math.floor(Number(m[1]) * unit);
  if (!Number.isSafeInteger(n) || n < 1) bad(flag, s, "must be at least one byte");
  return n;
}

/** `GUEST_PORT=HOST:PORT`, e.g. `7000=127.0.0.1:9000`. */
export function parseMediation(v: string): MediationTarget {
  const s = v.trim();
  const m = /^([0-9]{1,5})=(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9._-]+):([0-9]{1,5})$/.exec(s);
  if (!m) return bad("--mediation", s, "expected GUEST_PORT=HOST:PORT", "Write e.g. --mediation 7000=127.0.0.1:9000 (the guest connects to mediation.microagent.internal:7000).");
  const guestPort = Number(m[1]);
  const port = Number(m[3]);
  if (guestPort < 1 || guestPort > 65535) bad("--mediation", s, `guest port ${guestPort} is not in 1-65535`);
  if (port < 1 || port > 65535) bad("--mediation", s, `host port ${port} is not in 1-65535`);
  if (guestPort === 53) bad("--mediation", s, "port 53 is the gateway's DNS server");
  const host = (m[2] as string).replace(/^\[|\]$/g, "");
  return { guestPort, host, port, source: s };
}

/**
 * Flags -> resolved options. `network` is the workspace's network mode: the egress flags need
 * `user` (an isolated workspace has nothing to mediate). Throws EGRESS_FLAG_INVALID,
 * EGRESS_ALLOW_INVALID or EGRESS_ALLOW_CONFLICT (all usage errors).
 */
export function resolveEgressFlags(f: EgressFlags, o: { network: "user" | "isolated" } = { network: "user" }): ResolvedEgressOptions {
  const mode = f.egress === undefined ? "guarded" : parseEgressMode(f.egress);
  const allow = [...(f.egressAllow ?? [])];
  const passthrough = [...(f.egressPassthrough ?? [])];
  const upstreamCaFiles = [...(f.egressUpstreamCa ?? [])];
  checkListsForMode(mode, allow, passthrough);
  parseAllowList(allow);
  parsePassthroughList(passthrough);
  if (mode === "off" && upstreamCaFiles.length > 0) {
    throw EgressErrors.EGRESS_ALLOW_CONFLICT({ message: "--egress-upstream-ca has no effect with --egress off: nothing is intercepted", details: { flag: "--egress-upstream-ca" } });
  }
  for (const p of upstreamCaFiles) if (p.trim() === "") bad("--egress-upstream-ca", p, "is empty");
  const mediation = (f.mediation ?? []).map(parseMediation);
  const seen = new Set<number>();
  for (const t of mediation) {
    if (seen.has(t.guestPort)) bad("--mediation", t.source, `guest port ${t.guestPort} is given twice`);
    seen.add(t.guestPort);
  }
  if (o.network === "isolated") {
    const given = f.egress !== undefined || allow.length > 0 || passthrough.length > 0 || mediation.length > 0 || upstreamCaFiles.length > 0;
    if (given) {
      throw EgressErrors.EGRESS_ALLOW_CONFLICT({
        message: "egress and mediation flags need --network user: an isolated workspace has no network",
        remediation: "Drop the --egress*/--mediation flags, or use --network user.",
      });
    }
  }
  return {
    mode,
    allow,
    passthrough,
    upstreamCaFiles,
    maxConns: f.egressMaxConns === undefined ? DEFAULT_MAX_CONNS : parsePositiveInt("--egress-max-conns", f.egressMaxConns),
    maxTotalBytes: f.egressMaxTotalBytes === undefined ? null : parseByteSize("--egress-max-total-bytes", f.egressMaxTotalBytes),
    mediation,
    mediationRequired: !(f.mediationOptional ?? false),
  };
}
