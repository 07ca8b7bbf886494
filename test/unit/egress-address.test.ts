import { test } from "node:test";
import assert from "node:assert/strict";
import { isIP } from "node:net";
import { classifyAddress, cidrContains, effectiveAddress, isInside, parseAddress, parseCidr, parseIpv4, parseIpv6 } from "../../src/egress/address.ts";

test("egress-address: every inet_aton spelling of 169.254.169.254 is the metadata address", () => {
  const spellings = [
    "169.254.169.254",
    "2852039166", // one decimal number
    "0251.0376.0251.0376", // octal parts
    "0xa9.0xfe.0xa9.0xfe", // hex parts
    "0xA9FEA9FE",
    "0xa9.254.0251.0xfe",
    "169.254.43518", // a.b.c with a 16-bit last part
    "169.16689662", // a.b with a 24-bit last part
    "00000000251.0376.0251.0376", // leading zeros
    "169.254.169.254.", // trailing dot
    "::ffff:169.254.169.254",
    "::ffff:a9fe:a9fe",
    "[::ffff:169.254.169.254]",
    "0:0:0:0:0:ffff:169.254.169.254",
    "::ffff:0:169.254.169.254", // SIIT
    "::169.254.169.254", // v4-compatible
    "64:ff9b::169.254.169.254", // NAT64 well-known prefix
    "64:ff9b::a9fe:a9fe",
    "2002:a9fe:a9fe::1", // 6to4
  ];
  for (const s of spellings) {
    const a = parseAddress(s);
    assert.ok(a, `${s} should parse`);
    assert.equal(effectiveAddress(a).text, "169.254.169.254", s);
    assert.equal(classifyAddress(a), "metadata", s);
    assert.equal(isInside(a), true, s);
  }
});

test("egress-address: shortened and numeric forms follow inet_aton", () => {
  const table: Array<[string, string | null]> = [
    ["127.1", "127.0.0.1"],
    ["127.0.1", "127.0.0.1"],
    ["0x7f.1", "127.0.0.1"],
    ["017700000001", "127.0.0.1"],
    ["2130706433", "127.0.0.1"],
    ["10.1", "10.0.0.1"],
    ["0", "0.0.0.0"],
    ["0x", "0.0.0.0"],
    ["4294967295", "255.255.255.255"],
    ["4294967296", null],
    ["256.1.1.1", null],
    ["1.2.3.4.5", null],
    ["08.1.1.1", null], // 8 is not an octal digit
    ["0x1g.1", null],
    ["1..1", null],
    ["", null],
    ["1.2.3.256", null],
    ["1.2.65536", null],
    ["-1", null],
    ["1e3", null],
    [" 1.2.3.4", "1.2.3.4"],
  ];
  for (const [input, want] of table) assert.equal(parseAddress(input)?.text ?? null, want, JSON.stringify(input));
});

test("egress-address: IPv6 parsing agrees with node:net and prints RFC 5952 text", () => {
  const good: Array<[string, string]> = [
    ["::1", "::1"],
    ["::", "::"],
    ["2001:DB8:0:0:0:0:0:1", "2001:db8::1"],
    ["2001:db8::0:1", "2001:db8::1"],
    ["fe80::1%eth0", "fe80::1"],
    ["1:0:0:2:0:0:0:3", "1:0:0:2::3"],
    ["1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7:8"],
    ["::ffff:1.2.3.4", "::ffff:102:304"],
  ];
  for (const [input, want] of good) assert.equal(parseIpv6(input)?.text, want, input);
  for (const bad of ["1:2:3:4:5:6:7:8:9", "1::2::3", "12345::", ":::", "1:2:3:4:5:6:7", "::ffff:1.2.3", "::ffff:01.2.3.4", "g::1", "fe80::1%", "[::1"]) {
    assert.equal(parseIpv6(bad), null, bad);
    if (!/[[%]/.test(bad)) assert.equal(isIP(bad), 0, `node:net disagrees on ${bad}`);
  }
  // a cross-check against node:net on the canonical strings
  for (const [, want] of good) assert.equal(isIP(want), 6, want);
});

test("egress-address: classes of the special-purpose ranges", () => {
  const table: Array<[string, string]> = [
    ["8.8.8.8", "public"],
    ["1.1.1.1", "public"],
    ["0.0.0.0", "unspecified"],
    ["0.1.2.3", "unspecified"],
    ["127.0.0.1", "loopback"],
    ["127.255.255.254", "loopback"],
    ["10.0.0.5", "private"],
    ["172.16.0.1", "private"],
    ["172.31.255.255", "private"],
    ["172.32.0.1", "public"],
    ["192.168.1.1", "private"],
    ["100.64.0.1", "cgnat"],
    ["100.127.255.255", "cgnat"],
    ["100.128.0.1", "public"],
    ["169.254.1.1", "link-local"],
    ["169.254.169.254", "metadata"],
    ["100.100.100.200", "metadata"],
    ["168.63.129.16", "metadata"],
    ["224.0.0.251", "multicast"],
    ["239.255.255.250", "multicast"],
    ["255.255.255.255", "broadcast"],
    ["240.0.0.1", "reserved"],
    ["192.0.0.8", "reserved"],
    ["192.0.2.1", "documentation"],
    ["198.51.100.7", "documentation"],
    ["203.0.113.9", "documentation"],
    ["198.18.0.1", "benchmarking"],
    ["::", "unspecified"],
    ["::1", "loopback"],
    ["fe80::1", "link-local"],
    ["fc00::1", "ula"],
    ["fd12:3456::1", "ula"],
    ["fd00:ec2::254", "metadata"],
    ["ff02::fb", "multicast"],
    ["2001:db8::1", "documentation"],
    ["2001::1", "reserved"],
    ["fec0::1", "reserved"],
    ["4000::1", "reserved"],
    ["2606:4700::1111", "public"],
    ["::ffff:10.0.0.1", "private"],
    ["::ffff:8.8.8.8", "public"],
    ["::ffff:127.0.0.1", "loopback"],
    ["64:ff9b::10.0.0.1", "private"],
    ["64:ff9b::8.8.8.8", "public"],
    ["64:ff9b:1::1", "reserved"],
    ["2002:0a00:0001::", "private"],
  ];
  for (const [input, want] of table) {
    const a = parseAddress(input);
    assert.ok(a, input);
    assert.equal(classifyAddress(a), want, input);
    assert.equal(isInside(a), want !== "public", input);
  }
  assert.equal(isInside("not an address"), true, "something undiallable fails closed");
});

test("egress-address: CIDR parse and match (v4, v6, and v4-mapped addresses against v4 ranges)", () => {
  const c = parseCidr("10.1.0.0/16");
  assert.ok(c.ok);
  assert.equal(c.cidr.text, "10.1.0.0/16");
  assert.equal(cidrContains(c.cidr, parseIpv4("10.1.200.3")!), true);
  assert.equal(cidrContains(c.cidr, parseAddress("::ffff:10.1.0.9")!), true);
  assert.equal(cidrContains(c.cidr, parseAddress("167837953")!), true, "10.1.0.1 as one number");
  assert.equal(cidrContains(c.cidr, parseIpv4("10.2.0.1")!), false);
  const six = parseCidr("fd00::/8");
  assert.ok(six.ok);
  assert.equal(cidrContains(six.cidr, parseAddress("fd12::1")!), true);
  assert.equal(cidrContains(six.cidr, parseAddress("10.0.0.1")!), false);
  const all = parseCidr("0.0.0.0/0");
  assert.ok(all.ok && cidrContains(all.cidr, parseAddress("255.255.255.255")!));
  const odd = parseCidr("192.168.1.128/25");
  assert.ok(odd.ok && cidrContains(odd.cidr, parseAddress("192.168.1.200")!) && !cidrContains(odd.cidr, parseAddress("192.168.1.127")!));
  const hostBits = parseCidr("10.0.0.1/8");
  assert.equal(hostBits.ok, false);
  assert.match(!hostBits.ok ? hostBits.reason : "", /host bits are set: the network is 10\.0\.0\.0\/8/);
  for (const bad of ["10.0.0.0/33", "10.0.0.0/", "x/8", "fd00::/129", "10.0.0.0/-1", "10.0.0.0/8/8"]) assert.equal(parseCidr(bad).ok, false, bad);
});
