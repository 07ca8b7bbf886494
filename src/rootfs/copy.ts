/**
 * Copying a built image to `rootfs build --out` without filling its holes. An ext4 image is mostly
 * unallocated (the headroom, a file of zeros the image carries); a plain copy on a filesystem
 * without reflinks writes every one of those bytes (a 16 GiB base became 16 GiB of disk).
 *
 * First a reflink (btrfs, XFS, APFS: instant, shares the blocks). Otherwise the data is copied block
 * by block and blocks of zeros are skipped, leaving holes, then the file is extended to the full
 * size: `cp --sparse=always` semantics, in plain Node (no SEEK_DATA there), portable to macOS.
 */
import { constants as fsConstants, copyFileSync } from "node:fs";
import { open, type FileHandle } from "node:fs/promises";

const CHUNK = 1024 * 1024;
const BLOCK = 4096;
const ZERO_CHUNK = Buffer.alloc(CHUNK);
const ZERO_BLOCK = ZERO_CHUNK.subarray(0, BLOCK);

/** How the copy was made. */
export type SparseCopyMethod = "reflink" | "sparse";

/** Copy `src` to `dst` (which must not exist), keeping holes. */
export async function copySparse(src: string, dst: string): Promise<SparseCopyMethod> {
  try {
    copyFileSync(src, dst, fsConstants.COPYFILE_EXCL | fsConstants.COPYFILE_FICLONE_FORCE);
    return "reflink";
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    // No reflink here (ext4, tmpfs, across filesystems): fall through to the block copy. Anything
    // else (the source is missing, the target exists, no permission) is a real error.
    if (code !== "ENOTSUP" && code !== "EOPNOTSUPP" && code !== "EXDEV" && code !== "EINVAL" && code !== "ENOSYS" && code !== "ENOTTY") throw e;
  }
  const input = await open(src, "r");
  try {
    const output = await open(dst, "wx", 0o600);
    try {
      const size = (await input.stat()).size;
      const buf = Buffer.allocUnsafe(CHUNK);
      for (let pos = 0; pos < size; ) {
        const { bytesRead } = await input.read(buf, 0, Math.min(CHUNK, size - pos), pos);
        if (bytesRead === 0) break;
        const chunk = buf.subarray(0, bytesRead);
        if (!chunk.equals(ZERO_CHUNK.subarray(0, bytesRead))) await writeNonZeroRuns(output, chunk, pos);
        pos += bytesRead;
      }
      await output.truncate(size);
      await output.sync();
    } finally {
      await output.close();
    }
  } finally {
    await input.close();
  }
  return "sparse";
}

/** Write the runs of non-zero 4 KiB blocks of `chunk` at their offsets (zero blocks stay holes). */
async function writeNonZeroRuns(output: FileHandle, chunk: Buffer, base: number): Promise<void> {
  let runStart = -1;
  for (let at = 0; at < chunk.length; at += BLOCK) {
    const block = chunk.subarray(at, Math.min(chunk.length, at + BLOCK));
    const zero = block.equals(ZERO_BLOCK.subarray(0, block.length));
    if (!zero && runStart === -1) runStart = at;
    if (zero && runStart !== -1) {
      await writeAll(output, chunk.subarray(runStart, at), base + runStart);
      runStart = -1;
    }
  }
  if (runStart !== -1) await writeAll(output, chunk.subarray(runStart), base + runStart);
}

async function writeAll(output: FileHandle, data: Buffer, position: number): Promise<void> {
  for (let done = 0; done < data.length; ) {
    const { bytesWritten } = await output.write(data, done, data.length - done, position + done);
    done += bytesWritten;
  }
}
