/**
 * The byte queue under the TCP buffers: random pushes, copies, drops and takes against a plain
 * concatenated reference, including packed small copies.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { ChunkQueue } from "../../src/net/chunks.ts";
import { prng } from "../helpers/prng.ts";

test("net-chunks: random push/pushCopy/copyOut/drop/take/shift agree with a reference buffer", () => {
  const r = prng(0xc4);
  const q = new ChunkQueue();
  let ref = Buffer.alloc(0);
  let v = 0;
  for (let i = 0; i < 20_000; i++) {
    const op = r();
    if (op < 0.35) {
      const n = r() < 0.7 ? 1 + Math.floor(r() * 20) : Math.floor(r() * 20000);
      const b = Buffer.alloc(n);
      for (let k = 0; k < n; k++) b[k] = v++ & 255;
      if (r() < 0.5) q.pushCopy(b);
      else q.push(b);
      ref = Buffer.concat([ref, b]);
    } else if (op < 0.6 && ref.length > 0) {
      const off = Math.floor(r() * ref.length);
      const n = Math.floor(r() * (ref.length - off + 1));
      const out = Buffer.alloc(n);
      q.copyOut(off, n, out, 0);
      assert.ok(out.equals(ref.subarray(off, off + n)), `copyOut(${off}, ${n}) at step ${i}`);
    } else if (op < 0.75 && ref.length > 0) {
      const n = Math.floor(r() * (ref.length + 1));
      q.drop(n);
      ref = ref.subarray(n);
    } else if (ref.length > 0) {
      const n = 1 + Math.floor(r() * ref.length);
      const got = r() < 0.5 ? q.take(n) : q.shift(n);
      assert.ok(got.equals(ref.subarray(0, got.length)) && got.length <= n && got.length > 0, `take/shift at step ${i}`);
      ref = ref.subarray(got.length);
    }
    assert.equal(q.length, ref.length);
  }
});
