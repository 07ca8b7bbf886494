/** SHA-256 helpers: streaming file hashes, byte hashes, and the hex form we accept from users. */
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { stat } from "node:fs/promises";

export const SHA256_RE = /^[0-9a-f]{64}$/;

/** Lower-case hex sha256 of a file, streamed in 1 MiB chunks. */
export async function sha256File(path: string): Promise<string> {
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20 })) hash.update(chunk as Buffer);
  return hash.digest("hex");
}

const cache = new Map<string, { key: string; sha256: string }>();

/**
 * `sha256File` with an in-process cache keyed by (path, size, mtime, inode, ctime): for files hashed
 * again and again in one process (a workspace's boot artifacts) that nobody rewrites meanwhile.
 */
export async function sha256FileCached(path: string): Promise<string> {
  const st = await stat(path);
  const key = `${st.size}:${st.mtimeMs}:${st.ino}:${st.ctimeMs}`;
  const hit = cache.get(path);
  if (hit && hit.key === key) return hit.sha256;
  const sha256 = await sha256File(path);
  cache.set(path, { key, sha256 });
  return sha256;
}

/** Lower-case hex sha256 of bytes or a UTF-8 string. */
export function sha256Bytes(data: string | Uint8Array): string {
  return createHash("sha256").update(data).digest("hex");
}

/** Accept "sha256:HEX" or "HEX" in any case; undefined when it is not a sha256. */
export function normalizeSha256(input: string): string | undefined {
  const v = input.trim().toLowerCase().replace(/^sha256:/, "");
  return SHA256_RE.test(v) ? v : undefined;
}
