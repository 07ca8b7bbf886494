/**
 * Small filesystem helpers with the state dir's rules baked in: directories 0700, files 0600,
 * whole-file writes atomic (write a temp file in the same directory, fsync, rename), so a reader
 * sees the old content or the new one, never half of either.
 */
import { randomBytes } from "node:crypto";
import { mkdir, open, rename, rm, chmod } from "node:fs/promises";
import { basename, dirname, join } from "node:path";

export const DIR_MODE = 0o700;
export const FILE_MODE = 0o600;

/** mkdir -p with 0700 on every directory we create (existing ones are left as they are). */
export async function ensureDir(path: string): Promise<void> {
  await mkdir(path, { recursive: true, mode: DIR_MODE });
}

/** Ensure a directory exists and is exactly 0700 (for directories we own outright). */
export async function ensurePrivateDir(path: string): Promise<void> {
  await ensureDir(path);
  await chmod(path, DIR_MODE);
}

/** A temp name next to `path`, so the final rename stays on one filesystem. */
export function tempPathFor(path: string): string {
  return join(dirname(path), `.${basename(path)}.${process.pid}.${randomBytes(4).toString("hex")}.tmp`);
}

export async function writeFileAtomic(path: string, data: string | Uint8Array, mode = FILE_MODE): Promise<void> {
  const tmp = tempPathFor(path);
  const fh = await open(tmp, "wx", mode);
  try {
    await fh.writeFile(data);
    await fh.sync();
  } catch (e) {
    await fh.close().catch(() => {});
    await rm(tmp, { force: true });
    throw e;
  }
  await fh.close();
  try {
    await rename(tmp, path);
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
}

export async function writeJsonAtomic(path: string, value: unknown): Promise<void> {
  await writeFileAtomic(path, `${JSON.stringify(value, null, 2)}\n`);
}

export function isErrno(e: unknown, code: string): boolean {
  return typeof e === "object" && e !== null && (e as NodeJS.ErrnoException).code === code;
}
