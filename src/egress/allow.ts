/**
 * `--egress-allow` and `--egress-passthrough` entries: parsing, normalization and matching.
 *
 * Grammar (one entry per flag, or per item of the spec's list):
 *   HOST              api.example.com            that name, any port
 *   HOST:PORT         api.example.com:8443       that name, one port
 *   .SUFFIX           .example.com               every name under example.com (not example.com itself)
 *   ADDR[:PORT]       203.0.113.7, 10.0.0.5:5432 that address (any inet_aton spelling), optionally one port
 *   [IPV6]:PORT, IPV6 [fd00::1]:80, fd00::1
 *   CIDR              10.1.0.0/16, fd00::/8      every address in the range, any port
 *   host.microagent.internal:PORT                the host's loopback on PORT, through the gateway
 * Names are compared in one form: lower case, no trailing dot, IDNA A-label (`bücher.de` ->
 * `xn--bcher-kva.de`), the same form the SNI and Host checks use.
 */
import { domainToASCII } from "node:url";
import { type Cidr, type IpAddress, cidrContains, effectiveAddress, parseCidr, parseIpv4, parseIpv6 } from "./address.ts";
import { EgressErrors } from "./errors.ts";

/** The gateway's name for the host; a connection reaches the host's loopback on allowed ports only. */
export const HOST_SERVICE_NAME = "host.microagent.internal";
/** The reserved zone: names under it are answered by the mediator, never forwarded. */
export const INTERNAL_ZONE = "microagent.internal";

export type AllowEntry =
  | { kind: "host"; host: string; port: number | null; source: string }
  | { kind: "suffix"; suffix: string; port: number | null; source: string }
  | { kind: "address"; address: IpAddress; port: number | null; source: string }
  | { kind: "cidr"; cidr: Cidr; source: string }
  | { kind: "host-service"; port: number; source: string };

/** A passthrough entry names hosts only: the decision to splice is taken after the SNI check. */
export type PassthroughEntry = Extract<AllowEntry, { kind: "host" | "suffix" }>;

/**
 * A DNS name in its comparison form, or null when it is not one (empty labels, labels over 63
 * bytes, characters outside letters/digits/'-'/'_', over 253 bytes, an all-numeric last label,
 * which the URL parser would read as an IPv4 address).
 */
export function normalizeHostname(input: string): string | null {
  if (input.length === 0 || input.length > 1024) return null;
  let s = input.toLowerCase();
  if (s.endsWith(".")) s = s.slice(0, -1);
  if (s === "" || s.startsWith(".") || s.includes("..")) return null;
  // domainToASCII would turn "0x7f.1" into "127.0.0.1"; addresses are not names.
  if (parseIpv4(s) !== null) return null;
  // eslint-disable-next-line no-control-regex
  if (!/^[\x00-\x7f]*$/.test(s)) {
    s = domainToASCII(s);
    if (s === "") return null;
  } else if (s.includes("xn--")) {
    // An ASCII name with A-labels must still be valid punycode.
    if (domainToASCII(s) === "") return null;
  }
  if (s.length > 253) return null;
  const labels = s.split(".");
  for (const l of labels) {
    if (l.length < 1 || l.length > 63) return null;
    if (!/^[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?$/.test(l)) return null;
  }
  const last = labels[labels.length - 1] as string;
  if (/^[0-9]+$/.test(last) || /^0x[0-9a-f]*$/.test(last)) return null;
  return s;
}

function fail(flag: string, entry: string, why: string, remediation?: string): never {
  throw EgressErrors.EGRESS_ALLOW_INVALID({
    message: `${flag} '${entry}': ${why}`,
    ...(remediation ? { remediation } : {}),
    details: { flag, entry },
  });
}

function parsePort(flag: string, entry: string, p: string): number {
  if (!/^[0-9]{1,5}$/.test(p) || Number(p) < 1 || Number(p) > 65535) fail(flag, entry, `port '${p}' must be a number from 1 to 65535`);
  return Number(p);
}

/** One entry. Throws EGRESS_ALLOW_INVALID naming the flag, the entry and what is wrong with it. */
export function parseAllowEntry(raw: string, flag = "--egress-allow"): AllowEntry {
  const source = raw.trim();
  if (source === "") fail(flag, raw, "is empty");
  if (source.includes("://")) {
    fail(flag, source, "is a URL; give the host only", `Write the host without scheme or path, e.g. ${flag} ${source.replace(/^[a-z]+:\/\//i, "").split(/[/?#]/)[0]}.`);
  }
  if (source.includes("/")) {
    const r = parseCidr(source);
    if (!r.ok) fail(flag, source, source.includes(":") && /\/\d+:\d+$/.test(source) ? "a CIDR takes no port; list single addresses with ADDR:PORT" : `not a CIDR (${r.reason}); paths are not supported`);
    return { kind: "cidr", cidr: r.cidr, source };
  }
  let hostPart = source;
  let port: number | null = null;
  if (source.startsWith("[")) {
    const close = source.indexOf("]");
    if (close < 0) fail(flag, source, "has '[' without ']'");
    const inner = source.slice(1, close);
    const rest = source.slice(close + 1);
    if (rest !== "") {
      if (!rest.startsWith(":")) fail(flag, source, "expected ':PORT' after ']'");
      port = parsePort(flag, source, rest.slice(1));
    }
    const a = parseIpv6(inner);
    if (!a) fail(flag, source, `'${inner}' is not an IPv6 address`);
    return { kind: "address", address: a, port, source };
  }
  const colons = source.split(":").length - 1;
  if (colons >= 2) {
    const a = parseIpv6(source);
    if (!a) fail(flag, source, "is not an IPv6 address (write [ADDR]:PORT to give a port)");
    return { kind: "address", address: a, port: null, source };
  }
  if (colons === 1) {
    const at = source.indexOf(":");
    hostPart = source.slice(0, at);
    port = parsePort(flag, source, source.slice(at + 1));
  }
  if (hostPart.startsWith("*.")) {
    fail(flag, source, "wildcards are written as a leading dot", `Write ${flag} ${hostPart.slice(1)}${port ? `:${port}` : ""} to allow every name under ${hostPart.slice(2)}.`);
  }
  const v4 = parseIpv4(hostPart);
  if (v4) return { kind: "address", address: v4, port, source };
  if (hostPart.startsWith(".")) {
    const suffix = normalizeHostname(hostPart.slice(1));
    if (!suffix) fail(flag, source, `'${hostPart}' is not a valid DNS suffix`);
    if (suffix === INTERNAL_ZONE || suffix.endsWith(`.${INTERNAL_ZONE}`)) fail(flag, source, `names under ${INTERNAL_ZONE} are the mediator's own`, `Use ${HOST_SERVICE_NAME}:PORT to reach a host service.`);
    return { kind: "suffix", suffix, port, source };
  }
  const host = normalizeHostname(hostPart);
  if (!host) {
    fail(
      flag,
      source,
      /^[0-9][0-9a-fx.]*$/i.test(hostPart) ? `'${hostPart}' looks like an IPv4 address but is not a valid one` : `'${hostPart}' is not a valid host name`,
    );
  }
  if (host === HOST_SERVICE_NAME) {
    if (port === null) fail(flag, source, `${HOST_SERVICE_NAME} needs the port of the host service`, `Write ${flag} ${HOST_SERVICE_NAME}:PORT, e.g. ${HOST_SERVICE_NAME}:8080.`);
    return { kind: "host-service", port, source };
  }
  if (host.endsWith(`.${INTERNAL_ZONE}`) || host === INTERNAL_ZONE) {
    fail(flag, source, `names under ${INTERNAL_ZONE} are the mediator's own`, `Use ${HOST_SERVICE_NAME}:PORT to reach a host service.`);
  }
  if (host === "localhost" || host.endsWith(".localhost")) {
    fail(flag, source, "localhost is the guest itself", `To reach a service on the host's loopback, write ${flag} ${HOST_SERVICE_NAME}:PORT.`);
  }
  return { kind: "host", host, port, source };
}

export function parseAllowList(entries: readonly string[], flag = "--egress-allow"): AllowEntry[] {
  return entries.map((e) => parseAllowEntry(e, flag));
}

/** `--egress-passthrough` entries: HOST or .SUFFIX (optionally :PORT); addresses are refused. */
export function parsePassthroughList(entries: readonly string[], flag = "--egress-passthrough"): PassthroughEntry[] {
  return entries.map((raw) => {
    const e = parseAllowEntry(raw, flag);
    if (e.kind !== "host" && e.kind !== "suffix") {
      fail(flag, e.source, "passthrough is decided by the TLS server name, so it takes a host or .suffix", `List the address with --egress-allow ${e.source} instead.`);
    }
    return e;
  });
}

/** `--egress-allow`/`--egress-passthrough` with `--egress off` is a usage error (issue 11). */
export function checkListsForMode(mode: "guarded" | "strict" | "off", allow: readonly string[], passthrough: readonly string[]): void {
  if (mode !== "off") return;
  // Without mediation nothing sees a name, so name entries could only be ignored; address, CIDR and
  // host.microagent.internal:PORT entries still open inside destinations (denied in every mode).
  const named = allow.find((a) => {
    const e = parseAllowEntry(a);
    return e.kind === "host" || e.kind === "suffix";
  });
  const flag = named !== undefined ? "--egress-allow" : passthrough.length > 0 ? "--egress-passthrough" : null;
  if (flag) {
    throw EgressErrors.EGRESS_ALLOW_CONFLICT({
      message: `${flag}${named !== undefined ? ` ${named}` : ""} has no effect with --egress off: nothing is mediated, so no flow is matched by name`,
      details: { flag },
    });
  }
}

function portOk(entryPort: number | null, port: number | null): boolean {
  return entryPort === null || port === null || entryPort === port;
}

/** Whether a name entry admits `name` (normalized) on `port` (null: any port will do). */
export function entryMatchesName(e: AllowEntry, name: string, port: number | null): boolean {
  if (e.kind === "host") return e.host === name && portOk(e.port, port);
  if (e.kind === "suffix") return name.endsWith(`.${e.suffix}`) && portOk(e.port, port);
  return false;
}

/** Whether an address entry admits `addr` on `port`. */
export function entryMatchesAddress(e: AllowEntry, addr: IpAddress, port: number): boolean {
  if (e.kind === "address") return effectiveAddress(e.address).text === effectiveAddress(addr).text && portOk(e.port, port);
  if (e.kind === "cidr") return cidrContains(e.cidr, addr);
  return false;
}

export function nameAllowed(list: readonly AllowEntry[], name: string, port: number | null): AllowEntry | null {
  for (const e of list) if (entryMatchesName(e, name, port)) return e;
  return null;
}

export function addressAllowed(list: readonly AllowEntry[], addr: IpAddress, port: number): AllowEntry | null {
  for (const e of list) if (entryMatchesAddress(e, addr, port)) return e;
  return null;
}
