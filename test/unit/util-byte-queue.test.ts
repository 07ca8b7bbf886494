import { test } from "node:test";
import assert from "node:assert/strict";
import { ByteQueue } from "../../src/util/byte-queue.ts";

test("byte queue: takes across chunk boundaries in order, views within one chunk", () => {
  const q = new ByteQueue();
  q.push(Buffer.from("abc"));
  q.push(new Uint8Array(0));
  q.push(Uint8Array.from([0x64, 0x65]));
  q.push(Buffer.from("fghij"));
  assert.equal(q.length, 10);
  const first = q.take(2);
  assert.equal(first.toString(), "ab");
  assert.equal(q.take(4).toString(), "cdef", "spans three chunks");
  assert.equal(q.take(0).length, 0);
  assert.equal(q.take(4).toString(), "ghij");
  assert.equal(q.length, 0);
  assert.throws(() => q.take(1), RangeError);
});

test("byte queue: a uint32 split over chunks reads as one, and clear drops everything", () => {
  const q = new ByteQueue();
  const n = Buffer.alloc(4);
  n.writeUInt32BE(0xdeadbeef);
  q.push(n.subarray(0, 1));
  q.push(n.subarray(1, 3));
  q.push(Buffer.concat([n.subarray(3), n]));
  assert.equal(q.takeUInt32BE(), 0xdeadbeef);
  assert.equal(q.takeUInt32BE(), 0xdeadbeef, "whole in one chunk");
  q.push(Buffer.from("xyz"));
  q.clear();
  assert.equal(q.length, 0);
});
