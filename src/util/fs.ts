/**
 * Small filesystem helpers with the state dir's rules baked in: directories 0700, files 0600,
 * whole-file writes atomic (write a temp file in the same directory, fsync, rename), so a reader
 * sees the old content or the new one, never half of either.
 */
import { randomBytes } from "node:crypto";
import { chmod, lstat, mkdir, open, readFile, rename, rm, stat } from "node:fs/promises";
import { CommonErrors } from "../contract/errors.ts";
import { basename, dirname, join } from "node:path";

export const DIR_MODE = 0o700;
export const FILE_MODE = 0o600;

/** mkdir -p with 0700 on every directory we create (existing ones are left as they are). */
export async function ensureDir(path: string): Promise<void> {
  await mkdir(path, { recursive: true, mode: DIR_MODE });
}

/**
 * Ensure a directory exists, belongs to us and is exactly 0700 (for directories we own outright,
 * e.g. the socket runtime dir under a shared /tmp). Refuses a symlink, a directory owned by another
 * user, and a parent another user could rename it out of (owned by someone other than us or root,
 * or writable by others without the sticky bit): sockets in such a place could be swapped.
 */
export async function ensurePrivateDir(path: string): Promise<void> {
  await ensureDir(path);
  const uid = typeof process.getuid === "function" ? process.getuid() : undefined;
  const st = await lstat(path);
  if (!st.isDirectory() || (uid !== undefined && st.uid !== uid)) {
    throw CommonErrors.PERMISSION_DENIED({
      message: `${path} is ${st.isSymbolicLink() ? "a symlink" : !st.isDirectory() ? "not a directory" : `owned by uid ${st.uid}, not by us (uid ${uid})`}: refusing to keep private files there`,
      remediation: `Remove ${path} (someone else may have created it), or point XDG_RUNTIME_DIR / --state-dir at a directory you own.`,
    });
  }
  const parent = await lstat(dirname(path));
  const parentUnsafe = uid !== undefined && ((parent.uid !== uid && parent.uid !== 0) || ((parent.mode & 0o022) !== 0 && (parent.mode & 0o1000) === 0));
  if (parentUnsafe) {
    throw CommonErrors.PERMISSION_DENIED({
      message: `${dirname(path)} (owner uid ${parent.uid}, mode ${(parent.mode & 0o7777).toString(8)}) lets another user replace ${path}`,
      remediation: `Remove ${dirname(path)} if you did not create it, or point XDG_RUNTIME_DIR / --state-dir at a directory you own.`,
    });
  }
  if ((st.mode & 0o777) !== DIR_MODE) await chmod(path, DIR_MODE);
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

/** True when something exists at `path` (any error, not only ENOENT, counts as absent). */
export async function pathExists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

/** The file's text, or undefined when it does not exist (other errors are thrown). */
export async function readTextIfExists(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, "utf8");
  } catch (e) {
    if (isErrno(e, "ENOENT")) return undefined;
    throw e;
  }
}
