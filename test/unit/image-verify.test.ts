import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { isMicroagentError } from "../../src/contract/errors.ts";
import { ImageStore } from "../../src/image/store.ts";
import { DigestVerifier, sha256Digest, verifyStream } from "../../src/image/verify.ts";

const data = Buffer.from("the quick brown fox jumps over the lazy dog\n".repeat(1000));
const good = { digest: sha256Digest(data), size: data.length };

/** The same bytes in chunks of `n`, to check chunking never changes the verdict. */
function chunked(buf: Buffer, n: number): Readable {
  const parts: Buffer[] = [];
  for (let i = 0; i < buf.length; i += n) parts.push(buf.subarray(i, i + n));
  return Readable.from(parts);
}

const code = (c: string, m?: RegExp) => (e: unknown) => isMicroagentError(e) && e.code === c && (!m || m.test(e.message));

test("image-verify: a matching stream passes in any chunking", async () => {
  for (const n of [1, 7, 512, 65536]) await verifyStream(chunked(data, n), good);
});

test("image-verify: truncated, oversize and wrong-digest streams fail with distinct codes", async () => {
  await assert.rejects(verifyStream(chunked(data.subarray(0, data.length - 1), 100), good), code("IMAGE_SIZE_MISMATCH", /truncated: received 43999 of 44000/));
  await assert.rejects(verifyStream(chunked(Buffer.concat([data, Buffer.from("x")]), 100), good), code("IMAGE_SIZE_MISMATCH", /bigger than its declared 44000/));
  const tampered = Buffer.from(data);
  tampered[100] = 0x41;
  await assert.rejects(verifyStream(chunked(tampered, 100), good), code("IMAGE_DIGEST_MISMATCH", /expected sha256:/));
});

test("image-verify: an oversize chunk is refused before a byte of it is accepted", () => {
  const v = new DigestVerifier({ digest: good.digest, size: 10 });
  v.update(Buffer.alloc(6));
  assert.throws(() => v.update(Buffer.alloc(5)), code("IMAGE_SIZE_MISMATCH"));
  assert.equal(v.bytes, 6);
});

test("image-verify: the store keeps only verified blobs and leaves no temp files behind", async () => {
  const dir = await mkdtemp(join(tmpdir(), "microagent-image-verify-"));
  try {
    const store = new ImageStore(dir);
    await store.init();
    const tampered = Buffer.from(data);
    tampered[0] = 0;
    await assert.rejects(store.putStream(chunked(tampered, 1000), good), code("IMAGE_DIGEST_MISMATCH"));
    await assert.rejects(store.putStream(chunked(data.subarray(0, 10), 1000), good), code("IMAGE_SIZE_MISMATCH"));
    await assert.rejects(store.putStream(chunked(Buffer.concat([data, data]), 1000), good), code("IMAGE_SIZE_MISMATCH"));
    assert.equal(await store.hasBlob(good.digest), false);
    assert.deepEqual(await readdir(store.tmpDir), []);
    const path = await store.putStream(chunked(data, 1000), good);
    assert.equal(path, store.blobPath(good.digest));
    assert.deepEqual(await store.readBlob(good.digest), data);
    assert.deepEqual(await readdir(store.tmpDir), []);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
