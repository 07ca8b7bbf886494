/**
 * Credit back to the guest follows the host consumer: an iterated exec credits a chunk only once the
 * consumer is done with it, and workload output is credited only when every listener's promise
 * settled. So a host client that stops reading stops the guest (no credit) instead of buffering.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { duplexPair, type Duplex } from "node:stream";
import { GuestChannel } from "../../src/channel/guest-channel.ts";
import { encodeFrame, FrameDecoder, type Frame, type FrameTypeName } from "../../src/channel/frame.ts";

const HELLO = { type: "hello", protocol: 1, initVersion: "test", capabilities: ["exec"], maxFrameBytes: 65536, initialWindowBytes: 65536, pid1: false, state: "awaiting-config" };

function frame(type: FrameTypeName, stream: number, payload: unknown, channel = 0): Buffer {
  const p = Buffer.isBuffer(payload) ? payload : Buffer.from(JSON.stringify(payload));
  return encodeFrame({ type, stream, channel, payload: p }, 1 << 24);
}

async function connected(): Promise<{ ch: GuestChannel; guest: Duplex; received: Frame[] }> {
  const [host, guest] = duplexPair();
  const received: Frame[] = [];
  const dec = new FrameDecoder({ maxPayloadBytes: 1 << 24 });
  guest.on("data", (c: Buffer) => received.push(...dec.push(c)));
  guest.write(frame("hello", 0, HELLO));
  const ch = await GuestChannel.connect(host, { helloTimeoutMs: 2000, windowBytes: 8192, maxFrameBytes: 4096 });
  return { ch, guest, received };
}

const credited = (received: Frame[], stream: number) =>
  received.filter((f) => f.type === "credit" && f.stream === stream).reduce((n, f) => n + f.payload.readUInt32BE(0), 0);
const tick = () => new Promise((r) => setImmediate(r));

test("channel credit: an iterated exec credits a chunk only after the consumer finished with it", async () => {
  const { ch, guest, received } = await connected();
  const h = ch.exec({ argv: ["yes"] });
  await tick();
  const id = received.find((f) => f.type === "open")!.stream;
  const it = h[Symbol.asyncIterator]();
  guest.write(frame("data", id, Buffer.alloc(1000, 0x79), 1));
  guest.write(frame("data", id, Buffer.alloc(1000, 0x79), 1));
  const first = await it.next();
  assert.equal(first.value?.data.length, 1000);
  await tick();
  assert.equal(credited(received, id), 0, "nothing is credited while the consumer holds the first chunk");
  const second = it.next();
  await second;
  await tick();
  assert.equal(credited(received, id), 1000, "pulling the next chunk credits the previous one");
  ch.close();
});

test("channel credit: workload output is credited once every listener's promise settled", async () => {
  const { ch, guest, received } = await connected();
  let release!: () => void;
  const held = new Promise<void>((r) => (release = r));
  const seen: number[] = [];
  ch.onWorkloadOutput((c) => {
    seen.push(c.data.length);
    return held;
  });
  guest.write(frame("open", 2, { kind: "workload" }));
  guest.write(frame("data", 2, Buffer.alloc(3000, 0x61), 1));
  await tick();
  await tick();
  assert.deepEqual(seen, [3000]);
  assert.equal(credited(received, 2), 0, "held while the listener's client has no room");
  release();
  await tick();
  await tick();
  assert.equal(credited(received, 2), 3000);
  // A listener that returns nothing (no attacher waiting) is credited at once.
  const { ch: ch2, guest: g2, received: r2 } = await connected();
  ch2.onWorkloadOutput(() => undefined);
  g2.write(frame("open", 2, { kind: "workload" }));
  g2.write(frame("data", 2, Buffer.alloc(500, 0x61), 1));
  await tick();
  await tick();
  assert.equal(credited(r2, 2), 500);
  ch.close();
  ch2.close();
});
