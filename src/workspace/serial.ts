/** Reading the serial console log: whole, a bounded tail, or followed as it grows. */
import { open, readFile, stat } from "node:fs/promises";
import { setTimeout as sleep } from "node:timers/promises";
import { isErrno } from "../util/fs.ts";
import { sanitizeTerminalText } from "../util/terminal.ts";

/** Where the supervisor moves a full serial.log (one predecessor is kept; see src/supervisor/serial-log.ts). */
export function rotatedLogPath(path: string): string {
  return `${path}.1`;
}

/** The whole available log: the rotated part, then the current file (empty when neither exists). */
export async function readRotatedLog(path: string): Promise<Buffer> {
  const read = (p: string) =>
    readFile(p).catch((e: unknown) => {
      if (isErrno(e, "ENOENT")) return Buffer.alloc(0);
      throw e;
    });
  // Current first: a rotation between the two reads then loses nothing (at worst repeats a part).
  const current = await read(path);
  const rotated = await read(rotatedLogPath(path));
  return Buffer.concat([rotated, current]);
}

/** The last `maxBytes` of a file as text ("" when missing), cut at a line start when possible. */
export async function readTail(path: string, maxBytes = 4096): Promise<string> {
  let fh;
  try {
    fh = await open(path, "r");
  } catch (e) {
    if (isErrno(e, "ENOENT")) return "";
    throw e;
  }
  try {
    const { size } = await fh.stat();
    const want = Math.min(size, maxBytes);
    const buf = Buffer.alloc(want);
    await fh.read(buf, 0, want, size - want);
    let text = buf.toString("utf8");
    if (want < size) {
      const nl = text.indexOf("\n");
      if (nl >= 0 && nl < text.length - 1) text = text.slice(nl + 1);
    }
    return text;
  } finally {
    await fh.close();
  }
}

/**
 * The last non-empty lines of a text, for one-line details: escape sequences removed and other control
 * characters replaced (the text is the guest's, and details are printed on terminals).
 */
export function lastLines(text: string, count: number): string[] {
  const clean = sanitizeTerminalText(text.replace(/\r/g, ""));
  return clean
    .split("\n")
    .map((l) => l.trimEnd())
    .filter((l) => l.trim() !== "")
    .slice(-count);
}

export interface FollowBytesOptions {
  pollMs?: number;
  /** Start at this byte offset (default 0: whole file first). */
  fromOffset?: number;
  /** Checked after each poll that found nothing new: return true to stop. */
  shouldStop?: () => Promise<boolean>;
  signal?: AbortSignal | undefined;
  /**
   * Where the writer moves the file when it rotates it. When the followed file is replaced and this
   * path now holds it (same inode), its unread end is yielded before the new file.
   */
  rotatedPath?: string;
  /** Called when the file shrank or was replaced (a new boot rewrote it): what follows is read from its start. */
  onRestart?: () => void;
}

/** Yield the file's content then every appended chunk, until `shouldStop` says so or `signal` aborts. */
export async function* followBytes(path: string, options: FollowBytesOptions = {}): AsyncGenerator<Buffer> {
  const pollMs = options.pollMs ?? 100;
  let offset = options.fromOffset ?? 0;
  let ino: number | undefined;
  for (;;) {
    if (options.signal?.aborted) return;
    // Size, inode and bytes all come from one open handle: a stat of the path followed by a separate
    // open could see the file before a rotation and read the one after it.
    let fh: Awaited<ReturnType<typeof open>> | undefined;
    try {
      fh = await open(path, "r");
    } catch (e) {
      if (!isErrno(e, "ENOENT")) throw e;
    }
    try {
      const st = fh ? await fh.stat() : undefined;
      const size = st?.size ?? 0;
      const nowIno = st?.ino;
      if (ino !== undefined && nowIno !== undefined && nowIno !== ino) {
        // Replaced: rotated (finish the old file from its new name) or rewritten by a new boot.
        if (options.rotatedPath) yield* readRest(options.rotatedPath, ino, offset);
        offset = 0;
      }
      if (nowIno !== undefined) ino = nowIno;
      // A missing file is not a truncation: the writer is between moving serial.log away and creating
      // the next one (a rotation), and the rotated file is finished from its new name once it appears.
      if (fh && size < offset) {
        offset = 0; // truncated: a new boot rewrote the log
        options.onRestart?.();
      }
      if (fh && size > offset) {
        const buf = Buffer.alloc(size - offset);
        const { bytesRead } = await fh.read(buf, 0, buf.length, offset);
        offset += bytesRead;
        if (bytesRead > 0) yield buf.subarray(0, bytesRead);
        continue;
      }
    } finally {
      await fh?.close();
    }
    if (options.shouldStop && (await options.shouldStop())) {
      // One last look so output written just before the stop is not lost.
      const last = await stat(path).catch(() => undefined);
      if (last && last.size > offset) continue;
      return;
    }
    try {
      await sleep(pollMs, undefined, { signal: options.signal });
    } catch {
      return;
    }
  }
}

/** The bytes of `path` from `offset` on, if `path` is still the file with inode `ino`. */
async function* readRest(path: string, ino: number, offset: number): AsyncGenerator<Buffer> {
  let fh;
  try {
    fh = await open(path, "r");
  } catch {
    return;
  }
  try {
    const st = await fh.stat();
    if (st.ino !== ino || st.size <= offset) return;
    const buf = Buffer.alloc(st.size - offset);
    const { bytesRead } = await fh.read(buf, 0, buf.length, offset);
    if (bytesRead > 0) yield buf.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
}
