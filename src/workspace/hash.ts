/** Streaming sha256 of files, with an in-process cache keyed by (path, size, mtime, inode). */
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { stat } from "node:fs/promises";

const cache = new Map<string, { key: string; sha256: string }>();

export async function sha256File(path: string): Promise<string> {
  const st = await stat(path);
  const key = `${st.size}:${st.mtimeMs}:${st.ino}:${st.ctimeMs}`;
  const hit = cache.get(path);
  if (hit && hit.key === key) return hit.sha256;
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20 })) hash.update(chunk as Buffer);
  const sha256 = hash.digest("hex");
  cache.set(path, { key, sha256 });
  return sha256;
}

export function sha256Text(data: string | Uint8Array): string {
  return createHash("sha256").update(data).digest("hex");
}
