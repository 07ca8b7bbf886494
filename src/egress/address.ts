/**
 * Destination addresses in every spelling a guest (or a user) can write, and the classes that decide
 * whether an address is "inside" (DESIGN: loopback, RFC 1918, CGNAT, link-local incl. metadata,
 * multicast, broadcast, unspecified, reserved; "in every spelling").
 *
 * IPv4 follows inet_aton(3), which is what libc, curl and the WHATWG URL parser accept: one to four
 * parts, each decimal, octal (leading 0) or hex (0x), the last part filling the remaining bytes, so
 * `2852039166`, `0251.0376.0251.0376`, `0xa9.0xfe.0xa9.0xfe` and `169.254.43518` all name
 * 169.254.169.254, and `127.1` is 127.0.0.1. IPv6 forms that carry an IPv4 address (v4-mapped,
 * v4-compatible, SIIT, NAT64 64:ff9b::/96, 6to4) are classified by the IPv4 inside them, so
 * `::ffff:169.254.169.254` is the metadata address. Pure: no I/O.
 */

export interface Ipv4 {
  family: 4;
  /** The address as an unsigned 32-bit number. */
  value: number;
  /** Canonical dotted quad. */
  text: string;
}

export interface Ipv6 {
  family: 6;
  bytes: Uint8Array;
  /** Canonical RFC 5952 text (lower case, longest zero run compressed). */
  text: string;
  /** The IPv4 address a mapped/compatible/NAT64/6to4 form carries, if any. */
  embedded: Ipv4 | null;
}

export type IpAddress = Ipv4 | Ipv6;

export const ADDRESS_CLASSES = [
  "public",
  "unspecified",
  "loopback",
  "private",
  "cgnat",
  "link-local",
  "metadata",
  "multicast",
  "broadcast",
  "documentation",
  "benchmarking",
  "reserved",
  "ula",
] as const;
export type AddressClass = (typeof ADDRESS_CLASSES)[number];

// ---------------------------------------------------------------------------------------------
// Parsing

function parseV4Part(s: string): number | null {
  if (s === "") return null;
  let radix = 10;
  let digits = s;
  if (/^0[xX]/.test(s)) {
    radix = 16;
    digits = s.slice(2);
    // inet_aton takes a bare "0x" as 0; the URL parser does too.
    if (digits === "") return 0;
    if (!/^[0-9a-fA-F]+$/.test(digits)) return null;
  } else if (s.length > 1 && s.startsWith("0")) {
    radix = 8;
    digits = s.slice(1);
    if (!/^[0-7]+$/.test(digits)) return null;
  } else if (!/^[0-9]+$/.test(s)) {
    return null;
  }
  // Long strings of leading zeros are still small numbers; cap the length only after stripping them.
  const trimmed = digits.replace(/^0+(?=.)/, "");
  if (trimmed.length > 12) return null;
  const n = parseInt(trimmed, radix);
  return Number.isSafeInteger(n) ? n : null;
}

/** IPv4 in any inet_aton spelling, or null. A trailing dot is allowed (as in the URL parser). */
export function parseIpv4(input: string): Ipv4 | null {
  let s = input;
  if (s.endsWith(".")) s = s.slice(0, -1);
  if (s === "" || s.length > 64) return null;
  const parts = s.split(".");
  if (parts.length > 4) return null;
  const nums: number[] = [];
  for (const p of parts) {
    const n = parseV4Part(p);
    if (n === null) return null;
    nums.push(n);
  }
  const last = nums.pop() as number;
  for (const n of nums) if (n > 255) return null;
  const lastMax = 2 ** (8 * (4 - nums.length)) - 1;
  if (last > lastMax) return null;
  let value = 0;
  for (let i = 0; i < nums.length; i++) value += (nums[i] as number) * 2 ** (8 * (3 - i));
  value += last;
  return v4FromNumber(value);
}

export function v4FromNumber(value: number): Ipv4 {
  const v = value >>> 0;
  return { family: 4, value: v, text: `${v >>> 24}.${(v >>> 16) & 255}.${(v >>> 8) & 255}.${v & 255}` };
}

/** Strict dotted-quad (four decimal parts, no leading zeros): the only IPv4 form inside IPv6 text. */
function parseDottedQuadStrict(s: string): number | null {
  const parts = s.split(".");
  if (parts.length !== 4) return null;
  let v = 0;
  for (const p of parts) {
    if (!/^(0|[1-9][0-9]{0,2})$/.test(p)) return null;
    const n = Number(p);
    if (n > 255) return null;
    v = v * 256 + n;
  }
  return v;
}

/** IPv6 text (optionally in brackets, optionally with a %zone, which is ignored), or null. */
export function parseIpv6(input: string): Ipv6 | null {
  let s = input;
  if (s.startsWith("[") && s.endsWith("]")) s = s.slice(1, -1);
  const pct = s.indexOf("%");
  if (pct >= 0) {
    const zone = s.slice(pct + 1);
    if (zone === "" || !/^[A-Za-z0-9_.-]{1,32}$/.test(zone)) return null;
    s = s.slice(0, pct);
  }
  if (s.length < 2 || s.length > 45 || !s.includes(":")) return null;
  const words: number[] = [];
  let tail: number[] = [];
  const dbl = s.indexOf("::");
  if (dbl !== s.lastIndexOf("::") && dbl >= 0) return null;
  const parseGroups = (part: string, allowV4: boolean): number[] | null => {
    if (part === "") return [];
    const groups = part.split(":");
    const out: number[] = [];
    for (let i = 0; i < groups.length; i++) {
      const g = groups[i] as string;
      if (allowV4 && i === groups.length - 1 && g.includes(".")) {
        const v4 = parseDottedQuadStrict(g);
        if (v4 === null) return null;
        out.push(v4 >>> 16, v4 & 0xffff);
      } else {
        if (!/^[0-9a-fA-F]{1,4}$/.test(g)) return null;
        out.push(parseInt(g, 16));
      }
    }
    return out;
  };
  if (dbl >= 0) {
    const head = parseGroups(s.slice(0, dbl), false);
    const rest = parseGroups(s.slice(dbl + 2), true);
    if (!head || !rest) return null;
    if (head.length + rest.length > 7) return null;
    words.push(...head);
    tail = rest;
    while (words.length + tail.length < 8) words.push(0);
    words.push(...tail);
  } else {
    const all = parseGroups(s, true);
    if (!all || all.length !== 8) return null;
    words.push(...all);
  }
  const bytes = new Uint8Array(16);
  for (let i = 0; i < 8; i++) {
    bytes[2 * i] = (words[i] as number) >>> 8;
    bytes[2 * i + 1] = (words[i] as number) & 255;
  }
  return v6FromBytes(bytes);
}

export function v6FromBytes(bytes: Uint8Array): Ipv6 {
  const b = Uint8Array.from(bytes);
  return { family: 6, bytes: b, text: formatV6(b), embedded: embeddedV4(b) };
}

function formatV6(b: Uint8Array): string {
  const w: number[] = [];
  for (let i = 0; i < 8; i++) w.push(((b[2 * i] as number) << 8) | (b[2 * i + 1] as number));
  // Longest run of two or more zero words (first one on a tie), per RFC 5952.
  let bestAt = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (w[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && w[j] === 0) j++;
    if (j - i > bestLen) {
      bestAt = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (xs: number[]) => xs.map((x) => x.toString(16)).join(":");
  if (bestAt < 0) return hex(w);
  return `${hex(w.slice(0, bestAt))}::${hex(w.slice(bestAt + bestLen))}`;
}

function allZero(b: Uint8Array, from: number, to: number): boolean {
  for (let i = from; i < to; i++) if (b[i] !== 0) return false;
  return true;
}

function v4At(b: Uint8Array, at: number): Ipv4 {
  return v4FromNumber((((b[at] as number) << 24) | ((b[at + 1] as number) << 16) | ((b[at + 2] as number) << 8) | (b[at + 3] as number)) >>> 0);
}

/** The IPv4 address an IPv6 transition form carries (mapped, SIIT, compatible, NAT64, 6to4). */
function embeddedV4(b: Uint8Array): Ipv4 | null {
  // ::ffff:a.b.c.d (v4-mapped) and ::ffff:0:a.b.c.d (SIIT, RFC 2765)
  if (allZero(b, 0, 10) && b[10] === 0xff && b[11] === 0xff) return v4At(b, 12);
  if (allZero(b, 0, 8) && b[8] === 0xff && b[9] === 0xff && b[10] === 0 && b[11] === 0) return v4At(b, 12);
  // ::a.b.c.d (v4-compatible, deprecated but still parsed), except :: and ::1 themselves
  if (allZero(b, 0, 12) && !(allZero(b, 12, 15) && ((b[15] as number) === 0 || b[15] === 1))) return v4At(b, 12);
  // 64:ff9b::/96 (NAT64 well-known prefix, RFC 6052)
  if (b[0] === 0 && b[1] === 0x64 && b[2] === 0xff && b[3] === 0x9b && allZero(b, 4, 12)) return v4At(b, 12);
  // 2002:V4::/48 (6to4)
  if (b[0] === 0x20 && b[1] === 0x02) return v4At(b, 2);
  return null;
}

/** An address in any spelling (IPv4 inet_aton forms, IPv6 with or without brackets), or null. */
export function parseAddress(input: string): IpAddress | null {
  const s = input.trim();
  if (s.includes(":")) return parseIpv6(s);
  return parseIpv4(s);
}

/**
 * The address a policy reasons about: an IPv6 form that embeds an IPv4 address becomes that IPv4
 * address (so `::ffff:10.0.0.1` and `10.0.0.1` get one verdict), anything else is itself.
 */
export function effectiveAddress(a: IpAddress): IpAddress {
  return a.family === 6 && a.embedded ? a.embedded : a;
}

// ---------------------------------------------------------------------------------------------
// CIDR

export interface Cidr {
  family: 4 | 6;
  /** The network address (host bits zero). */
  network: IpAddress;
  prefix: number;
  text: string;
}

export type CidrParse = { ok: true; cidr: Cidr } | { ok: false; reason: string };

function addressBits(a: IpAddress): Uint8Array {
  if (a.family === 6) return a.bytes;
  return Uint8Array.of(a.value >>> 24, (a.value >>> 16) & 255, (a.value >>> 8) & 255, a.value & 255);
}

function prefixMatches(bits: Uint8Array, net: Uint8Array, prefix: number): boolean {
  const full = prefix >>> 3;
  for (let i = 0; i < full; i++) if (bits[i] !== net[i]) return false;
  const rem = prefix & 7;
  if (rem === 0) return true;
  const mask = (0xff << (8 - rem)) & 0xff;
  return (((bits[full] as number) ^ (net[full] as number)) & mask) === 0;
}

/**
 * `ADDR/PREFIX`. Host bits must be zero: `10.0.0.1/8` is refused rather than silently widened, since
 * a user who wrote it may well have meant one host.
 */
export function parseCidr(input: string): CidrParse {
  const slash = input.lastIndexOf("/");
  if (slash < 0) return { ok: false, reason: "no /PREFIX" };
  const addr = parseAddress(input.slice(0, slash));
  const p = input.slice(slash + 1);
  if (!addr) return { ok: false, reason: `'${input.slice(0, slash)}' is not an IP address` };
  const max = addr.family === 4 ? 32 : 128;
  if (!/^[0-9]{1,3}$/.test(p) || Number(p) > max) return { ok: false, reason: `prefix '${p}' must be 0-${max}` };
  const prefix = Number(p);
  const bits = addressBits(addr);
  const masked = Uint8Array.from(bits);
  for (let i = 0; i < masked.length; i++) {
    const keep = Math.max(0, Math.min(8, prefix - 8 * i));
    masked[i] = (masked[i] as number) & ((0xff << (8 - keep)) & 0xff);
  }
  const network: IpAddress = addr.family === 4 ? v4FromNumber(((masked[0]! << 24) | (masked[1]! << 16) | (masked[2]! << 8) | masked[3]!) >>> 0) : v6FromBytes(masked);
  if (network.text !== addr.text) {
    return { ok: false, reason: `host bits are set: the network is ${network.text}/${prefix} (write that, or ${addr.text} alone for one host)` };
  }
  return { ok: true, cidr: { family: addr.family, network, prefix, text: `${network.text}/${prefix}` } };
}

/** Whether `addr` lies in `cidr`; IPv4-embedding IPv6 forms match IPv4 ranges. */
export function cidrContains(cidr: Cidr, addr: IpAddress): boolean {
  const a = cidr.family === 4 ? effectiveAddress(addr) : addr;
  if (a.family !== cidr.family) return false;
  return prefixMatches(addressBits(a), addressBits(cidr.network), cidr.prefix);
}

function must(text: string): Cidr {
  const r = parseCidr(text);
  if (!r.ok) throw new Error(`internal: bad builtin CIDR ${text}: ${r.reason}`);
  return r.cidr;
}

// ---------------------------------------------------------------------------------------------
// Classification

/**
 * Ordered: the first match wins, so the metadata addresses come before link-local and the narrow
 * reserved ranges before 0.0.0.0/8. Sources: RFC 6890 special-purpose registries, RFC 6598 (CGNAT),
 * RFC 5737 / 3849 / 9637 (documentation), RFC 2544 (benchmarking).
 */
const V4_TABLE: ReadonlyArray<[Cidr, AddressClass]> = [
  [must("169.254.169.254/32"), "metadata"], // AWS, GCP, Azure, OpenStack, ...
  [must("168.63.129.16/32"), "metadata"], // Azure WireServer: a public-looking address only a cloud host answers
  [must("100.100.100.200/32"), "metadata"], // Alibaba Cloud (inside CGNAT anyway; named for the audit)
  [must("0.0.0.0/8"), "unspecified"],
  [must("10.0.0.0/8"), "private"],
  [must("100.64.0.0/10"), "cgnat"],
  [must("127.0.0.0/8"), "loopback"],
  [must("169.254.0.0/16"), "link-local"],
  [must("172.16.0.0/12"), "private"],
  [must("192.0.0.0/24"), "reserved"],
  [must("192.0.2.0/24"), "documentation"],
  [must("192.88.99.0/24"), "reserved"],
  [must("192.168.0.0/16"), "private"],
  [must("198.18.0.0/15"), "benchmarking"],
  [must("198.51.100.0/24"), "documentation"],
  [must("203.0.113.0/24"), "documentation"],
  [must("224.0.0.0/4"), "multicast"],
  [must("255.255.255.255/32"), "broadcast"],
  [must("240.0.0.0/4"), "reserved"],
];

const V6_TABLE: ReadonlyArray<[Cidr, AddressClass]> = [
  [must("::/128"), "unspecified"],
  [must("::1/128"), "loopback"],
  [must("fd00:ec2::254/128"), "metadata"], // AWS IMDS over IPv6
  [must("fe80::/10"), "link-local"],
  [must("fc00::/7"), "ula"],
  [must("ff00::/8"), "multicast"],
  [must("2001:db8::/32"), "documentation"],
  [must("3fff::/20"), "documentation"],
  [must("2001:2::/48"), "benchmarking"],
  [must("100::/64"), "reserved"], // discard-only
  [must("64:ff9b:1::/48"), "reserved"], // local-use NAT64: translates into a private network
  [must("2001::/32"), "reserved"], // Teredo: a tunnel to somewhere we cannot see
  [must("2001:10::/28"), "reserved"],
  [must("2001:20::/28"), "reserved"],
  [must("fec0::/10"), "reserved"], // site-local (deprecated, still routed by some stacks)
];
const V6_GLOBAL_UNICAST = must("2000::/3");

/** The class of an address; IPv6 transition forms are classified by the IPv4 they carry. */
export function classifyAddress(addr: IpAddress): AddressClass {
  const a = effectiveAddress(addr);
  if (a.family === 4) {
    for (const [c, cls] of V4_TABLE) if (cidrContains(c, a)) return cls;
    return "public";
  }
  for (const [c, cls] of V6_TABLE) if (cidrContains(c, a)) return cls;
  // Everything outside 2000::/3 is unassigned or special; only global unicast is "public".
  return cidrContains(V6_GLOBAL_UNICAST, a) ? "public" : "reserved";
}

/** "Inside": any class but public. Inside destinations are denied in every mode unless explicitly allowed. */
export function isInside(addr: IpAddress | string): boolean {
  const a = typeof addr === "string" ? parseAddress(addr) : addr;
  // Something that is not an address cannot be dialled; treating it as inside fails closed.
  if (!a) return true;
  return classifyAddress(a) !== "public";
}

/** A short phrase for messages and the audit: "10.0.0.5 (private)", "169.254.169.254 (metadata)". */
export function describeAddress(addr: IpAddress): string {
  const eff = effectiveAddress(addr);
  const spelled = eff === addr ? addr.text : `${addr.text} = ${eff.text}`;
  return `${spelled} (${classifyAddress(addr)})`;
}
