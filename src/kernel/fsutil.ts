/** Small file helpers for the state directory: atomic writes with restrictive modes, hashing. */
import { createHash, randomBytes } from "node:crypto";
import { createReadStream } from "node:fs";
import { chmod, mkdir, open, rename, rm } from "node:fs/promises";
import { dirname, join } from "node:path";

/** mkdir -p with mode 0700 on every directory this call creates. */
export async function ensureDir(path: string): Promise<void> {
  await mkdir(path, { recursive: true, mode: 0o700 });
}

/** Write `data` to `path` atomically (temp file in the same directory, fsync, rename), mode 0600 by default. */
export async function writeFileAtomic(path: string, data: Buffer | string, mode = 0o600): Promise<void> {
  await ensureDir(dirname(path));
  const tmp = join(dirname(path), `.tmp-${process.pid}-${randomBytes(4).toString("hex")}`);
  try {
    const fh = await open(tmp, "wx", mode);
    try {
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await chmod(tmp, mode);
    await rename(tmp, path);
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
}

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
