/**
 * DNS-over-HTTPS recognition. DoH would let a guest resolve names the mediator never saw, which
 * breaks "dial what you resolved" (upstream microagent's ASK assessment found DoH working), so a
 * flow to a known DoH-only host is refused outright and, under interception, any request that
 * looks like RFC 8484 (`/dns-query`, `application/dns-message`, `?dns=`) is refused whatever host
 * it goes to. Pure.
 */

/** Hosts whose only job is DoH (suffix entries start with a dot). Shared-purpose hosts are not listed. */
export const KNOWN_DOH_HOSTS: readonly string[] = [
  "dns.google",
  "dns.google.com",
  "cloudflare-dns.com",
  ".cloudflare-dns.com",
  "one.one.one.one",
  "1dot1dot1dot1.cloudflare-dns.com",
  "dns.quad9.net",
  "dns9.quad9.net",
  "dns10.quad9.net",
  "dns11.quad9.net",
  "doh.opendns.com",
  "doh.familyshield.opendns.com",
  ".dns.nextdns.io",
  "dns.nextdns.io",
  "dns.adguard.com",
  "dns.adguard-dns.com",
  ".dns.adguard-dns.com",
  "doh.cleanbrowsing.org",
  "dns.mullvad.net",
  ".dns.mullvad.net",
  "doh.dns.sb",
  "dns.alidns.com",
  "doh.pub",
  "dns.twnic.tw",
  "mozilla.cloudflare-dns.com",
];

/** Whether a normalized name is a known DoH endpoint. */
export function isKnownDohHost(name: string): boolean {
  for (const h of KNOWN_DOH_HOSTS) {
    if (h.startsWith(".") ? name.endsWith(h) : name === h) return true;
  }
  return false;
}

export interface HttpRequestFacts {
  method: string;
  /** The request target as sent (origin-form or absolute-form). */
  target: string;
  /** Header values by lower-case name (the first of each). */
  contentType?: string | null;
  accept?: string | null;
}

/** Whether an HTTP request (seen inside the MITM) is a DNS query in disguise (RFC 8484 or the JSON API). */
export function isDohRequest(r: HttpRequestFacts): boolean {
  const ct = (r.contentType ?? "").toLowerCase();
  const accept = (r.accept ?? "").toLowerCase();
  if (ct.includes("application/dns-message") || accept.includes("application/dns-message")) return true;
  if (ct.includes("application/dns-json") || accept.includes("application/dns-json")) return true;
  let path = r.target;
  let query = "";
  try {
    const u = new URL(r.target, "http://x");
    path = u.pathname;
    query = u.search;
  } catch {
    /* an unparseable target is the HTTP layer's problem; judge the raw text */
  }
  if (/^\/dns-query(\/|$)/i.test(path)) return true;
  // GET /anything?dns=<base64url DNS message> (RFC 8484 section 4.1)
  if (/[?&]dns=[A-Za-z0-9_-]{16,}/.test(query)) return true;
  return false;
}
