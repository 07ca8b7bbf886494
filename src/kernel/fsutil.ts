/** Hashing helpers for kernel files. */
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";

export async function sha256File(path: string): Promise<string> {
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest("hex");
}

export function sha256Bytes(data: Buffer | string): string {
  return createHash("sha256").update(data).digest("hex");
}

export const SHA256_RE = /^[0-9a-f]{64}$/;

/** Accept "sha256:HEX" or "HEX" in any case; undefined when it is not a sha256. */
export function normalizeSha256(input: string): string | undefined {
  const v = input.trim().toLowerCase().replace(/^sha256:/, "");
  return SHA256_RE.test(v) ? v : undefined;
}
