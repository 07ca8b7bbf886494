/**
 * Placeholders for swap delivery. The guest of a swap secret sees only a random per-boot token
 * (the variable NAME and /run/secrets/NAME hold it); the egress mediator replaces the token with
 * the real value in the headers of intercepted requests to the secret's bound hosts, and nowhere
 * else. `swapHeaders` is that replacement as a pure function: no I/O, no logging, and the audit
 * facts it returns hold names and hosts, never values.
 *
 * The token: `masecret_` + 32 random bytes in lower-case base32 (52 characters), so it is
 * recognisable in a header dump, survives env vars, URLs, cookies and `user:password`, and a
 * guessed or mangled token (other case, cut short, extended) matches nothing. Tokens are compared
 * whole and case-sensitively; a token must stand alone (no token characters either side).
 *
 * `host` must be the destination the mediator verified (the TLS server name it intercepted),
 * not the request's Host header, which the guest writes.
 */
import { randomBytes } from "node:crypto";
import type { ResolvedSecret, SecretValue } from "./resolve.ts";
import { normalizeHost } from "./ref.ts";

export const PLACEHOLDER_PREFIX = "masecret_";
export const PLACEHOLDER_RANDOM_BYTES = 32;
const BASE32 = "abcdefghijklmnopqrstuvwxyz234567";
/** Characters of base32(32 bytes), without padding. */
const TOKEN_CHARS = Math.ceil((PLACEHOLDER_RANDOM_BYTES * 8) / 5);
export const PLACEHOLDER_LENGTH = PLACEHOLDER_PREFIX.length + TOKEN_CHARS;

const TOKEN_SOURCE = `(?<![A-Za-z0-9_-])${PLACEHOLDER_PREFIX}[a-z2-7]{${TOKEN_CHARS}}(?![A-Za-z0-9_-])`;
const TOKEN_EXACT = new RegExp(`^${PLACEHOLDER_PREFIX}[a-z2-7]{${TOKEN_CHARS}}$`);

function base32(bytes: Buffer): string {
  let out = "";
  let acc = 0;
  let bits = 0;
  for (const b of bytes) {
    acc = (acc << 8) | b;
    bits += 8;
    while (bits >= 5) {
      out += BASE32[(acc >>> (bits - 5)) & 31];
      bits -= 5;
    }
    acc &= (1 << bits) - 1;
  }
  if (bits > 0) out += BASE32[(acc << (5 - bits)) & 31];
  return out;
}

/** A fresh token (a new one per secret per boot). */
export function makePlaceholder(): string {
  return PLACEHOLDER_PREFIX + base32(randomBytes(PLACEHOLDER_RANDOM_BYTES));
}

export function isPlaceholder(s: string): boolean {
  return TOKEN_EXACT.test(s);
}

/** What the mediator holds for one swap secret during one boot. */
export interface SwapSecret {
  name: string;
  /** The placeholder the guest sees. */
  token: string;
  /** Normalised bound hosts (normalizeHost). */
  hosts: readonly string[];
  value: SecretValue;
}

/** A token for every swap secret among `resolved` (file secrets get none). */
export function swapSecretsFor(resolved: readonly ResolvedSecret[]): SwapSecret[] {
  return resolved
    .filter((s) => s.ref.delivery === "swap")
    .map((s) => ({ name: s.ref.name, token: makePlaceholder(), hosts: s.ref.hosts, value: s.value }));
}

export type HeaderPair = readonly [name: string, value: string];

/** One audit fact: which secret, which destination, which header. No value, no token. */
export interface SwapAuditEvent {
  type: "secret_swap" | "secret_swap_denied";
  name: string;
  host: string;
  /** Lower-case header name. */
  header: string;
}

export interface SwapResult {
  /** The headers to send upstream, in order; identical to the input where nothing was swapped. */
  headers: Array<[string, string]>;
  /** One fact per (type, secret, header), in order of first occurrence. */
  events: SwapAuditEvent[];
}

const AUTH_HEADERS = new Set(["authorization", "proxy-authorization"]);
/** `Basic <credentials>`: the scheme is case-insensitive (RFC 9110 §11.1). */
const BASIC = /^(\s*basic\s+)([A-Za-z0-9+/]+={0,2})(\s*)$/i;

/**
 * Replace placeholder tokens in header values with the real values, only where `host` is bound to
 * the token's secret. Tokens of secrets not bound to `host` stay as they are (the upstream sees a
 * meaningless token) and are reported as `secret_swap_denied`. `Authorization: Basic` credentials
 * are decoded, swapped and re-encoded (the token may be the user or the password). Values are
 * written as latin1 strings, i.e. their bytes unchanged, as Node's HTTP client sends header strings.
 */
export function swapHeaders(headers: readonly HeaderPair[], secrets: readonly SwapSecret[], host: string): SwapResult {
  const normalized = normalizeHost(host);
  const auditHost = normalized ?? host;
  const byToken = new Map(secrets.map((s) => [s.token, s]));
  const events: SwapAuditEvent[] = [];
  const seen = new Set<string>();
  const note = (type: SwapAuditEvent["type"], name: string, header: string) => {
    const key = `${type}\0${name}\0${header}`;
    if (seen.has(key)) return;
    seen.add(key);
    events.push({ type, name, host: auditHost, header });
  };
  // One pass with a callback: a value that happens to contain a token is never scanned again.
  const swapText = (text: string, header: string): string => {
    if (!text.includes(PLACEHOLDER_PREFIX)) return text;
    return text.replace(new RegExp(TOKEN_SOURCE, "g"), (token) => {
      const secret = byToken.get(token);
      if (!secret) return token; // a stale or foreign token: not ours to judge
      if (normalized !== undefined && secret.hosts.includes(normalized)) {
        note("secret_swap", secret.name, header);
        return secret.value.reveal().toString("latin1");
      }
      note("secret_swap_denied", secret.name, header);
      return token;
    });
  };
  const out: Array<[string, string]> = [];
  for (const [name, value] of headers) {
    const header = name.toLowerCase();
    const basic = AUTH_HEADERS.has(header) ? BASIC.exec(value) : null;
    if (basic) {
      const [, scheme = "", b64 = "", trail = ""] = basic;
      const decoded = Buffer.from(b64, "base64");
      // Only canonical base64 is treated as Basic credentials; anything else is plain text below.
      if (decoded.toString("base64") === b64 || decoded.toString("base64").replace(/=+$/, "") === b64) {
        const plain = decoded.toString("latin1");
        const swapped = swapText(plain, header);
        out.push([name, swapped === plain ? value : `${scheme}${Buffer.from(swapped, "latin1").toString("base64")}${trail}`]);
        continue;
      }
    }
    out.push([name, swapText(value, header)]);
  }
  return { headers: out, events };
}
