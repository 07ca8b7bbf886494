/**
 * TCP termination frame by frame: handshake, MSS and window scale, data both ways, backpressure,
 * retransmission, persist probes, FIN/RST both ways, timeouts, out-of-order and duplicate segments,
 * blind-RST/SYN protection, connectToGuest, and the sequence wrap with 1 GiB each way.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import {
  GuestTcp,
  TCP_ACK,
  TCP_PSH,
  TCP_RST,
  TCP_SYN,
  drain,
  guestIp,
  harness,
  ip,
  parseOut,
  pump,
  tcpFrame,
} from "../helpers/net-guest.ts";
import type { FakeHostStream, Harness } from "../helpers/net-guest.ts";
import { seqAdd } from "../../src/net/seq.ts";
import { prng } from "../helpers/prng.ts";

const SERVER = ip("93.184.216.34");

function established(h: Harness, opts: Partial<ConstructorParameters<typeof GuestTcp>[1]> = {}) {
  const g = new GuestTcp(h, { localPort: 40000, remote: SERVER, remotePort: 80, ...opts });
  g.connect();
  pump(h, [g]);
  assert.equal(g.state, "ESTABLISHED", "handshake completes");
  const host = h.connector.last;
  return { g, host };
}

test("net-tcp: handshake waits for the host side, carries MSS and window scale, and the flow is counted", () => {
  const h = harness();
  h.connector.autoConnect = false;
  const g = new GuestTcp(h, { localPort: 40000, remote: SERVER, remotePort: 80, mss: 1400, wscale: 7 });
  g.connect();
  assert.equal(h.out.length, 0, "no SYN-ACK before the host side connected");
  assert.deepEqual(h.connector.last.target, { ip: "93.184.216.34", port: 80, guestPort: 40000 });
  assert.equal(h.stack.stats().tcp.halfOpen, 1);
  h.connector.last.connect();
  const [synack] = drain(h);
  const p = parseOut(synack!);
  assert.equal(p.src, SERVER);
  assert.equal(p.dst, guestIp);
  assert.equal(p.tcp!.flags, TCP_SYN | TCP_ACK);
  assert.equal(p.tcp!.ack, 1001);
  assert.equal(p.tcp!.options.mss, 65480, "MSS = MTU 65520 - 40");
  assert.equal(p.tcp!.options.wscale, 3, "shift that covers the 256 KiB flow buffer");
  g.onSegment(p.tcp!);
  pump(h, [g]);
  assert.equal(g.state, "ESTABLISHED");
  const st = h.stack.stats();
  assert.equal(st.tcp.open, 1);
  assert.equal(st.tcp.halfOpen, 0);
  assert.equal(st.tcp.accepted, 1);
});

test("net-tcp: data both ways, respects the guest's MSS, and a FIN from each side closes cleanly", () => {
  const h = harness();
  const { g, host } = established(h, { mss: 1000 });
  g.send(g.frame(TCP_ACK | TCP_PSH, Buffer.from("GET / HTTP/1.0\r\n\r\n")));
  g.sndNxt = seqAdd(g.sndNxt, 18);
  pump(h, [g]);
  assert.equal(host.text(), "GET / HTTP/1.0\r\n\r\n");
  assert.equal(g.sndUna, g.sndNxt, "the stack acked the request");
  g.keep = [];
  const body = Buffer.alloc(5000, 7);
  host.h.onData(body);
  const frames = [...h.out];
  pump(h, [g]);
  const sizes = frames.map((f) => parseOut(f).tcp!.dataLen).filter((n) => n > 0);
  assert.ok(sizes.every((n) => n <= 1000), `segments respect MSS 1000: ${sizes}`);
  assert.equal(g.received, 5000);
  host.h.onEnd();
  pump(h, [g]);
  assert.ok(g.finReceived, "FIN from the host side reached the guest");
  g.fin();
  pump(h, [g]);
  assert.ok(host.ended, "the guest's FIN ended the host side");
  h.clock.advance(3000);
  assert.equal(h.stack.stats().tcp.open, 0);
  assert.equal(h.stack.stats().tcp.timeWait, 0);
  assert.equal(h.stack.flows().length, 0);
});

test("net-tcp: guest closes first: CLOSE_WAIT, then LAST_ACK when the host ends", () => {
  const h = harness();
  const { g, host } = established(h);
  g.fin();
  pump(h, [g]);
  assert.ok(host.ended);
  assert.equal(h.stack.flows()[0]!.state, "CLOSE_WAIT");
  host.h.onData(Buffer.from("bye"));
  host.h.onEnd();
  pump(h, [g]);
  assert.ok(g.finReceived);
  assert.equal(g.received, 3);
  assert.equal(h.stack.flows().length, 0, "LAST_ACK acked: flow gone");
  assert.equal(host.destroyed, undefined, "a clean close never destroys the host stream");
});

test("net-tcp: a refused or denied destination gets an RST at SYN time", () => {
  const h = harness();
  const g = new GuestTcp(h, { localPort: 40001, remote: ip("10.99.1.1"), remotePort: 80 });
  g.connect();
  pump(h, [g]);
  assert.ok(g.rstReceived, "denied by policy: RST");
  assert.equal(h.connector.streams.length, 0, "nothing dialled");
  assert.equal(h.stack.stats().tcp.refused["denied: test-inside"], 1);
  h.connector.autoConnect = false;
  const g2 = new GuestTcp(h, { localPort: 40002, remote: SERVER, remotePort: 81 });
  g2.connect();
  h.connector.last.h.onClose(new Error("ECONNREFUSED"));
  pump(h, [g2]);
  assert.ok(g2.rstReceived, "host refused: RST");
  assert.equal(h.stack.stats().tcp.open, 0);
  assert.equal(h.stack.stats().events["tcp-host-refused"], 1);
});

test("net-tcp: the receive window is the flow's free buffer: a host that stops reading closes it, draining reopens it", () => {
  const h = harness();
  const { g, host } = established(h, { mss: 65480 });
  host.blocked = true;
  const src = (n: number) => Buffer.alloc(n, 1);
  let sent = 0;
  for (let i = 0; i < 20; i++) {
    const n = g.pushData(src, 1 << 20);
    sent += n;
    pump(h, [g]);
    if (n === 0) break;
  }
  assert.equal(g.peerWnd, 0, "window closed");
  assert.ok(sent <= 256 * 1024 + 65535 + 8, `guest could send at most a buffer plus what the host took (${sent})`);
  assert.ok(h.stack.stats().bufferedBytes <= 256 * 1024);
  host.unblock();
  pump(h, [g]);
  assert.ok(g.peerWnd > 0, "draining reopened the window with an update");
  assert.equal(host.receivedBytes, sent);
});

test("net-tcp: the send side respects a zero window, probes it, and resumes when it opens", () => {
  const h = harness();
  const { g, host } = established(h, { rcvWindow: 4096, wscale: 0 });
  g.appPaused = true;
  host.h.onData(Buffer.alloc(20000, 3));
  pump(h, [g]);
  assert.equal(g.received, 4096, "only the window's worth went out");
  assert.equal(g.windowField(), 0);
  // The stack waits; its persist timer sends probes, each answered with the (still zero) window.
  const before = g.segmentsIn;
  h.clock.advance(1000);
  pump(h, [g]);
  assert.ok((h.stack.stats().events["tcp-window-probe"] ?? 0) >= 1, "window probe sent");
  assert.ok(g.segmentsIn > before);
  assert.equal(g.received, 4096);
  g.read();
  pump(h, [g]);
  for (let i = 0; i < 10 && g.received < 20000; i++) {
    g.read();
    pump(h, [g]);
  }
  assert.equal(g.received, 20000);
});

test("net-tcp: host bytes beyond the flow buffer pause the host side; acks resume it", () => {
  const h = harness();
  const { g, host } = established(h, { rcvWindow: 0, wscale: 0 });
  const ok = host.h.onData(Buffer.alloc(300 * 1024));
  void ok;
  assert.ok(host.paused, "a full send queue pauses the host reader");
  g.o.rcvWindow = 1 << 20;
  g.read();
  for (let i = 0; i < 100 && g.received < 300 * 1024; i++) {
    pump(h, [g]);
    g.read();
  }
  pump(h, [g]);
  assert.equal(g.received, 300 * 1024);
  assert.ok(!host.paused, "resumed");
});

test("net-tcp: lost data is retransmitted after the RTO with exponential backoff, then the flow is reset", () => {
  const h = harness();
  const { g, host } = established(h);
  host.h.onData(Buffer.from("hello"));
  const lost = drain(h);
  assert.equal(lost.length, 1);
  h.clock.advance(199);
  assert.equal(h.out.length, 0, "nothing before 200 ms");
  h.clock.advance(1);
  assert.equal(h.out.length, 1, "retransmitted at 200 ms");
  assert.equal(parseOut(h.out[0]!).tcp!.data.toString(), "hello");
  drain(h);
  h.clock.advance(399);
  assert.equal(h.out.length, 0, "backoff doubles");
  h.clock.advance(1);
  assert.equal(h.out.length, 1);
  pump(h, [g]);
  assert.equal(g.received, 5, "delivered once the guest gets it");
  // Now lose everything forever: the flow gives up with an RST and the host side is destroyed.
  host.h.onData(Buffer.from("again"));
  drain(h);
  h.clock.advance(30 * 60_000);
  const outs = drain(h).map((f) => parseOut(f).tcp!);
  assert.ok(outs.at(-1)!.flags & TCP_RST, "gave up with RST");
  assert.ok(host.destroyed);
  assert.equal(h.stack.stats().events["tcp-retransmit-timeout"], 1);
});

test("net-tcp: three duplicate ACKs trigger a fast retransmit of the first unacked segment", () => {
  const h = harness();
  const { g, host } = established(h, { mss: 1000 });
  host.h.onData(Buffer.alloc(4000, 9));
  const segs = drain(h).map((f) => parseOut(f).tcp!);
  assert.equal(segs.length, 4);
  // The guest lost the first; it acks rcv.nxt three times as the others arrive.
  for (let i = 0; i < 3; i++) g.send(g.frame(TCP_ACK));
  const re = drain(h).map((f) => parseOut(f).tcp!);
  assert.equal(re.length, 1);
  assert.equal(re[0]!.seq, segs[0]!.seq);
  assert.equal(h.stack.stats().events["tcp-fast-retransmit"], 1);
});

test("net-tcp: out-of-order, duplicate and overlapping guest segments give the right stream", () => {
  const h = harness();
  const { g, host } = established(h);
  const data = Buffer.from("abcdefghijklmnopqrstuvwxyz");
  const base = g.sndNxt;
  const seg = (from: number, to: number) => g.send(tcpFrame({ srcPort: 40000, dst: SERVER, dstPort: 80, seq: seqAdd(base, from), ack: g.rcvNxt, flags: TCP_ACK, data: data.subarray(from, to) }));
  seg(10, 20); // hole at 0-10: held
  seg(15, 26); // overlaps the held one
  assert.equal(host.receivedBytes, 0);
  seg(0, 5);
  seg(0, 5); // duplicate
  seg(3, 12); // overlap across the hole's edge
  pump(h, [g]);
  assert.equal(host.text(), data.toString());
  assert.ok((h.stack.stats().events["tcp-ooo-held"] ?? 0) >= 1);
});

test("net-tcp: blind RST and SYN protection (RFC 5961): only an exact RST resets; others get challenge ACKs", () => {
  const h = harness();
  const { g, host } = established(h);
  g.send(tcpFrame({ srcPort: 40000, dst: SERVER, dstPort: 80, seq: seqAdd(g.sndNxt, 100), flags: TCP_RST }));
  const ch = drain(h).map((f) => parseOut(f).tcp!);
  assert.equal(ch.length, 1);
  assert.equal(ch[0]!.flags, TCP_ACK, "challenge ACK for an in-window RST");
  g.send(tcpFrame({ srcPort: 40000, dst: SERVER, dstPort: 80, seq: seqAdd(g.sndNxt, 0x40000000), flags: TCP_RST }));
  assert.equal(drain(h).length, 0, "an out-of-window RST is ignored silently");
  g.send(tcpFrame({ srcPort: 40000, dst: SERVER, dstPort: 80, seq: seqAdd(g.sndNxt, 5), flags: TCP_SYN, mss: 1000 }));
  assert.equal(parseOut(drain(h)[0]!).tcp!.flags, TCP_ACK, "a SYN on an open flow gets a challenge ACK");
  assert.equal(h.stack.flows().length, 1, "still open");
  assert.equal(host.destroyed, undefined);
  g.rst();
  assert.equal(h.stack.flows().length, 0, "the exact RST resets");
  assert.ok(host.destroyed);
  assert.equal(h.stack.stats().events["tcp-rst-challenged"], 1);
});

test("net-tcp: a segment for no flow gets an RST; an ACK beyond what was sent gets an ACK and is dropped", () => {
  const h = harness();
  h.stack.receiveFrame(tcpFrame({ srcPort: 41000, dst: SERVER, dstPort: 80, seq: 5, ack: 77, flags: TCP_ACK }));
  const r = parseOut(drain(h)[0]!).tcp!;
  assert.equal(r.flags, TCP_RST);
  assert.equal(r.seq, 77);
  const { g } = established(h);
  g.send(tcpFrame({ srcPort: 40000, dst: SERVER, dstPort: 80, seq: g.sndNxt, ack: seqAdd(g.rcvNxt, 5000), flags: TCP_ACK }));
  assert.equal(parseOut(drain(h)[0]!).tcp!.flags, TCP_ACK);
  assert.equal(h.stack.stats().events["tcp-ack-unsent"], 1);
});

test("net-tcp: half-open and idle timeouts reset the flow", () => {
  const h = harness({ tcp: { idleTimeoutMs: 60_000 } });
  h.connector.autoConnect = false;
  const g = new GuestTcp(h, { localPort: 40000, remote: SERVER, remotePort: 80 });
  g.connect();
  h.clock.advance(30_000);
  pump(h, [g]);
  assert.ok(g.rstReceived, "handshake timeout RSTs the guest");
  assert.equal(h.stack.stats().tcp.halfOpen, 0);
  assert.ok(h.connector.last.destroyed, "and destroys the dial");
  h.connector.autoConnect = true;
  const { g: g2, host } = established(h, { localPort: 40005 });
  h.clock.advance(59_000);
  g2.send(g2.frame(TCP_ACK | TCP_PSH, Buffer.from("x")));
  g2.sndNxt = seqAdd(g2.sndNxt, 1);
  pump(h, [g2]);
  h.clock.advance(59_000);
  assert.equal(h.stack.flows().length, 1, "progress resets the idle clock");
  h.clock.advance(2000);
  pump(h, [g2]);
  assert.ok(g2.rstReceived);
  assert.ok(host.destroyed);
  assert.equal(h.stack.stats().events["tcp-idle-timeout"], 1);
});

test("net-tcp: connectToGuest opens a flow into the guest, both ways, and a refusal reaches the caller", () => {
  const h = harness({}, { isn: () => 0xfffffff0 });
  const g = new GuestTcp(h, { localPort: 8080, remote: ip("10.200.0.1"), remotePort: 0 });
  const events: string[] = [];
  const got: Buffer[] = [];
  const s = h.stack.connectToGuest(8080, {
    onConnect: () => events.push("connect"),
    onData: (d) => got.push(Buffer.from(d)),
    onDrain: () => events.push("drain"),
    onEnd: () => events.push("end"),
    onClose: (e) => events.push(`close:${e ? (e as { code?: string }).code : "clean"}`),
  });
  const syn = parseOut(h.out[0]!).tcp!;
  assert.equal(syn.flags, TCP_SYN);
  assert.equal(syn.seq, 0xfffffff0);
  assert.ok(syn.options.mss && syn.options.wscale !== undefined);
  (g.o as { remotePort: number }).remotePort = syn.srcPort;
  g.listen();
  pump(h, [g]);
  assert.deepEqual(events, ["connect"]);
  assert.ok(s.write(Buffer.from("ping")));
  pump(h, [g]);
  assert.equal(g.received, 4);
  g.send(g.frame(TCP_ACK | TCP_PSH, Buffer.from("pong")));
  g.sndNxt = seqAdd(g.sndNxt, 4);
  pump(h, [g]);
  assert.equal(Buffer.concat(got).toString(), "pong");
  s.end();
  pump(h, [g]);
  assert.ok(g.finReceived);
  g.fin();
  pump(h, [g]);
  // Our FIN was acked and the guest's arrived: the caller's side is done (TIME_WAIT lingers inside the stack).
  assert.deepEqual(events, ["connect", "end", "close:clean"]);
  assert.equal(h.stack.flows()[0]!.state, "TIME_WAIT");
  h.clock.advance(5000);
  assert.equal(h.stack.flows().length, 0);
  // Nothing listens on 9999: the guest answers RST.
  const ev2: string[] = [];
  h.stack.connectToGuest(9999, { onConnect: () => ev2.push("c"), onData: () => {}, onDrain: () => {}, onEnd: () => {}, onClose: (e) => ev2.push(String((e as { code?: string })?.code)) });
  const syn2 = parseOut(drain(h)[0]!).tcp!;
  h.stack.receiveFrame(tcpFrame({ srcPort: 9999, dst: ip("10.200.0.1"), dstPort: syn2.srcPort, seq: 0, ack: seqAdd(syn2.seq, 1), flags: TCP_RST | TCP_ACK }));
  assert.deepEqual(ev2, ["NET_CONNECTION_REFUSED"]);
});

test("net-tcp: the guest's FIN waits behind held bytes; nothing is lost when the host reads late", () => {
  const h = harness();
  const { g, host } = established(h);
  host.blocked = true;
  let sent = 0;
  while (sent < 100_000) {
    sent += g.pushData((n) => Buffer.alloc(n, 5), 100_000 - sent);
    pump(h, [g]);
  }
  g.fin();
  pump(h, [g]);
  assert.ok(!host.ended, "no end while bytes wait for the host");
  host.unblock();
  pump(h, [g]);
  assert.equal(host.receivedBytes, 100_000);
  assert.ok(host.ended, "end after the last byte");
});

function bulk(h: Harness, g: GuestTcp, host: FakeHostStream, total: number, dir: "up" | "down") {
  const pattern = Buffer.alloc((1 << 20) + 13);
  const r = prng(99);
  for (let i = 0; i < pattern.length; i++) pattern[i] = Math.floor(r() * 256);
  let pos = 0;
  const expect = createHash("sha256");
  const source = (n: number) => {
    const o = pos % pattern.length;
    const take = Math.min(n, pattern.length - o);
    pos += take;
    const b = pattern.subarray(o, o + take);
    expect.update(b);
    return b;
  };
  host.keepData = false;
  if (dir === "up") {
    while (pos < total) {
      g.pushData(source, total - pos);
      pump(h, [g]);
    }
    assert.equal(host.receivedBytes, total);
    assert.equal(host.hash.digest("hex"), expect.digest("hex"), "upload byte-exact");
  } else {
    let paused = false;
    const s = host;
    while (pos < total || g.received < total) {
      if (pos < total && !s.paused) {
        const chunk = source(Math.min(256 * 1024, total - pos));
        // copy: the stack keeps host chunks by reference until acked
        s.h.onData(Buffer.from(chunk));
      }
      pump(h, [g]);
      if (pos >= total && h.out.length === 0 && g.received < total) {
        if (paused) throw new Error(`stalled at ${g.received}`);
        paused = true;
      }
    }
    assert.equal(g.received, total);
    assert.equal(g.hash.digest("hex"), expect.digest("hex"), "download byte-exact");
  }
}

test("net-tcp: sequence wrap: ISNs at 2^32 - 100 both ways, 1 GiB up and 1 GiB down, byte-exact", () => {
  const GiB = 1 << 30;
  const h = harness({}, { isn: () => 0xffffff9c });
  const { g, host } = established(h, { iss: 0xffffff9c, mss: 65480, wscale: 7, rcvWindow: 4 << 20 });
  const t0 = performance.now();
  bulk(h, g, host, GiB, "up");
  const t1 = performance.now();
  bulk(h, g, host, GiB, "down");
  const t2 = performance.now();
  assert.equal(h.stack.stats().drops["tcp-bad-checksum"], undefined);
  assert.equal(h.stack.stats().bufferedBytes, 0);
  console.log(`# 1 GiB up in ${((t1 - t0) / 1000).toFixed(1)} s, 1 GiB down in ${((t2 - t1) / 1000).toFixed(1)} s`);
});

test("net-tcp: a backed-up link stops data segments (not ACKs) and outputDrained resumes every waiting flow", () => {
  const h = harness();
  const { g, host } = established(h, { mss: 1000 });
  h.linkBlocked.value = true;
  host.h.onData(Buffer.alloc(10_000, 1));
  assert.equal(h.out.length, 1, "one data segment went out, then output() said the link is full");
  pump(h, [g]);
  assert.equal(g.received, 1000);
  // Guest data is still acked while the link is blocked.
  g.send(g.frame(TCP_ACK | TCP_PSH, Buffer.from("hi")));
  g.sndNxt = seqAdd(g.sndNxt, 2);
  const acks = drain(h).map((f) => parseOut(f).tcp!);
  assert.ok(acks.length >= 1 && acks.every((t) => t.dataLen === 0));
  h.linkBlocked.value = false;
  h.stack.outputDrained();
  pump(h, [g]);
  assert.equal(g.received, 10_000, "resumed after the link drained");
});

test("net-tcp: a guest repeating out-of-window segments gets at most 20 ACKs a second (no ACK war)", () => {
  const h = harness();
  const { g } = established(h);
  for (let i = 0; i < 1000; i++) g.send(tcpFrame({ srcPort: 40000, dst: SERVER, dstPort: 80, seq: seqAdd(g.sndNxt, 0x10000000), ack: g.rcvNxt, flags: TCP_ACK, data: Buffer.from("x") }));
  assert.equal(drain(h).length, 20);
  assert.equal(h.stack.stats().events["tcp-invalid-ack-ratelimited"], 980);
  h.clock.advance(1000);
  g.send(tcpFrame({ srcPort: 40000, dst: SERVER, dstPort: 80, seq: seqAdd(g.sndNxt, 0x10000000), ack: g.rcvNxt, flags: TCP_ACK, data: Buffer.from("x") }));
  assert.equal(drain(h).length, 1, "a new second, a new budget");
});

test("net-tcp: a lost FIN is retransmitted; a guest FIN retransmission is re-acked in TIME_WAIT", () => {
  const h = harness();
  const { g, host } = established(h);
  host.h.onEnd();
  const fin = drain(h).map((f) => parseOut(f).tcp!);
  assert.equal(fin.length, 1);
  assert.ok(fin[0]!.flags & 0x01);
  h.clock.advance(200);
  const re = drain(h).map((f) => parseOut(f).tcp!);
  assert.equal(re.length, 1, "FIN retransmitted after the RTO");
  assert.equal(re[0]!.seq, fin[0]!.seq);
  g.onSegment(re[0]! as never);
  pump(h, [g]);
  g.fin();
  pump(h, [g]);
  assert.equal(h.stack.flows()[0]!.state, "TIME_WAIT");
  // The guest did not see our ACK and sends its FIN again.
  g.send(tcpFrame({ srcPort: 40000, dst: SERVER, dstPort: 80, seq: seqAdd(g.sndNxt, -1), ack: g.rcvNxt, flags: 0x11 }));
  const ack = drain(h).map((f) => parseOut(f).tcp!);
  assert.equal(ack.length, 1);
  assert.equal(ack[0]!.ack, g.sndNxt);
});

test("net-tcp: the stack-wide buffer budget refuses new flows when it is spent", () => {
  const h = harness({ caps: { totalBufferBytes: 300 * 1024 } });
  const { host } = established(h, { rcvWindow: 0, wscale: 0 });
  host.h.onData(Buffer.alloc(310 * 1024));
  assert.ok(h.stack.stats().bufferedBytes >= 300 * 1024);
  const g2 = new GuestTcp(h, { localPort: 40009, remote: SERVER, remotePort: 80 });
  g2.connect();
  pump(h, [g2]);
  assert.ok(g2.rstReceived);
  assert.equal(h.stack.stats().tcp.refused["tcp-buffer-cap"], 1);
});

test("net-tcp: receiveFrames coalesces a batch's ACKs to one per flow, acking everything", () => {
  const h = harness();
  const { g, host } = established(h, { mss: 1000 });
  const frames: Buffer[] = [];
  for (let i = 0; i < 10; i++) {
    frames.push(g.frame(TCP_ACK | TCP_PSH, Buffer.alloc(1000, i)));
    g.sndNxt = seqAdd(g.sndNxt, 1000);
  }
  h.stack.receiveFrames(frames);
  const acks = drain(h).map((f) => parseOut(f).tcp!);
  assert.equal(acks.length, 1);
  assert.equal(acks[0]!.ack, g.sndNxt);
  assert.equal(host.receivedBytes, 10_000);
});

test("net-tcp: a guest SYN without options gets MSS 536 segments and unscaled windows", () => {
  const h = harness();
  const g = new GuestTcp(h, { localPort: 40000, remote: SERVER, remotePort: 80, wscale: undefined });
  g.connect();
  // A SYN with no options at all: rebuild it without MSS.
  drain(h);
  h.stack.receiveFrame(tcpFrame({ srcPort: 40001, dst: SERVER, dstPort: 80, seq: 5000, flags: TCP_SYN, window: 65535 }));
  const synack = parseOut(drain(h)[0]!).tcp!;
  assert.equal(synack.options.wscale, undefined, "no window scale offered back");
  assert.ok(synack.window <= 65535);
  h.stack.receiveFrame(tcpFrame({ srcPort: 40001, dst: SERVER, dstPort: 80, seq: 5001, ack: seqAdd(synack.seq, 1), flags: TCP_ACK, window: 65535 }));
  const host = h.connector.streams.find((s) => s.target.guestPort === 40001)!;
  host.h.onData(Buffer.alloc(2000));
  const sizes = drain(h).map((f) => parseOut(f).tcp!.dataLen);
  assert.deepEqual(sizes, [536, 536, 536, 392]);
});

test("net-tcp: an abort with data in flight still resets the guest: its challenge ACK meets an exact RST", () => {
  const h = harness();
  const { g, host } = established(h, { mss: 1000 });
  host.h.onData(Buffer.alloc(3000, 1));
  const segs = drain(h);
  g.onSegment(parseOut(segs[0]!).tcp! as never); // the guest got only the first segment
  drain(h);
  host.h.onClose(new Error("upstream died"));
  const rst = parseOut(drain(h)[0]!).tcp!;
  assert.ok(rst.flags & TCP_RST);
  assert.notEqual(rst.seq, g.rcvNxt, "not where the guest is");
  // A Linux guest answers an inexact RST with a challenge ACK carrying its rcv.nxt:
  g.send(g.frame(TCP_ACK));
  const exact = parseOut(drain(h)[0]!).tcp!;
  assert.equal(exact.flags, TCP_RST);
  assert.equal(exact.seq, g.rcvNxt);
});

test("net-tcp: a batch's guest bytes reach the host as one write", () => {
  const h = harness();
  const { g, host } = established(h, { mss: 1460 });
  const frames: Buffer[] = [];
  for (let i = 0; i < 40; i++) {
    frames.push(g.frame(TCP_ACK | TCP_PSH, Buffer.alloc(1460, i)));
    g.sndNxt = seqAdd(g.sndNxt, 1460);
  }
  h.stack.receiveFrames(frames);
  assert.equal(host.received.length, 1, "one write for the batch");
  assert.equal(host.receivedBytes, 40 * 1460);
  assert.deepEqual([...host.received[0]!.subarray(1459, 1461)], [0, 1], "in order across the segment boundary");
});
