/**
 * Digest and size verification of blob bytes as they stream by. Every blob we keep passed through a
 * `DigestVerifier`: more bytes than the descriptor declares abort at once (the excess is never
 * written), fewer bytes or a different sha256 fail at the end, and the caller deletes the temp file.
 */
import { createHash, type Hash } from "node:crypto";
import type { Readable } from "node:stream";
import { sha256Bytes } from "../util/hash.ts";
import { ImageErrors } from "./errors.ts";

export interface ExpectedBlob {
  /** `sha256:<hex>` */
  digest: string;
  /** Declared size in bytes. */
  size: number;
}

export class DigestVerifier {
  readonly expected: ExpectedBlob;
  private hash: Hash;
  private count = 0;

  constructor(expected: ExpectedBlob) {
    if (!expected.digest.startsWith("sha256:")) {
      throw ImageErrors.IMAGE_MEDIA_TYPE_UNSUPPORTED({ message: `digest algorithm of ${expected.digest} is not supported (only sha256)` });
    }
    this.expected = expected;
    this.hash = createHash("sha256");
  }

  /** Bytes accepted so far. */
  get bytes(): number {
    return this.count;
  }

  /** Start over (the server ignored a Range request and sent the whole blob again). */
  reset(): void {
    this.hash = createHash("sha256");
    this.count = 0;
  }

  /** Account for `chunk`; throws IMAGE_SIZE_MISMATCH before accepting a byte past the declared size. */
  update(chunk: Uint8Array): void {
    if (this.count + chunk.length > this.expected.size) {
      throw ImageErrors.IMAGE_SIZE_MISMATCH({
        message: `blob ${this.expected.digest} is bigger than its declared ${this.expected.size} bytes; cut off at ${this.expected.size} and rejected`,
        details: { digest: this.expected.digest, declaredSize: this.expected.size },
      });
    }
    this.hash.update(chunk);
    this.count += chunk.length;
  }

  /** The stream ended: check the length and the digest. */
  finish(): void {
    if (this.count !== this.expected.size) {
      throw ImageErrors.IMAGE_SIZE_MISMATCH({
        message: `blob ${this.expected.digest} is truncated: received ${this.count} of ${this.expected.size} bytes`,
        details: { digest: this.expected.digest, declaredSize: this.expected.size, receivedBytes: this.count },
      });
    }
    const actual = `sha256:${this.hash.digest("hex")}`;
    if (actual !== this.expected.digest) {
      throw ImageErrors.IMAGE_DIGEST_MISMATCH({
        message: `blob content does not match its digest: expected ${this.expected.digest}, got ${actual}`,
        details: { expected: this.expected.digest, actual },
      });
    }
  }
}

/** Verify a whole stream without keeping it (for tests and checks of existing files). */
export async function verifyStream(source: Readable, expected: ExpectedBlob): Promise<void> {
  const v = new DigestVerifier(expected);
  try {
    for await (const chunk of source) v.update(chunk as Uint8Array);
  } finally {
    source.destroy();
  }
  v.finish();
}

export function sha256Digest(data: Uint8Array | string): string {
  return `sha256:${sha256Bytes(data)}`;
}
