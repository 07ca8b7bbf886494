import { test } from "node:test";
import assert from "node:assert/strict";
import { encodeFrame, FrameDecoder, FRAME_HEADER_BYTES, FRAME_TYPES } from "../../src/channel/frame.ts";
import type { Frame, FrameTypeName } from "../../src/channel/frame.ts";
import { isMicroagentError } from "../../src/contract/errors.ts";
import { prng } from "../helpers/prng.ts";

const MAX = 64 * 1024;

function sample(): Frame[] {
  return [
    { type: "hello", stream: 0, channel: 0, payload: Buffer.from('{"type":"hello"}') },
    { type: "open", stream: 1, channel: 0, payload: Buffer.from('{"kind":"exec"}') },
    { type: "data", stream: 1, channel: 1, payload: Buffer.from("stdout bytes") },
    { type: "data", stream: 1, channel: 2, payload: Buffer.alloc(5000, 7) },
    { type: "data", stream: 1, channel: 0, payload: Buffer.alloc(0) },
    { type: "eof", stream: 1, channel: 1, payload: Buffer.alloc(0) },
    { type: "credit", stream: 1, channel: 0, payload: Buffer.from([0, 0, 16, 0]) },
    { type: "msg", stream: 0, channel: 0, payload: Buffer.from('{"type":"ready"}') },
    { type: "close", stream: 1, channel: 0, payload: Buffer.alloc(0) },
    { type: "goaway", stream: 0, channel: 0, payload: Buffer.from('{"code":"X","message":"y"}') },
  ];
}

function expectViolation(fn: () => unknown, match: RegExp): void {
  assert.throws(fn, (e: unknown) => isMicroagentError(e) && e.code === "CHANNEL_PROTOCOL_VIOLATION" && match.test(e.message));
}

test("channel frame: header layout is length, stream, type, channel, reserved", () => {
  const b = encodeFrame({ type: "data", stream: 7, channel: 2, payload: Buffer.from("ab") }, MAX);
  assert.equal(b.length, FRAME_HEADER_BYTES + 2);
  assert.deepEqual([...b.subarray(0, 12)], [0, 0, 0, 2, 0, 0, 0, 7, FRAME_TYPES.data, 2, 0, 0]);
});

test("channel frame: many frames in one chunk decode in order", () => {
  const frames = sample();
  const wire = Buffer.concat(frames.map((f) => encodeFrame(f, MAX)));
  const got = new FrameDecoder({ maxPayloadBytes: MAX }).push(wire);
  assert.deepEqual(got, frames);
});

test("channel frame: byte-at-a-time decoding yields the same frames", () => {
  const frames = sample();
  const wire = Buffer.concat(frames.map((f) => encodeFrame(f, MAX)));
  const dec = new FrameDecoder({ maxPayloadBytes: MAX });
  const got: Frame[] = [];
  for (let i = 0; i < wire.length; i++) got.push(...dec.push(wire.subarray(i, i + 1)));
  assert.deepEqual(got, frames);
  assert.equal(dec.bufferedBytes, 0);
});

test("channel frame: an oversize length is rejected from the header alone, before buffering", () => {
  const dec = new FrameDecoder({ maxPayloadBytes: 1024 });
  const h = Buffer.alloc(12);
  h.writeUInt32BE(0xffffffff, 0);
  h.writeUInt32BE(1, 4);
  h[8] = FRAME_TYPES.data;
  h[9] = 1;
  expectViolation(() => dec.push(h), /4294967295-byte payload; the limit is 1024/);
  assert.equal(dec.bufferedBytes, 0);
  // The failure is sticky: the decoder never resumes mid-stream.
  expectViolation(() => dec.push(Buffer.alloc(1)), /limit is 1024/);
  assert.equal(dec.failed, true);
});

test("channel frame: malformed headers are protocol violations", () => {
  const cases: Array<[string, (h: Buffer) => void, RegExp]> = [
    ["unknown type", (h) => (h[8] = 42), /unknown frame type 42/],
    ["type zero", (h) => (h[8] = 0), /unknown frame type 0/],
    ["reserved bytes", (h) => (h[11] = 1), /reserved header bytes/],
    ["data on stream 0", (h) => h.writeUInt32BE(0, 4), /need a stream other than 0/],
    ["channel 3", (h) => (h[9] = 3), /channel 3 does not exist/],
  ];
  for (const [name, mutate, re] of cases) {
    const h = encodeFrame({ type: "data", stream: 3, channel: 1, payload: Buffer.alloc(0) }, MAX);
    mutate(h);
    expectViolation(() => new FrameDecoder({ maxPayloadBytes: MAX }).push(h), re);
    assert.ok(name);
  }
  const credit = encodeFrame({ type: "msg", stream: 3, channel: 0, payload: Buffer.alloc(3) }, MAX);
  credit[8] = FRAME_TYPES.credit;
  expectViolation(() => new FrameDecoder({ maxPayloadBytes: MAX }).push(credit), /exactly 4 bytes/);
  const hello = encodeFrame({ type: "msg", stream: 5, channel: 0, payload: Buffer.alloc(0) }, MAX);
  hello[8] = FRAME_TYPES.hello;
  expectViolation(() => new FrameDecoder({ maxPayloadBytes: MAX }).push(hello), /hello frames belong to stream 0/);
});

test("channel frame: the encoder refuses payloads over the peer's maximum and invalid frames", () => {
  expectViolation(() => encodeFrame({ type: "data", stream: 1, channel: 1, payload: Buffer.alloc(2048) }, 1024), /accepts at most 1024/);
  expectViolation(() => encodeFrame({ type: "credit", stream: 1, channel: 0, payload: Buffer.alloc(2) }, 1024), /exactly 4 bytes/);
});

test("channel frame: seeded fuzz — mutated streams yield frames or one typed error, never a crash or unbounded buffer", () => {
  const types = Object.keys(FRAME_TYPES) as FrameTypeName[];
  for (let seed = 1; seed <= 400; seed++) {
    const rnd = prng(seed);
    const frames: Frame[] = [];
    for (let i = 0; i < 1 + Math.floor(rnd() * 12); i++) {
      const type = types[Math.floor(rnd() * types.length)]!;
      const control = type === "hello" || type === "welcome" || type === "goaway";
      const stream = control ? 0 : 1 + Math.floor(rnd() * 9);
      const channel = type === "data" || type === "eof" ? Math.floor(rnd() * 3) : 0;
      const len = type === "credit" ? 4 : type === "eof" ? 0 : Math.floor(rnd() * 3000);
      frames.push({ type, stream: type === "msg" && rnd() < 0.5 ? 0 : stream, channel, payload: Buffer.alloc(len, Math.floor(rnd() * 256)) });
    }
    const wire = Buffer.concat(frames.map((f) => encodeFrame(f, MAX)));
    // Mutate: flip bytes, truncate, or splice random bytes.
    const mutations = Math.floor(rnd() * 6);
    for (let m = 0; m < mutations; m++) {
      const at = Math.floor(rnd() * wire.length);
      wire[at] = Math.floor(rnd() * 256);
    }
    const max = 4096;
    const dec = new FrameDecoder({ maxPayloadBytes: max });
    let off = 0;
    try {
      while (off < wire.length) {
        const n = 1 + Math.floor(rnd() * 700);
        for (const f of dec.push(wire.subarray(off, off + n))) {
          assert.ok(f.payload.length <= max, `seed ${seed}: payload over max`);
          assert.ok(types.includes(f.type));
        }
        off += n;
        assert.ok(dec.bufferedBytes <= FRAME_HEADER_BYTES + max + 700, `seed ${seed}: decoder buffered ${dec.bufferedBytes} bytes`);
      }
    } catch (e) {
      assert.ok(isMicroagentError(e) && e.code === "CHANNEL_PROTOCOL_VIOLATION", `seed ${seed}: unexpected error ${String(e)}`);
    }
  }
});
