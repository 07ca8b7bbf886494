/**
 * Reading the guest's serial log from the host: a bounded tail for error messages, and a bounded
 * wait for a line (the boot tests wait for microagent-init's first line this way).
 */
import { open } from "node:fs/promises";
import { VmmErrors } from "../errors.ts";
import { describeExit, type QemuHandle } from "./launch.ts";

/** The last `maxBytes` of a file as text ("" when it does not exist). */
export async function tailFile(path: string, maxBytes = 4096): Promise<string> {
  let fh;
  try {
    fh = await open(path, "r");
  } catch {
    return "";
  }
  try {
    const { size } = await fh.stat();
    const length = Math.min(size, maxBytes);
    const buf = Buffer.alloc(length);
    await fh.read(buf, 0, length, size - length);
    return buf.toString("utf8");
  } finally {
    await fh.close();
  }
}

export interface WaitForSerialOptions {
  timeoutMs: number;
  /** When given, QEMU exiting first fails the wait at once with QEMU_EXITED. */
  qemu?: QemuHandle;
  pollMs?: number;
}

/**
 * Wait until the serial log at `path` matches `pattern` (searched from the start of the file);
 * returns the match. Fails with QEMU_BOOT_TIMEOUT or QEMU_EXITED, both carrying the serial tail.
 */
export async function waitForSerial(path: string, pattern: RegExp, opts: WaitForSerialOptions): Promise<RegExpExecArray> {
  const started = Date.now();
  const pollMs = opts.pollMs ?? 50;
  // Scan incrementally, keeping a small overlap so a line split across reads still matches.
  let offset = 0;
  let carry = "";
  for (;;) {
    const chunk = await readFrom(path, offset);
    if (chunk.length > 0) {
      offset += chunk.length;
      const text = carry + chunk.toString("utf8");
      const m = pattern.exec(text);
      if (m) return m;
      carry = text.slice(-4096);
    }
    const exit = opts.qemu?.exit();
    if (exit) {
      // One last read: the line may have landed just before the exit.
      const last = await readFrom(path, offset);
      const m = pattern.exec(carry + last.toString("utf8"));
      if (m) return m;
      const serialTail = await tailFile(path);
      throw VmmErrors.QEMU_EXITED({
        message: `the VM exited (${describeExit(exit)}) before the serial log showed ${pattern}; serial log tail:\n${serialTail.trimEnd()}${opts.qemu?.stderrTail() ? `\nQEMU error output:\n${opts.qemu.stderrTail().trimEnd()}` : ""}`,
        details: { exit, serialTail, stderrTail: opts.qemu?.stderrTail() },
      });
    }
    if (Date.now() - started >= opts.timeoutMs) {
      const serialTail = await tailFile(path);
      throw VmmErrors.QEMU_BOOT_TIMEOUT({
        message: `the serial log did not show ${pattern} within ${opts.timeoutMs} ms; serial log tail:\n${serialTail.trimEnd() || "(empty)"}`,
        details: { timeoutMs: opts.timeoutMs, serialTail },
      });
    }
    await new Promise((resolve) => setTimeout(resolve, pollMs));
  }
}

async function readFrom(path: string, offset: number): Promise<Buffer> {
  let fh;
  try {
    fh = await open(path, "r");
  } catch {
    return Buffer.alloc(0);
  }
  try {
    const { size } = await fh.stat();
    if (size <= offset) return Buffer.alloc(0);
    const buf = Buffer.alloc(size - offset);
    await fh.read(buf, 0, buf.length, offset);
    return buf;
  } finally {
    await fh.close();
  }
}
