/**
 * serial.log as the supervisor writes it: the guest's console bytes (kernel, init, workload output)
 * arrive on a pipe from the VMM and land in a size-capped file with one rotated predecessor
 * (`serial.log.1`), so a guest that floods its console costs the host at most twice the cap on disk.
 *
 * The reader side never waits for the disk: bytes are queued and written by one async loop, and when
 * the queue passes its bound (a stalled or full disk) further bytes are dropped and counted, and a
 * marker saying how many is written once the disk takes writes again. So the VMM's pipe is always
 * drained (a VMM blocked on a full pipe would stall the guest), and host memory stays bounded.
 * A bounded in-memory tail is kept for death diagnostics; it does not depend on the disk at all.
 */
import { open, rename, rm, type FileHandle } from "node:fs/promises";
import { FILE_MODE } from "../util/fs.ts";
import { rotatedLogPath } from "../workspace/serial.ts";

/** Default cap on serial.log before it is rotated to serial.log.1. */
export const DEFAULT_SERIAL_LOG_MAX_BYTES = 8 * 1024 * 1024;
/** Bytes waiting for the disk before new output is dropped. */
export const DEFAULT_SERIAL_PENDING_MAX_BYTES = 1024 * 1024;
/** Bytes of the most recent output kept in memory for error messages. */
export const DEFAULT_SERIAL_TAIL_BYTES = 16 * 1024;

export interface SerialLogOptions {
  /** serial.log is rotated once it would pass this many bytes (so at most 2x this on disk). */
  maxBytes?: number;
  pendingMaxBytes?: number;
  tailBytes?: number;
  /** Told once per failure streak (e.g. ENOSPC): the supervisor logs it. */
  onError?: (e: Error) => void;
}

export class SerialLog {
  readonly path: string;
  readonly rotatedPath: string;
  readonly maxBytes: number;
  readonly #pendingMax: number;
  readonly #tailMax: number;
  readonly #onError: (e: Error) => void;
  #fh: FileHandle | undefined;
  #size = 0;
  #pending: Buffer[] = [];
  #pendingBytes = 0;
  #dropped = 0;
  /** Bytes lost so far (queue overflow or failed writes). */
  droppedTotal = 0;
  #tail: Buffer[] = [];
  #tailBytes = 0;
  #writing: Promise<void> | undefined;
  #failing = false;
  #closed = false;

  private constructor(path: string, opts: SerialLogOptions) {
    this.path = path;
    this.rotatedPath = rotatedLogPath(path);
    this.maxBytes = Math.max(1024, opts.maxBytes ?? DEFAULT_SERIAL_LOG_MAX_BYTES);
    this.#pendingMax = opts.pendingMaxBytes ?? DEFAULT_SERIAL_PENDING_MAX_BYTES;
    this.#tailMax = opts.tailBytes ?? DEFAULT_SERIAL_TAIL_BYTES;
    this.#onError = opts.onError ?? (() => {});
  }

  /** Start a fresh log for a new boot: the previous boot's serial.log and serial.log.1 are replaced. */
  static async create(path: string, opts: SerialLogOptions = {}): Promise<SerialLog> {
    const log = new SerialLog(path, opts);
    await rm(log.rotatedPath, { force: true });
    log.#fh = await open(path, "w", FILE_MODE);
    return log;
  }

  /** Take console bytes. Never blocks and never throws; drops (and counts) what the disk cannot keep up with. */
  write(chunk: Buffer): void {
    if (chunk.length === 0 || this.#closed) return;
    this.#remember(chunk);
    if (this.#pendingBytes + chunk.length > this.#pendingMax) {
      this.#dropped += chunk.length;
      this.droppedTotal += chunk.length;
      return;
    }
    this.#pending.push(chunk);
    this.#pendingBytes += chunk.length;
    this.#writing ??= this.#drain().finally(() => (this.#writing = undefined));
  }

  /** The last output as text (in memory: available even when the disk is full). */
  tail(): string {
    return Buffer.concat(this.#tail).toString("utf8");
  }

  /** Write out what is queued and close the file. */
  async close(): Promise<void> {
    this.#closed = true;
    while (this.#writing) await this.#writing;
    await this.#fh?.close().catch(() => {});
    this.#fh = undefined;
  }

  /** Resolves once everything queued so far has been written (tests, and before close). */
  async flush(): Promise<void> {
    while (this.#writing) await this.#writing;
  }

  #remember(chunk: Buffer): void {
    this.#tail.push(chunk);
    this.#tailBytes += chunk.length;
    while (this.#tail.length > 1 && this.#tailBytes - (this.#tail[0] as Buffer).length >= this.#tailMax) {
      this.#tailBytes -= (this.#tail.shift() as Buffer).length;
    }
    if (this.#tailBytes > this.#tailMax * 2) {
      const all = Buffer.concat(this.#tail);
      this.#tail = [Buffer.from(all.subarray(all.length - this.#tailMax))];
      this.#tailBytes = this.#tailMax;
    }
  }

  async #drain(): Promise<void> {
    while (this.#pending.length > 0) {
      const batch = Buffer.concat(this.#pending);
      this.#pending = [];
      this.#pendingBytes = 0;
      let data = batch;
      if (this.#dropped > 0) {
        data = Buffer.concat([Buffer.from(`\n[microagent: ${this.#dropped} bytes of serial output dropped: the log could not be written fast enough]\n`), batch]);
        this.#dropped = 0;
      }
      try {
        await this.#append(data);
        this.#failing = false;
      } catch (e) {
        // A full or failing disk: the bytes are lost, the guest is not held up, and the next write retries.
        this.#dropped += batch.length;
        this.droppedTotal += batch.length;
        if (!this.#failing) this.#onError(e as Error);
        this.#failing = true;
      }
    }
  }

  async #append(data: Buffer): Promise<void> {
    let offset = 0;
    while (offset < data.length) {
      if (!this.#fh) this.#fh = await open(this.path, "a", FILE_MODE);
      if (this.#size >= this.maxBytes) await this.#rotate();
      const n = Math.min(data.length - offset, this.maxBytes - this.#size);
      const { bytesWritten } = await (this.#fh as FileHandle).write(data, offset, n);
      this.#size += bytesWritten;
      offset += bytesWritten;
    }
  }

  async #rotate(): Promise<void> {
    await this.#fh?.close();
    this.#fh = undefined;
    // rename replaces serial.log.1 atomically: a reader sees the old or the new one, never neither.
    await rename(this.path, this.rotatedPath);
    this.#fh = await open(this.path, "w", FILE_MODE);
    this.#size = 0;
  }
}
