/**
 * Hostile-guest cases of research/network.md (e) at the TCP layer: SYN floods against the caps (20),
 * many established flows (21), zero window forever / a 1 GiB window / never acking (22), a slowloris
 * sender (23), malformed segments (19). Each asserts what the guest sees and what the stack counted.
 */
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { test } from "node:test";
import assert from "node:assert/strict";
import { GuestTcp, TCP_ACK, TCP_PSH, TCP_RST, TCP_SYN, drain, guestAddr, harness, ip, parseOut, pump, tcpFrame } from "../helpers/net-guest.ts";
import { seqAdd } from "../../src/net/seq.ts";
import { ETH_HEADER_BYTES, IPV4_HEADER_BYTES } from "../../src/net/wire.ts";
import { finishChecksum, pseudoHeaderSum, sum16 } from "../../src/net/checksum.ts";

const SERVER = ip("93.184.216.34");


/** A full GC, so heap readings measure what is retained (node:test runs without --expose-gc). */
function collectGarbage(): void {
  setFlagsFromString("--expose-gc");
  (runInNewContext("gc") as () => void)();
}

test("net-hostile: SYN flood (case 20): 10^5 SYNs over many ports; half-open capped at 64, then RST; memory bounded", () => {
  const h = harness();
  h.connector.autoConnect = false; // host dials never complete: every flow stays half-open
  const heap0 = process.memoryUsage().heapUsed;
  let rsts = 0;
  for (let i = 0; i < 100_000; i++) {
    h.stack.receiveFrame(tcpFrame({ srcPort: 1024 + (i % 50000), dst: SERVER, dstPort: 1000 + Math.floor(i / 50000), seq: i * 7919, flags: TCP_SYN, mss: 1460 }));
    for (const f of drain(h)) if (parseOut(f).tcp!.flags & TCP_RST) rsts++;
  }
  const st = h.stack.stats();
  assert.equal(st.tcp.halfOpen, 64);
  assert.equal(h.connector.streams.length, 64, "at most 64 host dials at once");
  assert.equal(st.tcp.refused["tcp-half-open-cap"], 100_000 - 64);
  assert.equal(rsts, 100_000 - 64, "every refused SYN got an RST");
  assert.ok(process.memoryUsage().heapUsed - heap0 < 48 << 20, "heap growth bounded");
  // The handshake timeout frees them; new flows are accepted again.
  h.clock.advance(30_000);
  assert.equal(h.stack.stats().tcp.halfOpen, 0);
  h.connector.autoConnect = true;
  const g = new GuestTcp(h, { localPort: 50000, remote: SERVER, remotePort: 443 });
  drain(h);
  g.connect();
  pump(h, [g]);
  assert.equal(g.state, "ESTABLISHED");
});

test("net-hostile: many established connections (case 21): the 257th is refused and counted", () => {
  const h = harness();
  const gs: GuestTcp[] = [];
  for (let i = 0; i < 300; i++) {
    const g = new GuestTcp(h, { localPort: 20000 + i, remote: SERVER, remotePort: 80 });
    g.connect();
    pump(h, [g]);
    gs.push(g);
  }
  assert.equal(gs.filter((g) => g.state === "ESTABLISHED").length, 256);
  assert.equal(gs.filter((g) => g.rstReceived).length, 44);
  assert.equal(h.stack.stats().tcp.refused["tcp-flow-cap"], 44);
  // Closing one frees a slot.
  gs[0]!.rst();
  const g = new GuestTcp(h, { localPort: 30000, remote: SERVER, remotePort: 80 });
  g.connect();
  pump(h, [g]);
  assert.equal(g.state, "ESTABLISHED");
});

test("net-hostile: zero window forever (case 22): buffer capped, persist probes back off, idle timeout closes; other flows keep going", () => {
  const h = harness({ tcp: { idleTimeoutMs: 120_000 } });
  const stuck = new GuestTcp(h, { localPort: 40000, remote: SERVER, remotePort: 80, rcvWindow: 0, wscale: 0 });
  stuck.connect();
  pump(h, [stuck]);
  const host = h.connector.last;
  for (let i = 0; i < 100 && !host.paused; i++) host.h.onData(Buffer.alloc(64 * 1024));
  assert.ok(host.paused, "the host reader was paused");
  assert.ok(h.stack.stats().bufferedBytes <= 256 * 1024 + 64 * 1024);
  const other = new GuestTcp(h, { localPort: 40001, remote: SERVER, remotePort: 80 });
  other.connect();
  pump(h, [stuck, other]);
  const otherHost = h.connector.last;
  otherHost.h.onData(Buffer.alloc(100_000, 1));
  pump(h, [stuck, other]);
  assert.equal(other.received, 100_000, "another flow is unaffected");
  const probeTimes: number[] = [];
  for (let t = 0; t < 110_000; t += 100) {
    h.clock.advance(100);
    const before = h.out.length;
    pump(h, [stuck, other]);
    if (h.stack.stats().events["tcp-window-probe"] !== probeTimes.length) probeTimes.push(t);
    void before;
  }
  assert.ok(probeTimes.length >= 4, `probes: ${probeTimes}`);
  const gaps = probeTimes.slice(1).map((t, i) => t - probeTimes[i]!);
  assert.ok(gaps.every((g, i) => i === 0 || g >= gaps[i - 1]!), `probe gaps never shrink: ${gaps}`);
  h.clock.advance(20_000);
  pump(h, [stuck, other]);
  assert.ok(stuck.rstReceived, "idle timeout reset the stuck flow");
  assert.ok(host.destroyed);
  assert.equal(h.stack.stats().events["tcp-idle-timeout"], 2, "the idle other flow too");
});

test("net-hostile: a 1 GiB window with wscale 14 and never acking (case 22): in-flight bounded by the flow buffer, then reset", () => {
  const h = harness();
  const g = new GuestTcp(h, { localPort: 40000, remote: SERVER, remotePort: 80, wscale: 14, rcvWindow: 0xffff * 2 ** 14 });
  g.connect();
  pump(h, [g]);
  g.send(g.frame(TCP_ACK)); // a window update with the scaled 1 GiB window
  const host = h.connector.last;
  let offered = 0;
  for (let i = 0; i < 200 && !host.paused; i++) {
    host.h.onData(Buffer.alloc(64 * 1024));
    offered += 64 * 1024;
  }
  const sent = drain(h).reduce((n, f) => n + parseOut(f).tcp!.dataLen, 0);
  assert.ok(host.paused);
  assert.ok(sent <= 256 * 1024 + 64 * 1024, `in flight ${sent}`);
  assert.ok(h.stack.stats().bufferedBytes <= 256 * 1024 + 64 * 1024);
  assert.ok(offered < 1 << 20);
  // Never acked: retransmissions back off to the cap and the flow is reset.
  h.clock.advance(20 * 60_000);
  assert.ok(host.destroyed);
  assert.equal(h.stack.stats().events["tcp-retransmit-timeout"], 1);
  assert.equal(h.stack.stats().bufferedBytes, 0);
});

test("net-hostile: slowloris (case 23): one byte per second keeps a bounded flow; the bytes arrive in order", () => {
  const h = harness();
  const g = new GuestTcp(h, { localPort: 40000, remote: SERVER, remotePort: 443 });
  g.connect();
  pump(h, [g]);
  const host = h.connector.last;
  for (let i = 0; i < 300; i++) {
    g.send(g.frame(TCP_ACK | TCP_PSH, Buffer.from([i & 255])));
    g.sndNxt = seqAdd(g.sndNxt, 1);
    pump(h, [g]);
    h.clock.advance(1000);
  }
  assert.equal(host.receivedBytes, 300);
  assert.deepEqual([...Buffer.concat(host.received)].slice(0, 5), [0, 1, 2, 3, 4]);
  assert.equal(h.stack.stats().bufferedBytes, 0);
  // (The 5 s ClientHello sniff timeout belongs to the egress mediator, a HostConnector.)
});

test("net-hostile: malformed TCP (case 19): data offset beyond the segment, options overrun, bad checksum, port 0", () => {
  const h = harness();
  const fix = (f: Buffer) => {
    const o = ETH_HEADER_BYTES + IPV4_HEADER_BYTES;
    const len = f.length - o;
    f.writeUInt16BE(0, o + 16);
    f.writeUInt16BE(finishChecksum(pseudoHeaderSum(f.readUInt32BE(26), f.readUInt32BE(30), 6, len) + sum16(f, o, len)), o + 16);
    return f;
  };
  const base = () => tcpFrame({ srcPort: 1234, dst: SERVER, dstPort: 80, seq: 1, flags: TCP_SYN, mss: 1460 });
  const doff = base();
  doff[ETH_HEADER_BYTES + IPV4_HEADER_BYTES + 12] = 0xf0;
  h.stack.receiveFrame(fix(doff));
  const overrun = base();
  overrun[ETH_HEADER_BYTES + IPV4_HEADER_BYTES + 21] = 40; // MSS option claims 40 bytes
  h.stack.receiveFrame(fix(overrun));
  const badMssLen = base();
  badMssLen[ETH_HEADER_BYTES + IPV4_HEADER_BYTES + 21] = 3;
  h.stack.receiveFrame(fix(badMssLen));
  const sum = base();
  sum[sum.length - 1] = sum[sum.length - 1]! ^ 0x55;
  h.stack.receiveFrame(sum);
  const port0 = tcpFrame({ srcPort: 0, dst: SERVER, dstPort: 80, seq: 1, flags: TCP_SYN });
  h.stack.receiveFrame(port0);
  const short = base().subarray(0, ETH_HEADER_BYTES + IPV4_HEADER_BYTES + 10);
  short.writeUInt16BE(30, ETH_HEADER_BYTES + 2);
  h.stack.receiveFrame(short);
  const d = h.stack.stats().drops;
  assert.equal(d["tcp-malformed"], 2);
  assert.equal(d["tcp-bad-options"], 2);
  assert.equal(d["tcp-bad-checksum"], 1);
  assert.equal(d["ipv4-bad-checksum"], 1, "the truncated frame fails the IP checksum first");
  assert.equal(h.out.length + h.connector.streams.length, 0);
  void guestAddr;
});

test("net-hostile: 10^5 one-byte segments: out-of-order holds are capped in count, in-order bytes pack into blocks", () => {
  const h = harness();
  const g = new GuestTcp(h, { localPort: 40000, remote: SERVER, remotePort: 80 });
  g.connect();
  pump(h, [g]);
  const host = h.connector.last;
  host.blocked = true;
  // Out of order: every other byte, never the first.
  const t0 = performance.now();
  for (let i = 0; i < 100_000; i++)
    h.stack.receiveFrames([tcpFrame({ srcPort: 40000, dst: SERVER, dstPort: 80, seq: seqAdd(g.sndNxt, 2 + 2 * (i % 60000)), ack: g.rcvNxt, flags: TCP_ACK, data: Buffer.from([1]) })]);
  assert.ok(performance.now() - t0 < 20_000, "linear, not quadratic");
  assert.ok(h.stack.flows()[0]!.bufferedBytes <= 64);
  assert.ok((h.stack.stats().events["tcp-ooo-dropped"] ?? 0) > 90_000);
  drain(h);
  // In order, one byte each, into a host that does not read: bounded by the window, few objects.
  // Retained memory, not garbage: collect before both readings (10^5 frames leave ~25 MiB of garbage).
  collectGarbage();
  const heap0 = process.memoryUsage().heapUsed;
  let seq = g.sndNxt;
  for (let i = 0; i < 100_000; i++) {
    h.stack.receiveFrames([tcpFrame({ srcPort: 40000, dst: SERVER, dstPort: 80, seq, ack: g.rcvNxt, flags: TCP_ACK, data: Buffer.from([i & 255]) })]);
    seq = seqAdd(seq, 1);
  }
  drain(h);
  assert.ok(h.stack.flows()[0]!.bufferedBytes <= 256 * 1024);
  collectGarbage();
  assert.ok(process.memoryUsage().heapUsed - heap0 < 24 << 20, `heap growth ${(process.memoryUsage().heapUsed - heap0) >> 20} MiB`);
  host.unblock();
  const got = Buffer.concat(host.received);
  assert.equal(got.length, 100_000, "every byte, once");
  assert.equal(got[0], 0);
  assert.equal(got[99_999], 99_999 & 255);
});
