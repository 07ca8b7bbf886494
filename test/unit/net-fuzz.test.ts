/**
 * Seeded, deterministic fuzzing of every parser in the network stack: the stream framing, Ethernet,
 * ARP, IPv4, ICMP, UDP, TCP (options and segments) and DNS, each for at least 10^5 iterations, plus the
 * TCP state machine driven by random segments. Nothing a guest sends may throw out of the stack, break
 * a parser's bounds or grow its buffers past the caps. A failure reproduces from its seed.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import dnsPacket from "dns-packet";
import { prng } from "../helpers/prng.ts";
import { GuestTcp, TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN, arpFrame, drain, gwIp, guestIp, guestMac, harness, icmpEchoFrame, ip, parseOut, pump, tcpFrame, udpFrame } from "../helpers/net-guest.ts";
import { StreamFrameDecoder } from "../../src/net/framing.ts";
import { isMicroagentError } from "../../src/contract/errors.ts";
import { validateDnsQuery } from "../../src/net/dns.ts";
import { ETH_HEADER_BYTES, parseArp, parseIcmp, parseIpv4Header, parseTcp, parseTcpOptions, parseUdp } from "../../src/net/wire.ts";
import { checksum, finishChecksum, pseudoHeaderSum, sum16 } from "../../src/net/checksum.ts";
import { seqAdd } from "../../src/net/seq.ts";

const ITER = 100_000;
const SERVER = ip("93.184.216.34");

function mutate(r: () => number, src: Buffer): Buffer {
  let b = Buffer.from(src);
  const edits = 1 + Math.floor(r() * 4);
  for (let e = 0; e < edits; e++) {
    const op = r();
    if (op < 0.5 && b.length > 0) {
      const i = Math.floor(r() * b.length);
      b[i] = r() < 0.5 ? b[i]! ^ (1 << Math.floor(r() * 8)) : Math.floor(r() * 256);
    } else if (op < 0.7) b = b.subarray(0, Math.floor(r() * b.length));
    else if (op < 0.85) b = Buffer.concat([b, Buffer.from(Array.from({ length: 1 + Math.floor(r() * 40) }, () => Math.floor(r() * 256)))]);
    else if (b.length > 0) {
      // Interesting values in a random 16-bit field.
      const i = Math.floor(r() * Math.max(1, b.length - 1));
      const vals = [0, 1, 0xff, 0x7fff, 0x8000, 0xffff, b.length, b.length + 1, 20, 5];
      if (i + 2 <= b.length) b.writeUInt16BE(vals[Math.floor(r() * vals.length)]! & 0xffff, i);
    }
  }
  return b;
}

/** Re-seals the IPv4 header checksum and (sometimes) the L4 checksum, so mutations reach deeper code. */
function reseal(r: () => number, f: Buffer): Buffer {
  if (f.length < ETH_HEADER_BYTES + 20 || f.readUInt16BE(12) !== 0x0800) return f;
  const ihl = (f[ETH_HEADER_BYTES]! & 0xf) * 4;
  if (ihl < 20 || ETH_HEADER_BYTES + ihl > f.length) return f;
  f.writeUInt16BE(0, ETH_HEADER_BYTES + 10);
  f.writeUInt16BE(checksum(f, ETH_HEADER_BYTES, ihl), ETH_HEADER_BYTES + 10);
  if (r() < 0.7) {
    const total = Math.min(f.readUInt16BE(ETH_HEADER_BYTES + 2), f.length - ETH_HEADER_BYTES);
    const o = ETH_HEADER_BYTES + ihl;
    const len = total - ihl;
    const proto = f[ETH_HEADER_BYTES + 9];
    const at = proto === 6 ? 16 : proto === 17 ? 6 : proto === 1 ? 2 : -1;
    if (at >= 0 && len >= at + 2) {
      f.writeUInt16BE(0, o + at);
      const s = proto === 1 ? sum16(f, o, len) : pseudoHeaderSum(f.readUInt32BE(ETH_HEADER_BYTES + 12), f.readUInt32BE(ETH_HEADER_BYTES + 16), proto!, len) + sum16(f, o, len);
      f.writeUInt16BE(finishChecksum(s), o + at);
    }
  }
  return f;
}

test("net-fuzz: stream framing: random chunks and lengths decode or fail with NET_FRAME_TOO_LARGE only", () => {
  const r = prng(0xf4a3e);
  let frames = 0;
  let failures = 0;
  let d = new StreamFrameDecoder();
  // A wire of mostly well-formed frames with an occasional corrupted length, cut into random chunks.
  let wire = Buffer.alloc(0);
  for (let i = 0; i < ITER; i++) {
    if (wire.length < 64) {
      const len = r() < 0.002 ? Math.floor(r() * 2 ** 32) : Math.floor(r() * 300);
      const hdr = Buffer.alloc(4);
      hdr.writeUInt32BE(len >>> 0);
      wire = Buffer.concat([wire, hdr, Buffer.alloc(Math.min(len, 300), i & 255)]);
    }
    const n = Math.floor(r() * 64);
    const chunk = wire.subarray(0, n);
    wire = wire.subarray(n);
    try {
      for (const f of d.push(chunk)) {
        assert.ok(f.length > 0 && f.length <= 65550);
        frames++;
      }
      assert.ok(d.bufferedBytes <= 4 + 65550);
    } catch (e) {
      assert.ok(isMicroagentError(e) && e.code === "NET_FRAME_TOO_LARGE", String(e));
      failures++;
      d = new StreamFrameDecoder();
    }
  }
  assert.ok(frames > 1000 && failures > 10, `exercised both paths: ${frames} frames, ${failures} failures`);
});

test("net-fuzz: header parsers on random and mutated bytes never throw and stay in bounds", () => {
  const r = prng(0x1ee7);
  const seeds = [
    arpFrame(1, guestMac, guestIp, gwIp),
    icmpEchoFrame(gwIp, 1, 2, Buffer.from("abcdefgh")),
    udpFrame(5000, SERVER, 443, Buffer.from("hello world")),
    tcpFrame({ srcPort: 1234, dst: SERVER, dstPort: 80, seq: 1, flags: TCP_SYN, mss: 1460, wscale: 7 }),
    tcpFrame({ srcPort: 1234, dst: SERVER, dstPort: 80, seq: 1, ack: 2, flags: TCP_ACK | TCP_PSH, data: Buffer.alloc(100, 7) }),
  ];
  for (let i = 0; i < ITER; i++) {
    const f = i % 4 === 0 ? Buffer.from(Array.from({ length: Math.floor(r() * 120) }, () => Math.floor(r() * 256))) : mutate(r, seeds[i % seeds.length]!);
    const a = parseArp(f, ETH_HEADER_BYTES);
    if (a.ok) assert.equal(a.senderMac.length, 6);
    const ipH = parseIpv4Header(f, ETH_HEADER_BYTES);
    if (ipH.ok) {
      assert.ok(ipH.payloadOff + ipH.payloadLen <= f.length);
      const l4 = [parseIcmp(f, ipH.payloadOff, ipH.payloadLen), parseUdp(f, ipH.payloadOff, ipH.payloadLen, ipH.src, ipH.dst), parseTcp(f, ipH.payloadOff, ipH.payloadLen, ipH.src, ipH.dst)];
      const u = l4[1] as ReturnType<typeof parseUdp>;
      if (u.ok) assert.ok(u.dataOff + u.dataLen <= f.length);
      const t = l4[2] as ReturnType<typeof parseTcp>;
      if (t.ok) {
        assert.ok(t.dataOff + t.dataLen <= f.length);
        if (t.options.wscale !== undefined) assert.ok(t.options.wscale <= 14);
      }
    }
    // Options alone, at any offset/length inside the buffer.
    const off = Math.floor(r() * (f.length + 1));
    parseTcpOptions(f, off, Math.floor(r() * (f.length - off + 1)));
    // And at arbitrary (even out-of-range) offsets the parsers report, never throw.
    parseIpv4Header(f, f.length + 3);
    parseUdp(f, 0, f.length + 10, 0, 0);
  }
});

test("net-fuzz: the whole stack takes 10^5 mutated frames (resealed checksums) without throwing; buffers stay capped", () => {
  const r = prng(0xabcdef);
  const h = harness({ caps: { maxTcpFlows: 64, maxHalfOpen: 16, maxUdpFlows: 64 } });
  const g = new GuestTcp(h, { localPort: 40000, remote: SERVER, remotePort: 80 });
  g.connect();
  pump(h, [g]);
  const q = dnsPacket.encode({ type: "query", id: 7, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type: "A", name: "example.com" }] });
  const seeds = [
    arpFrame(1, guestMac, guestIp, gwIp),
    icmpEchoFrame(gwIp, 1, 2, Buffer.from("abcdefgh")),
    udpFrame(5000, SERVER, 4433, Buffer.from("hello")),
    udpFrame(5353, gwIp, 53, q),
    tcpFrame({ srcPort: 1234, dst: SERVER, dstPort: 80, seq: 1, flags: TCP_SYN, mss: 1460, wscale: 7 }),
    g.frame(TCP_ACK | TCP_PSH, Buffer.alloc(200, 1)),
    g.frame(TCP_ACK),
    g.frame(TCP_FIN | TCP_ACK),
  ];
  for (let i = 0; i < ITER; i++) {
    const f = reseal(r, mutate(r, seeds[i % seeds.length]!));
    h.stack.receiveFrame(f);
    if (i % 64 === 0) {
      for (const o of drain(h)) parseOut(o); // everything the stack sends is well-formed
      h.clock.advance(Math.floor(r() * 50));
    }
    const st = h.stack.stats();
    assert.ok(st.bufferedBytes <= 64 * (256 * 1024 * 2 + 64 * 1024));
    assert.ok(st.tcp.open <= 64 && st.tcp.halfOpen <= 16 && st.udp.open <= 64);
  }
  const st = h.stack.stats();
  assert.ok(Object.keys(st.drops).length > 10, `many drop reasons exercised: ${Object.keys(st.drops)}`);
  h.stack.close();
  assert.equal(h.stack.stats().bufferedBytes, 0);
});

test("net-fuzz: DNS query validation and the server on 10^5 mutated queries", async () => {
  const r = prng(0xd15);
  const names = ["example.com", "host.microagent.internal", "a.b.c.d.e.f", "x".repeat(63) + ".test", "xn--bcher-kva.example"];
  const types = ["A", "AAAA", "TXT", "MX", "SRV"] as const;
  const seeds = names.flatMap((n, i) => [
    dnsPacket.encode({ type: "query", id: i, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type: types[i % types.length]!, name: n }] }),
    dnsPacket.encode({ type: "query", id: i, questions: [{ type: "A", name: n }], additionals: [{ type: "OPT", name: ".", udpPayloadSize: 4096 } as dnsPacket.Answer] }),
  ]);
  let ok = 0;
  for (let i = 0; i < ITER; i++) {
    const m = i % 5 === 0 ? Buffer.from(Array.from({ length: Math.floor(r() * 80) }, () => Math.floor(r() * 256))) : mutate(r, seeds[i % seeds.length]!);
    const v = validateDnsQuery(m);
    if (v.ok) {
      ok++;
      assert.ok(v.name.length <= 253 && v.questionEnd <= m.length);
      assert.ok(v.name.split(".").every((l) => l.length <= 63));
    }
  }
  assert.ok(ok > 1000, `some mutations stay valid: ${ok}`);
  // Through the server, with an upstream that answers garbage half the time.
  const h = harness({}, {
    resolver: {
      query: async (raw) => (r() < 0.5 ? mutate(r, raw) : Buffer.from(raw.subarray(0, Math.floor(r() * raw.length)))),
    },
  });
  for (let i = 0; i < 20_000; i++) {
    h.stack.receiveFrame(udpFrame(5000 + (i % 100), gwIp, 53, mutate(r, seeds[i % seeds.length]!)));
    if (i % 100 === 0) {
      await new Promise((res) => setImmediate(res));
      for (const o of drain(h)) parseOut(o);
    }
  }
  await new Promise((res) => setImmediate(res));
  assert.equal(h.stack.stats().dns.inFlight, 0);
});

test("net-fuzz: the TCP state machine under 10^5 random segments and host actions keeps its invariants", () => {
  const r = prng(0x7cb);
  const h = harness({ caps: { flowBufferBytes: 64 * 1024, maxOutOfOrderBytes: 16 * 1024 } }, { isn: () => Math.floor(r() * 2 ** 32) });
  let g = new GuestTcp(h, { localPort: 40000, remote: SERVER, remotePort: 80, iss: 0xfffffff0 });
  g.connect();
  pump(h, [g]);
  let port = 40000;
  for (let i = 0; i < ITER; i++) {
    const host = h.connector.last;
    const x = r();
    if (g.state !== "ESTABLISHED" || h.stack.flows().length === 0) {
      g = new GuestTcp(h, { localPort: ++port, remote: SERVER, remotePort: 80, iss: Math.floor(r() * 2 ** 32) });
      g.connect();
      pump(h, [g]);
      continue;
    }
    if (x < 0.45) {
      // A segment near the right numbers, with random flags, offsets and sizes.
      const flagsPool = [TCP_ACK, TCP_ACK | TCP_PSH, TCP_ACK | TCP_FIN, TCP_RST, TCP_SYN, TCP_ACK | TCP_RST, 0, TCP_SYN | TCP_ACK, TCP_ACK | TCP_PSH | TCP_FIN];
      const flags = r() < 0.8 ? TCP_ACK | (r() < 0.5 ? TCP_PSH : 0) : flagsPool[Math.floor(r() * flagsPool.length)]!;
      const seq = seqAdd(g.sndNxt, Math.floor((r() - 0.5) * (r() < 0.9 ? 4000 : 2 ** 32)));
      const ack = seqAdd(g.rcvNxt, Math.floor((r() - 0.7) * (r() < 0.9 ? 4000 : 2 ** 32)));
      const len = r() < 0.5 ? 0 : Math.floor(r() * 3000);
      h.stack.receiveFrame(tcpFrame({ srcPort: g.o.localPort, dst: SERVER, dstPort: 80, seq, ack, flags, window: Math.floor(r() * 65536), data: Buffer.alloc(len, i & 255) }));
    } else if (x < 0.7) {
      g.pushData((n) => Buffer.alloc(n, 3), Math.floor(r() * 5000));
    } else if (x < 0.8) {
      // Like a socket: no data events while paused.
      if (!host.paused) host.h.onData(Buffer.alloc(Math.floor(r() * 20000), 4));
    } else if (x < 0.85) {
      host.blocked = !host.blocked;
      if (!host.blocked) host.h.onDrain();
    } else if (x < 0.87) {
      host.h.onEnd();
    } else if (x < 0.875) {
      host.h.onClose(new Error("boom"));
    } else {
      h.clock.advance(Math.floor(r() * 500));
    }
    if (r() < 0.5) pump(h, [g]);
    else drain(h);
    const st = h.stack.stats();
    for (const f of h.stack.flows()) assert.ok(f.bufferedBytes <= 2 * 64 * 1024 + 20000 + 16 * 1024, `flow buffer ${f.bufferedBytes}`);
    assert.ok(st.tcp.open >= 0 && st.tcp.halfOpen >= 0 && st.tcp.open <= 256);
  }
  h.stack.close();
  assert.equal(h.stack.stats().bufferedBytes, 0);
  assert.equal(h.stack.stats().tcp.open, 0);
});
