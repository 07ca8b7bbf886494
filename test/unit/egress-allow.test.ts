import { test } from "node:test";
import assert from "node:assert/strict";
import { isMicroagentError } from "../../src/contract/errors.ts";
import {
  checkListsForMode,
  entryMatchesAddress,
  entryMatchesName,
  normalizeHostname,
  parseAllowEntry,
  parseAllowList,
  parsePassthroughList,
} from "../../src/egress/allow.ts";
import { parseAddress } from "../../src/egress/address.ts";

test("egress-allow: every entry form parses to its kind", () => {
  const table: Array<[string, Record<string, unknown>]> = [
    ["api.example.com", { kind: "host", host: "api.example.com", port: null }],
    ["API.Example.COM.", { kind: "host", host: "api.example.com", port: null }],
    ["bücher.de", { kind: "host", host: "xn--bcher-kva.de", port: null }],
    ["api.example.com:8443", { kind: "host", host: "api.example.com", port: 8443 }],
    [".example.com", { kind: "suffix", suffix: "example.com", port: null }],
    [".Example.com:443", { kind: "suffix", suffix: "example.com", port: 443 }],
    ["203.0.113.7", { kind: "address", port: null }],
    ["10.0.0.5:5432", { kind: "address", port: 5432 }],
    ["127.1:8080", { kind: "address", port: 8080 }],
    ["[fd00::1]:80", { kind: "address", port: 80 }],
    ["fd00::1", { kind: "address", port: null }],
    ["10.1.0.0/16", { kind: "cidr" }],
    ["fd00::/8", { kind: "cidr" }],
    ["host.microagent.internal:9000", { kind: "host-service", port: 9000 }],
    ["HOST.microagent.internal.:9000", { kind: "host-service", port: 9000 }],
    ["_acme-challenge.example.com", { kind: "host", host: "_acme-challenge.example.com" }],
  ];
  for (const [input, want] of table) {
    const e = parseAllowEntry(input);
    for (const [k, v] of Object.entries(want)) assert.deepEqual((e as unknown as Record<string, unknown>)[k], v, `${input}: ${k}`);
    assert.equal(e.source, input);
  }
  const addr = parseAllowEntry("0xa.0.0.5:5432");
  assert.ok(addr.kind === "address" && addr.address.text === "10.0.0.5", "inet_aton spellings are addresses, not names");
});

test("egress-allow: bad entries are EGRESS_ALLOW_INVALID naming the flag, the entry and the fix", () => {
  const table: Array<[string, RegExp]> = [
    ["", /is empty/],
    ["https://api.example.com/v1", /is a URL/],
    ["*.example.com", /wildcards are written as a leading dot/],
    ["example.com:0", /port '0' must be a number from 1 to 65535/],
    ["example.com:99999", /port/],
    ["example.com:http", /port 'http'/],
    ["10.0.0.1/8", /host bits are set/],
    ["10.0.0.0/8:80", /a CIDR takes no port/],
    ["example.com/path", /not a CIDR/],
    ["256.1.1.1", /looks like an IPv4 address but is not a valid one/],
    ["exa mple.com", /not a valid host name/],
    ["-bad.example.com", /not a valid host name/],
    ["a..b", /not a valid host name/],
    [`${"a".repeat(64)}.com`, /not a valid host name/],
    ["host.microagent.internal", /needs the port/],
    ["db.microagent.internal:5432", /mediator's own/],
    [".microagent.internal", /mediator's own/],
    ["localhost:8080", /localhost is the guest itself/],
    ["[fd00::1", /without '\]'/],
    ["[nope]:80", /not an IPv6 address/],
    ["1:2:3", /not an IPv6 address/],
    ["xn--a.com", /not a valid host name/],
  ];
  for (const [input, msg] of table) {
    try {
      parseAllowEntry(input);
      assert.fail(`${JSON.stringify(input)} should be refused`);
    } catch (e) {
      assert.ok(isMicroagentError(e), String(e));
      assert.equal(e.code, "EGRESS_ALLOW_INVALID");
      assert.equal(e.kind, "permanent");
      assert.match(e.message, /^--egress-allow '/);
      assert.match(e.message, msg, input);
      assert.ok(e.remediation.length > 10);
    }
  }
  try {
    parseAllowEntry("localhost:8080");
  } catch (e) {
    assert.ok(isMicroagentError(e) && /host\.microagent\.internal:PORT/.test(e.remediation), "localhost points at the host-service form");
  }
  try {
    parseAllowEntry("*.example.com");
  } catch (e) {
    assert.ok(isMicroagentError(e) && e.remediation.includes("--egress-allow .example.com"));
  }
});

test("egress-allow: passthrough takes names only; name lists with --egress off are a conflict, address entries are not", () => {
  assert.deepEqual(
    parsePassthroughList(["pinned.example.com", ".bank.test"]).map((e) => e.kind),
    ["host", "suffix"],
  );
  assert.throws(() => parsePassthroughList(["10.0.0.1"]), (e: unknown) => isMicroagentError(e) && e.code === "EGRESS_ALLOW_INVALID" && /--egress-passthrough '10\.0\.0\.1'/.test(e.message));
  assert.throws(() => checkListsForMode("off", ["a.test"], []), (e: unknown) => isMicroagentError(e) && e.code === "EGRESS_ALLOW_CONFLICT" && /--egress-allow a\.test has no effect with --egress off/.test(e.message));
  // Without mediation inside destinations are still denied unless allowed by address: those entries stay.
  checkListsForMode("off", ["10.0.0.5:5432", "10.1.0.0/16", "host.microagent.internal:8080"], []);
  assert.throws(() => checkListsForMode("off", [], ["a.test"]), /--egress-passthrough/);
  checkListsForMode("strict", ["a.test"], []);
  checkListsForMode("off", [], []);
});

test("egress-allow: matching by name, suffix, port, address and CIDR", () => {
  const [host, hostPort, suffix, addr, cidr] = parseAllowList(["api.example.com", "db.example.com:5432", ".example.org", "10.0.0.5:5432", "192.168.0.0/16"]) as [
    ReturnType<typeof parseAllowEntry>,
    ReturnType<typeof parseAllowEntry>,
    ReturnType<typeof parseAllowEntry>,
    ReturnType<typeof parseAllowEntry>,
    ReturnType<typeof parseAllowEntry>,
  ];
  assert.equal(entryMatchesName(host, "api.example.com", 443), true);
  assert.equal(entryMatchesName(host, "xapi.example.com", 443), false);
  assert.equal(entryMatchesName(hostPort, "db.example.com", 5432), true);
  assert.equal(entryMatchesName(hostPort, "db.example.com", 5433), false);
  assert.equal(entryMatchesName(hostPort, "db.example.com", null), true, "null port: any port of the entry will do (DNS)");
  assert.equal(entryMatchesName(suffix, "a.example.org", 443), true);
  assert.equal(entryMatchesName(suffix, "a.b.example.org", 443), true);
  assert.equal(entryMatchesName(suffix, "example.org", 443), false, "a suffix does not admit the apex");
  assert.equal(entryMatchesName(suffix, "evilexample.org", 443), false);
  assert.equal(entryMatchesAddress(addr, parseAddress("::ffff:10.0.0.5")!, 5432), true);
  assert.equal(entryMatchesAddress(addr, parseAddress("10.0.0.5")!, 22), false);
  assert.equal(entryMatchesAddress(cidr, parseAddress("0xc0a80101")!, 1), true);
  assert.equal(entryMatchesAddress(cidr, parseAddress("192.169.0.1")!, 1), false);
});

test("egress-allow: normalizeHostname is the one comparison form", () => {
  assert.equal(normalizeHostname("WWW.Example.COM."), "www.example.com");
  assert.equal(normalizeHostname("münchen.de"), "xn--mnchen-3ya.de");
  assert.equal(normalizeHostname("xn--mnchen-3ya.de"), "xn--mnchen-3ya.de");
  for (const bad of ["", ".", "a..b", "1.2.3.4", "0x7f.1", "example.123", "a b.c", "a/b.c", `${"x".repeat(250)}.com`, "*.a.com"]) {
    assert.equal(normalizeHostname(bad), null, bad);
  }
});
