/**
 * The HostConnector seam against real sockets: a `net.Socket` adapter (as the supervisor will write
 * one) and a real server on 127.0.0.1. The guest endpoint uploads 16 MiB, the server hashes it and
 * sends 16 MiB back, then both sides close; byte counts and hashes must match, with the host socket's
 * own backpressure (write() false / 'drain', pause/resume) in the loop. Loopback only.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { createServer, connect } from "node:net";
import type { AddressInfo, Socket } from "node:net";
import { GuestTcp, harness, ip, pump } from "../helpers/net-guest.ts";
import type { ByteStream, ByteStreamHandlers, HostConnector, TcpTarget } from "../../src/net/types.ts";

/** Dials 127.0.0.1:port whatever the guest asked for (tests reach loopback only). */
class LoopbackConnector implements HostConnector {
  readonly port: number;
  sockets: Socket[] = [];
  pauses = 0;
  constructor(port: number) {
    this.port = port;
  }
  connect(_target: TcpTarget, h: ByteStreamHandlers): ByteStream {
    const sock = connect({ host: "127.0.0.1", port: this.port, allowHalfOpen: true });
    this.sockets.push(sock);
    let error: Error | undefined;
    sock.on("connect", () => h.onConnect());
    sock.on("data", (d: Buffer) => h.onData(d));
    sock.on("drain", () => h.onDrain());
    sock.on("end", () => h.onEnd());
    sock.on("error", (e) => (error = e));
    sock.on("close", () => h.onClose(error));
    return {
      write: (b) => sock.write(b),
      end: () => sock.end(),
      destroy: (e) => sock.destroy(e),
      pause: () => {
        this.pauses++;
        sock.pause();
      },
      resume: () => sock.resume(),
    };
  }
}

const tick = () => new Promise((r) => setImmediate(r));

test("net-socket: 16 MiB each way between the guest endpoint and a real loopback server, byte-exact", async () => {
  const SIZE = 16 << 20;
  const down = Buffer.alloc(SIZE);
  for (let i = 0; i < SIZE; i += 4) down.writeUInt32LE((i * 2654435761) >>> 0, i);
  const serverGot = createHash("sha256");
  let serverBytes = 0;
  const server = createServer({ allowHalfOpen: true }, (s) => {
    s.on("data", (d: Buffer) => {
      serverGot.update(d);
      serverBytes += d.length;
    });
    s.on("end", () => s.end(down));
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  const port = (server.address() as AddressInfo).port;
  const connector = new LoopbackConnector(port);
  const h = harness({}, { connector });
  try {
    const g = new GuestTcp(h, { localPort: 40000, remote: ip("93.184.216.34"), remotePort: 80, mss: 65480, rcvWindow: 64 * 1024 });
    g.connect();
    for (let i = 0; i < 1000 && g.state !== "ESTABLISHED"; i++) {
      await tick();
      pump(h, [g]);
    }
    assert.equal(g.state, "ESTABLISHED", "SYN-ACK after the real connect");
    const up = Buffer.alloc(SIZE);
    for (let i = 0; i < SIZE; i += 4) up.writeUInt32LE((i * 40503) >>> 0, i);
    const upHash = createHash("sha256").update(up).digest("hex");
    let sent = 0;
    let off = 0;
    const source = (n: number) => {
      const b = up.subarray(off, off + n);
      off += b.length;
      return b;
    };
    // The guest takes 64 KiB windows, so the server outruns it and the flow must pause the real socket.
    const deadline = Date.now() + 60_000;
    while (sent < SIZE && Date.now() < deadline) {
      sent += g.pushData(source, SIZE - sent);
      pump(h, [g]);
      await tick();
      pump(h, [g]);
    }
    g.fin();
    // Hold the guest back at first (no pumping: it reads nothing), so the server's 16 MiB must fill the
    // flow's buffer and the stack must pause the real socket; then let the guest drain it all.
    const holdUntil = Date.now() + 5_000;
    while (connector.pauses === 0 && Date.now() < holdUntil) await new Promise((r) => setTimeout(r, 5));
    while (!g.finReceived && Date.now() < deadline) {
      await tick();
      pump(h, [g]);
    }
    assert.equal(serverBytes, SIZE);
    assert.equal(serverGot.digest("hex"), upHash, "upload byte-exact at the real server");
    assert.equal(g.received, SIZE);
    assert.equal(g.hash.digest("hex"), createHash("sha256").update(down).digest("hex"), "download byte-exact in the guest");
    assert.ok(g.finReceived, "the server's end reached the guest as FIN");
    assert.ok(connector.pauses > 0, "the flow paused the real socket when its send queue filled");
    for (let i = 0; i < 100 && h.stack.flows().length > 0; i++) {
      h.clock.advance(1000);
      await tick();
      pump(h, [g]);
    }
    assert.equal(h.stack.flows().length, 0, "the flow closed cleanly");
    assert.ok(connector.sockets[0]!.destroyed || connector.sockets[0]!.readableEnded);
  } finally {
    h.stack.close();
    for (const s of connector.sockets) s.destroy();
    await new Promise((r) => server.close(r));
  }
});
