/**
 * The `-netdev stream` framing codec and the checksum: byte-at-a-time and many-per-chunk decoding,
 * the length limit checked before buffering, and the fast checksum cross-checked against a plain
 * RFC 1071 loop at every alignment.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { MAX_STREAM_FRAME_BYTES, StreamFrameDecoder, encodeStreamFrame, streamFrameHeader } from "../../src/net/framing.ts";
import { checksum, finishChecksum, sum16 } from "../../src/net/checksum.ts";
import { isMicroagentError } from "../../src/contract/errors.ts";
import { prng } from "../helpers/prng.ts";

function frames(n: number, seed: number): Buffer[] {
  const r = prng(seed);
  return Array.from({ length: n }, (_, i) => Buffer.alloc(14 + Math.floor(r() * 2000), i & 255));
}

test("net-framing: many frames per chunk and one byte at a time decode to the same frames", () => {
  const fs = frames(50, 1);
  const wire = Buffer.concat(fs.map(encodeStreamFrame));
  const all = new StreamFrameDecoder().push(wire);
  assert.deepEqual(all, fs);
  const d = new StreamFrameDecoder();
  const got: Buffer[] = [];
  for (let i = 0; i < wire.length; i++) got.push(...d.push(wire.subarray(i, i + 1)));
  assert.deepEqual(got, fs);
  assert.equal(d.bufferedBytes, 0);
  // Random splits, including inside the 4-byte header.
  const r = prng(2);
  const d2 = new StreamFrameDecoder();
  const got2: Buffer[] = [];
  for (let o = 0; o < wire.length; ) {
    const n = 1 + Math.floor(r() * 700);
    got2.push(...d2.push(wire.subarray(o, o + n)));
    o += n;
  }
  assert.deepEqual(got2, fs);
});

test("net-framing: a frame inside one chunk is a view, not a copy", () => {
  const f = Buffer.alloc(100, 3);
  const wire = encodeStreamFrame(f);
  const [out] = new StreamFrameDecoder().push(wire);
  assert.equal(out!.buffer, wire.buffer);
});

test("net-framing: a declared length above 65550 fails before buffering, with a typed error, forever", () => {
  const d = new StreamFrameDecoder();
  const hdr = Buffer.alloc(4);
  hdr.writeUInt32BE(MAX_STREAM_FRAME_BYTES + 1);
  assert.throws(() => d.push(hdr), (e: unknown) => isMicroagentError(e) && e.code === "NET_FRAME_TOO_LARGE" && e.kind === "permanent");
  assert.equal(d.bufferedBytes, 0);
  assert.ok(d.failed);
  assert.throws(() => d.push(encodeStreamFrame(Buffer.alloc(20))), { code: "NET_FRAME_TOO_LARGE" });
  // The largest legal frame passes.
  const big = Buffer.alloc(MAX_STREAM_FRAME_BYTES, 1);
  assert.equal(new StreamFrameDecoder().push(encodeStreamFrame(big))[0]!.length, MAX_STREAM_FRAME_BYTES);
  assert.throws(() => streamFrameHeader(MAX_STREAM_FRAME_BYTES + 1), RangeError);
});

test("net-framing: zero-length frames are skipped", () => {
  const wire = Buffer.concat([streamFrameHeader(0), encodeStreamFrame(Buffer.alloc(20, 9)), streamFrameHeader(0)]);
  const out = new StreamFrameDecoder().push(wire);
  assert.equal(out.length, 1);
});

function naive(buf: Uint8Array, off: number, len: number): number {
  let s = 0;
  for (let i = 0; i < len; i += 2) s += (buf[off + i]! << 8) | (i + 1 < len ? buf[off + i + 1]! : 0);
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return ~s & 0xffff;
}

test("net-framing: the word-sum checksum equals the RFC 1071 loop at every alignment and length", () => {
  const r = prng(3);
  const big = Buffer.alloc(70000);
  for (let i = 0; i < big.length; i++) big[i] = Math.floor(r() * 256);
  for (let i = 0; i < 3000; i++) {
    const off = Math.floor(r() * 64);
    const len = i < 200 ? i : Math.floor(r() * 66000);
    assert.equal(checksum(big, off, len), naive(big, off, len), `off ${off} len ${len}`);
  }
  // All-ones data (the fold's worst case) and a split sum of two even-length pieces.
  const ones = Buffer.alloc(65534, 0xff);
  assert.equal(checksum(ones, 0, ones.length), naive(ones, 0, ones.length));
  assert.equal(finishChecksum(sum16(big, 1, 1000) + sum16(big, 1001, 3001)), naive(big, 1, 4001));
  // Throughput, for the record (research/network.md (d): checksum >= 10 Gbit/s).
  const t0 = performance.now();
  let x = 0;
  for (let i = 0; i < 2000; i++) x ^= checksum(big, i & 7, 65520);
  const gbit = (2000 * 65520 * 8) / ((performance.now() - t0) / 1000) / 1e9;
  console.log(`# checksum: ${gbit.toFixed(1)} Gbit/s over 64 KiB frames (${x})`);
});
