/** Reading the serial console log: whole, a bounded tail, or followed as it grows. */
import { open, stat } from "node:fs/promises";
import { setTimeout as sleep } from "node:timers/promises";
import { stripVTControlCharacters } from "node:util";
import { isErrno } from "../util/fs.ts";

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

/** The last non-empty lines of a text, control characters (ANSI, CR) stripped, for one-line details. */
export function lastLines(text: string, count: number): string[] {
  const clean = stripVTControlCharacters(text).replace(/\r/g, "");
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
  /** Called when the file shrank (rewritten): what follows is read from its start. */
  onRestart?: () => void;
  signal?: AbortSignal | undefined;
}

/** Yield the file's content then every appended chunk, until `shouldStop` says so or `signal` aborts. */
export async function* followBytes(path: string, options: FollowBytesOptions = {}): AsyncGenerator<Buffer> {
  const pollMs = options.pollMs ?? 100;
  let offset = options.fromOffset ?? 0;
  for (;;) {
    if (options.signal?.aborted) return;
    let size = 0;
    try {
      size = (await stat(path)).size;
    } catch (e) {
      if (!isErrno(e, "ENOENT")) throw e;
    }
    if (size < offset) {
      offset = 0; // truncated: a new boot rewrote the log
      options.onRestart?.();
    }
    if (size > offset) {
      const fh = await open(path, "r");
      try {
        const buf = Buffer.alloc(size - offset);
        const { bytesRead } = await fh.read(buf, 0, buf.length, offset);
        offset += bytesRead;
        if (bytesRead > 0) yield buf.subarray(0, bytesRead);
      } finally {
        await fh.close();
      }
      continue;
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
