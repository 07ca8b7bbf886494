/**
 * The host side against a scripted (and hostile) guest over an in-memory duplex pair: handshake
 * failures, window overruns, bad messages, and a seeded fuzz of well-framed garbage. Every failure
 * must surface as one typed error; nothing may throw out of the event loop.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { duplexPair } from "node:stream";
import type { Duplex } from "node:stream";
import { GuestChannel } from "../../src/channel/guest-channel.ts";
import { encodeFrame, FrameDecoder, FRAME_TYPES } from "../../src/channel/frame.ts";
import type { Frame, FrameTypeName } from "../../src/channel/frame.ts";
import { isMicroagentError } from "../../src/contract/errors.ts";
import type { MicroagentError } from "../../src/contract/errors.ts";
import { prng } from "../helpers/prng.ts";

const HELLO = {
  type: "hello",
  protocol: 1,
  initVersion: "test",
  capabilities: ["exec"],
  maxFrameBytes: 65536,
  initialWindowBytes: 65536,
  pid1: false,
  state: "awaiting-config",
};

function frame(type: FrameTypeName, stream: number, payload: unknown, channel = 0): Buffer {
  const p = Buffer.isBuffer(payload) ? payload : Buffer.from(JSON.stringify(payload));
  return encodeFrame({ type, stream, channel, payload: p }, 1 << 24);
}

/** A scripted guest: records what the host sends. */
function fakeGuest(): { host: Duplex; guest: Duplex; received: Frame[] } {
  const [host, guest] = duplexPair();
  const received: Frame[] = [];
  const dec = new FrameDecoder({ maxPayloadBytes: 1 << 24 });
  guest.on("data", (c: Buffer) => received.push(...dec.push(c)));
  return { host, guest, received };
}

async function connected(): Promise<{ ch: GuestChannel; guest: Duplex; received: Frame[] }> {
  const { host, guest, received } = fakeGuest();
  guest.write(frame("hello", 0, HELLO));
  const ch = await GuestChannel.connect(host, { helloTimeoutMs: 2000, windowBytes: 4096, maxFrameBytes: 4096 });
  return { ch, guest, received };
}

function isCode(code: string): (e: unknown) => boolean {
  return (e: unknown) => isMicroagentError(e) && e.code === code;
}

test("channel hostile guest: a guest speaking another protocol version is refused clearly on both sides", async () => {
  const { host, guest, received } = fakeGuest();
  guest.write(frame("hello", 0, { ...HELLO, protocol: 9 }));
  await assert.rejects(GuestChannel.connect(host, { helloTimeoutMs: 2000 }), (e: unknown) => {
    assert.ok(isMicroagentError(e) && e.code === "CHANNEL_INCOMPATIBLE_VERSION");
    assert.match(e.message, /protocol 9, this host speaks 1/);
    assert.equal(e.kind, "unsupported");
    return true;
  });
  const goaway = received.find((f) => f.type === "goaway");
  assert.ok(goaway, "the host tells the guest why");
  assert.match(goaway.payload.toString(), /INCOMPATIBLE_VERSION/);
});

test("channel hostile guest: the host asks for a hello and skips stale frames meant for a previous host", async () => {
  const { host, guest, received } = fakeGuest();
  guest.write(frame("data", 3, Buffer.from("old output"), 1));
  guest.write(frame("msg", 0, { type: "result", exitCode: 1 }));
  guest.write(frame("hello", 0, HELLO));
  const ch = await GuestChannel.connect(host, { helloTimeoutMs: 2000 });
  assert.equal(ch.hello.initVersion, "test");
  assert.equal(received[0]?.type, "hello", "the host's first frame requests a hello");
  assert.equal(received[1]?.type, "welcome");
  ch.close();
});

test("channel hostile guest: an exec whose guest never answers fails at the backstop after its timeout", async () => {
  const { host, guest } = fakeGuest();
  guest.write(frame("hello", 0, HELLO));
  const ch = await GuestChannel.connect(host, { helloTimeoutMs: 2000, execBackstopMs: 50 });
  const t0 = Date.now();
  await assert.rejects(Promise.resolve(ch.exec({ argv: ["hang"], timeoutMs: 20 })), (e: unknown) => isCode("CHANNEL_TIMEOUT")(e) && /no result 70 ms after/.test((e as Error).message));
  assert.ok(Date.now() - t0 < 2000);
  assert.equal(ch.isOpen, true, "one hung exec does not end the channel");
  ch.close();
});

test("channel hostile guest: no hello within the timeout is a typed timeout", async () => {
  const { host } = fakeGuest();
  await assert.rejects(GuestChannel.connect(host, { helloTimeoutMs: 50 }), isCode("CHANNEL_TIMEOUT"));
});

test("channel hostile guest: a malformed hello is a protocol violation", async () => {
  const { host, guest } = fakeGuest();
  guest.write(frame("hello", 0, { ...HELLO, maxFrameBytes: "lots" }));
  await assert.rejects(GuestChannel.connect(host, { helloTimeoutMs: 2000 }), (e: unknown) => isCode("CHANNEL_PROTOCOL_VIOLATION")(e) && /maxFrameBytes/.test((e as Error).message));
});

test("channel hostile guest: an oversize frame header ends the session before any buffering", async () => {
  const { ch, guest } = await connected();
  const h = Buffer.alloc(12);
  h.writeUInt32BE(100 * 1024 * 1024, 0);
  h[8] = FRAME_TYPES.msg;
  guest.write(h);
  const err = await ch.closed;
  assert.equal(err.code, "CHANNEL_PROTOCOL_VIOLATION");
  assert.match(err.message, /limit is 4096/);
});

test("channel hostile guest: overrunning a stream's window fails the exec with a violation", async () => {
  const { ch, guest, received } = await connected();
  const h = ch.exec({ argv: ["x"] });
  await new Promise((r) => setImmediate(r));
  const open = received.find((f) => f.type === "open");
  assert.ok(open);
  // The host offered 4096 bytes; send 2 x 3000 without waiting for credit. Iterate so nothing is acked.
  const it = h[Symbol.asyncIterator]();
  // Both in one write, so they arrive before the consumer could acknowledge the first.
  guest.write(Buffer.concat([frame("data", open.stream, Buffer.alloc(3000), 1), frame("data", open.stream, Buffer.alloc(3000), 1)]));
  await assert.rejects(
    (async () => {
      for (;;) {
        const r = await it.next();
        if (r.done) return;
        await new Promise((res) => setTimeout(res, 50)); // a slow consumer
      }
    })(),
    (e: unknown) => isCode("CHANNEL_PROTOCOL_VIOLATION")(e) && /overran/.test((e as Error).message),
  );
});

test("channel hostile guest: frames for a stream never opened, and bad exit messages, are violations", async () => {
  const a = await connected();
  a.guest.write(frame("data", 99, Buffer.from("x"), 1));
  assert.match((await a.ch.closed).message, /never opened/);

  const b = await connected();
  const h = b.ch.exec({ argv: ["x"] });
  await new Promise((r) => setImmediate(r));
  b.guest.write(frame("msg", 1, { type: "exit", status: "exploded" }));
  await assert.rejects(Promise.resolve(h), isCode("CHANNEL_PROTOCOL_VIOLATION"));
});

test("channel hostile guest: the guest closing the channel fails pending calls with peer-closed and the death description", async () => {
  const { host, guest } = fakeGuest();
  guest.write(frame("hello", 0, HELLO));
  const ch = await GuestChannel.connect(host, { helloTimeoutMs: 2000, describeDeath: () => "kernel panic - not syncing" });
  const h = ch.exec({ argv: ["sleep", "100"] });
  guest.end();
  guest.destroy();
  await assert.rejects(Promise.resolve(h), (e: unknown) => {
    assert.ok(isCode("CHANNEL_PEER_CLOSED")(e));
    assert.equal((e as MicroagentError).details?.logTail, "kernel panic - not syncing");
    return true;
  });
});

test("channel hostile guest: seeded fuzz of well-framed garbage never escapes as an untyped error", async () => {
  const types = Object.keys(FRAME_TYPES) as FrameTypeName[];
  const jsonish = [
    { type: "exit", status: "exited", exitCode: 0, stdoutTruncated: false, stderrTruncated: false, startedAt: "a", exitedAt: "b" },
    { type: "result", exitCode: 300 },
    { type: "ready" },
    { type: "pong", id: 1 },
    { type: "boot-failed", stage: "setup", message: "m" },
    { kind: "workload" },
    { type: "workload-started", pid: 1, startedAt: "x" },
    "not an object",
    [1, 2, 3],
  ];
  const uncaught: unknown[] = [];
  const onUncaught = (e: unknown) => uncaught.push(e);
  process.on("uncaughtException", onUncaught);
  try {
    for (let seed = 1; seed <= 150; seed++) {
      const rnd = prng(seed);
      const { ch, guest } = await connected();
      const handles = [ch.exec({ argv: ["a"] }), ch.exec({ argv: ["b"] })];
      for (const hd of handles) Promise.resolve(hd).catch(() => {});
      for (let i = 0; i < 20 && ch.isOpen; i++) {
        const type = types[Math.floor(rnd() * types.length)]!;
        const stream = type === "hello" || type === "welcome" || type === "goaway" ? 0 : Math.floor(rnd() * 6);
        const channel = type === "data" || type === "eof" ? Math.floor(rnd() * 3) : 0;
        let payload: Buffer;
        if (type === "credit") payload = Buffer.from([0, 0, Math.floor(rnd() * 256), 0]);
        else if (type === "eof") payload = Buffer.alloc(0);
        else if (rnd() < 0.6) payload = Buffer.from(JSON.stringify(jsonish[Math.floor(rnd() * jsonish.length)]));
        else payload = Buffer.alloc(Math.floor(rnd() * 5000), Math.floor(rnd() * 256));
        if (stream === 0 && (type === "open" || type === "data" || type === "eof" || type === "credit" || type === "close")) continue;
        guest.write(encodeFrame({ type, stream, channel, payload }, 1 << 20));
        await new Promise((r) => setImmediate(r));
      }
      ch.close();
      const reason = await ch.closed;
      assert.ok(isMicroagentError(reason), `seed ${seed}`);
    }
  } finally {
    process.off("uncaughtException", onUncaught);
  }
  assert.deepEqual(uncaught, []);
});

