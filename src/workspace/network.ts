/**
 * A workspace's network settings as the manifest records them, and the parsers for the flags and
 * spec keys that set them: `--network user|isolated`, `--add-host NAME:IP`, `--dns IP[:PORT]`,
 * `--egress-allow ADDR[:PORT]|CIDR|host.microagent.internal:PORT` and `-p/--publish
 * [HOST_IP:]HOST_PORT:GUEST_PORT[/tcp]`. Everything is validated here, at create time, so the
 * supervisor only ever starts from settings that parse (a bad one is INVALID_ARGUMENT before any
 * file exists).
 *
 * Addressing is not recorded: every workspace LAN is the stack's fixed one (src/net/config.ts:
 * guest 10.200.0.2/24, gateway and DNS 10.200.0.1), private to its supervisor.
 */
import { isAbsolute, resolve } from "node:path";
import { z } from "zod";
import { CommonErrors } from "../contract/errors.ts";
import { parseAllowEntry, parsePassthroughList } from "../egress/allow.ts";
import { resolveEgressFlags, type ResolvedEgressOptions } from "../egress/flags.ts";
import { EGRESS_MODES, type EgressMode } from "../egress/policy.ts";
import { parseIpv4 } from "../net/addr.ts";

export const NETWORK_MODES = ["isolated", "user"] as const;
export const NetworkModeSchema = z.enum(NETWORK_MODES);
export type NetworkMode = z.infer<typeof NetworkModeSchema>;
/** `user` unless asked otherwise (seed 001: "use --network isolated when the guest does not need network access"). */
export const DEFAULT_NETWORK_MODE: NetworkMode = "user";

const Port = z.number().int().min(1).max(65535);

export const AddHostSchema = z.object({ name: z.string(), ip: z.string() });
export type AddHost = z.infer<typeof AddHostSchema>;

export const DnsUpstreamSchema = z.object({ ip: z.string(), port: Port });
export type DnsUpstream = z.infer<typeof DnsUpstreamSchema>;

export const PortForwardSchema = z.object({
  hostIp: z.string(),
  hostPort: Port,
  guestPort: Port,
  proto: z.literal("tcp"),
});
export type PortForward = z.infer<typeof PortForwardSchema>;

export const EgressModeSchema = z.enum(EGRESS_MODES);

/**
 * The manifest's `network.egress` (the allow list stays `network.egressAllow`): what
 * `resolveEgressFlags` validated at create time, as the user gave it. A `user` workspace whose
 * manifest has no `egress` was created before mediation existed and keeps running unmediated:
 * it reads as `off` (`egressOptionsOf`), never as a silent upgrade to interception it never had.
 */
export const EgressSettingsSchema = z.object({
  mode: EgressModeSchema,
  passthrough: z.array(z.string()).optional(),
  /** Absolute host paths of PEM CAs the mediator trusts upstream (read at every start). */
  upstreamCa: z.array(z.string()).optional(),
  maxConns: z.number().int().min(1).optional(),
  maxTotalBytes: z.number().int().min(1).optional(),
  /** `GUEST_PORT=HOST:PORT` entries (--mediation). */
  mediation: z.array(z.string()).optional(),
  mediationOptional: z.boolean().optional(),
});
export type EgressSettings = z.infer<typeof EgressSettingsSchema>;

/** The manifest's `network`: older manifests carry only `mode` (and keep it). */
export const NetworkSettingsSchema = z.object({
  mode: NetworkModeSchema,
  addHosts: z.array(AddHostSchema).optional(),
  dns: DnsUpstreamSchema.optional(),
  egressAllow: z.array(z.string()).optional(),
  forwards: z.array(PortForwardSchema).optional(),
  egress: EgressSettingsSchema.optional(),
});
export type NetworkSettings = z.infer<typeof NetworkSettingsSchema>;

function bad(message: string, remediation?: string): never {
  throw CommonErrors.INVALID_ARGUMENT({ message, ...(remediation ? { remediation } : {}) });
}

const HOSTNAME = /^[a-z0-9_]([a-z0-9_-]{0,62})(\.[a-z0-9_]([a-z0-9_-]{0,62}))*$/;

/** `NAME:IP` (docker's --add-host); the name is lower-cased, the address must be dotted IPv4. */
export function parseAddHost(value: string): AddHost {
  const i = value.indexOf(":");
  if (i <= 0) bad(`--add-host '${value}' is not NAME:IP`, "Write it as --add-host NAME:IPV4, e.g. --add-host db.internal:192.168.1.20.");
  const name = value.slice(0, i).toLowerCase().replace(/\.$/, "");
  const ip = value.slice(i + 1);
  if (!HOSTNAME.test(name) || name.length > 253) bad(`--add-host '${value}': '${name}' is not a host name`);
  if (name === "host.microagent.internal") bad("--add-host cannot redefine host.microagent.internal (it is always the gateway)");
  if (parseIpv4(ip) === undefined || !/^\d+\.\d+\.\d+\.\d+$/.test(ip)) bad(`--add-host '${value}': '${ip}' is not a dotted IPv4 address (IPv6 is not routed in this version)`);
  return { name, ip };
}

/** `IP[:PORT]` (port 53 by default). */
export function parseDnsUpstream(value: string): DnsUpstream {
  const m = /^(\d+\.\d+\.\d+\.\d+)(?::(\d{1,5}))?$/.exec(value);
  if (!m || parseIpv4(m[1]!) === undefined) bad(`--dns '${value}' is not IPV4[:PORT]`, "Name the upstream resolver by its IPv4 address, e.g. --dns 192.168.1.1 or --dns 127.0.0.1:5353.");
  const port = m[2] !== undefined ? Number(m[2]) : 53;
  if (port < 1 || port > 65535) bad(`--dns '${value}': port ${port} is out of range (1-65535)`);
  return { ip: m[1]!, port };
}

/**
 * `--egress-allow`: `host`, `.suffix` (names need `--egress guarded|strict`), `ADDR[:PORT]`, CIDR
 * or `host.microagent.internal:PORT`. Returned as the user wrote it (the policy parses the same string).
 */
export function parseEgressAllow(value: string): string {
  try {
    parseAllowEntry(value);
  } catch (err) {
    bad(`--egress-allow '${value}': ${(err as Error).message}`);
  }
  return value;
}

/** `--egress-passthrough HOST|.SUFFIX`, checked as the mediator will read it. */
export function parseEgressPassthrough(value: string): string {
  try {
    parsePassthroughList([value]);
  } catch (err) {
    bad(`--egress-passthrough '${value}': ${(err as Error).message}`);
  }
  return value;
}

/** `[HOST_IP:]HOST_PORT:GUEST_PORT[/tcp]`; the host side binds 127.0.0.1 unless an address is given. */
export function parsePublish(value: string): PortForward {
  const m = /^(?:(\d+\.\d+\.\d+\.\d+):)?(\d{1,5}):(\d{1,5})(?:\/(tcp|udp))?$/.exec(value);
  if (!m) bad(`--publish '${value}' is not [HOST_IP:]HOST_PORT:GUEST_PORT[/tcp]`, "Write it as -p 8080:80 (host 127.0.0.1:8080 to guest port 80) or -p 0.0.0.0:8080:80.");
  if (m[4] === "udp") bad(`--publish '${value}': only TCP ports can be published in this version`);
  const hostIp = m[1] ?? "127.0.0.1";
  if (parseIpv4(hostIp) === undefined) bad(`--publish '${value}': '${hostIp}' is not an IPv4 address`);
  const hostPort = Number(m[2]);
  const guestPort = Number(m[3]);
  for (const [what, p] of [["host", hostPort], ["guest", guestPort]] as const) {
    if (p < 1 || p > 65535) bad(`--publish '${value}': the ${what} port ${p} is out of range (1-65535)`);
  }
  return { hostIp, hostPort, guestPort, proto: "tcp" };
}

/** The egress flags (or the spec's `egress:`/`mediation:`), each replacing the spec's when given. */
export interface EgressInputs {
  mode?: EgressMode;
  passthrough?: string[];
  /** PEM files; relative paths are taken against the current directory (the spec's are against its directory). */
  upstreamCa?: string[];
  maxConns?: number;
  maxTotalBytes?: number;
  /** `GUEST_PORT=HOST:PORT` entries. */
  mediation?: string[];
  mediationOptional?: boolean;
}

export interface NetworkInputs {
  mode?: NetworkMode;
  addHosts?: AddHost[];
  dns?: DnsUpstream;
  egressAllow?: string[];
  forwards?: PortForward[];
  egress?: EgressInputs;
}

/** The manifest's egress settings as the mediator's options (see EgressSettingsSchema for a missing field). */
export function egressOptionsOf(n: NetworkSettings): ResolvedEgressOptions {
  const e = n.egress ?? { mode: "off" as const };
  return resolveEgressFlags(
    {
      egress: e.mode,
      egressAllow: n.egressAllow ?? [],
      egressPassthrough: e.passthrough ?? [],
      egressUpstreamCa: e.upstreamCa ?? [],
      ...(e.maxConns !== undefined ? { egressMaxConns: e.maxConns } : {}),
      ...(e.maxTotalBytes !== undefined ? { egressMaxTotalBytes: e.maxTotalBytes } : {}),
      mediation: e.mediation ?? [],
      mediationOptional: e.mediationOptional ?? false,
    },
    { network: n.mode },
  );
}

function resolveEgressSettings(mode: NetworkMode, egressAllow: string[], flags: EgressInputs, spec: EgressInputs): EgressSettings | undefined {
  const pick = <K extends keyof EgressInputs>(k: K): EgressInputs[K] => (flags[k] !== undefined ? flags[k] : spec[k]);
  const upstreamCa = pick("upstreamCa")?.map((p) => (isAbsolute(p) ? p : resolve(p)));
  const e: EgressInputs = {
    ...(pick("mode") !== undefined ? { mode: pick("mode") } : {}),
    ...(pick("passthrough")?.length ? { passthrough: pick("passthrough") } : {}),
    ...(upstreamCa?.length ? { upstreamCa } : {}),
    ...(pick("maxConns") !== undefined ? { maxConns: pick("maxConns") } : {}),
    ...(pick("maxTotalBytes") !== undefined ? { maxTotalBytes: pick("maxTotalBytes") } : {}),
    ...(pick("mediation")?.length ? { mediation: pick("mediation") } : {}),
    ...(pick("mediationOptional") ? { mediationOptional: true } : {}),
  };
  // The mediator's own parser: every usage error (EGRESS_FLAG_INVALID, EGRESS_ALLOW_*) is raised
  // here, at create time, never at a later start. (An isolated workspace's allow list is refused
  // by resolveNetworkSettings with the other NIC settings.)
  const r = resolveEgressFlags(
    {
      // `--network isolated --egress off` says the same thing twice; any other mode needs a NIC.
      ...(e.mode !== undefined && !(mode === "isolated" && e.mode === "off") ? { egress: e.mode } : {}),
      egressAllow: mode === "user" ? egressAllow : [],
      ...(e.passthrough ? { egressPassthrough: e.passthrough } : {}),
      ...(e.upstreamCa ? { egressUpstreamCa: e.upstreamCa } : {}),
      ...(e.maxConns !== undefined ? { egressMaxConns: e.maxConns } : {}),
      ...(e.maxTotalBytes !== undefined ? { egressMaxTotalBytes: e.maxTotalBytes } : {}),
      ...(e.mediation ? { mediation: e.mediation } : {}),
      ...(e.mediationOptional ? { mediationOptional: true } : {}),
    },
    { network: mode },
  );
  if (mode === "isolated") return undefined;
  return { ...e, mode: r.mode };
}

/**
 * Flags over the spec (each list replaces the spec's when given), defaults applied. The extra
 * settings need a NIC: asking for them with `isolated` is a usage error, not a silent no-op.
 */
export function resolveNetworkSettings(flags: NetworkInputs, spec: NetworkInputs | undefined): NetworkSettings {
  const mode = flags.mode ?? spec?.mode ?? DEFAULT_NETWORK_MODE;
  const addHosts = flags.addHosts ?? spec?.addHosts ?? [];
  const dns = flags.dns ?? spec?.dns;
  const egressAllow = flags.egressAllow ?? spec?.egressAllow ?? [];
  const forwards = flags.forwards ?? spec?.forwards ?? [];
  const egress = resolveEgressSettings(mode, egressAllow, flags.egress ?? {}, spec?.egress ?? {});
  if (mode === "isolated") {
    const extra = [addHosts.length ? "--add-host" : "", dns ? "--dns" : "", egressAllow.length ? "--egress-allow" : "", forwards.length ? "--publish" : ""].filter(Boolean);
    if (extra.length) bad(`${extra.join(", ")} need a network interface, and --network isolated has none`, "Drop those settings, or use --network user (the default).");
    return { mode };
  }
  const seen = new Set<string>();
  for (const f of forwards) {
    const k = `${f.hostIp}:${f.hostPort}`;
    if (seen.has(k) || seen.has(`0.0.0.0:${f.hostPort}`) || (f.hostIp === "0.0.0.0" && [...seen].some((s) => s.endsWith(`:${f.hostPort}`)))) {
      bad(`--publish: host port ${k} is published twice`);
    }
    seen.add(k);
  }
  return {
    mode,
    ...(addHosts.length ? { addHosts } : {}),
    ...(dns ? { dns } : {}),
    ...(egressAllow.length ? { egressAllow } : {}),
    ...(forwards.length ? { forwards } : {}),
    ...(egress ? { egress } : {}),
  };
}
