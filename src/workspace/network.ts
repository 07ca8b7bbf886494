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
import { z } from "zod";
import { CommonErrors } from "../contract/errors.ts";
import { parseAllowEntry } from "../egress/allow.ts";
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

/** The manifest's `network`: older manifests carry only `mode` (and keep it). */
export const NetworkSettingsSchema = z.object({
  mode: NetworkModeSchema,
  addHosts: z.array(AddHostSchema).optional(),
  dns: DnsUpstreamSchema.optional(),
  egressAllow: z.array(z.string()).optional(),
  forwards: z.array(PortForwardSchema).optional(),
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
 * `--egress-allow`: addresses, CIDRs and `host.microagent.internal:PORT` only in this version (names
 * come with the egress mediator). Returned as the user wrote it (the policy parses the same string).
 */
export function parseEgressAllow(value: string): string {
  let e;
  try {
    e = parseAllowEntry(value);
  } catch (err) {
    bad(`--egress-allow '${value}': ${(err as Error).message}`);
  }
  if (e.kind === "host" || e.kind === "suffix") {
    bad(
      `--egress-allow '${value}': allowing by host name needs the egress mediator, which this version does not have yet`,
      "Allow the address (ADDR[:PORT] or a CIDR), or host.microagent.internal:PORT for a port on the host's loopback; public destinations are allowed without a flag.",
    );
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

export interface NetworkInputs {
  mode?: NetworkMode;
  addHosts?: AddHost[];
  dns?: DnsUpstream;
  egressAllow?: string[];
  forwards?: PortForward[];
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
  };
}
