/**
 * The workload's output and result, between the guest link and the control clients (`attach`,
 * `wait_result`). Output is kept in a bounded ring for late attachers (oldest dropped first). It is
 * credited to the guest at once when nobody is attached (the workload runs free); while clients are
 * attached, `push` returns a promise that settles once every attacher has room, and the link credits
 * the guest only then, so a stalled attacher holds the workload back (blocked on its stdout) until the
 * control server disconnects it. No I/O of its own: the supervisor feeds it and ends it.
 */
import type { MicroagentError } from "../contract/errors.ts";
import type { WorkloadResult } from "./protocol.ts";
import type { OutputSink, OutputStream } from "./server.ts";

/** Output retained for a late `attach`. */
export const WORKLOAD_BUFFER_BYTES = 8 * 1024 * 1024;

export interface WorkloadRelayOptions {
  /** Ring size in bytes (default WORKLOAD_BUFFER_BYTES); the newest chunk is always kept. */
  bufferBytes?: number;
  log?(message: string): void;
}

interface Chunk {
  seq: number;
  stream: OutputStream;
  data: Buffer;
}

export class WorkloadRelay {
  readonly #bufferBytes: number;
  readonly #log: (message: string) => void;
  #ring: Chunk[] = [];
  #seq = 0;
  #bytes = 0;
  #truncated = false;
  #attachers = new Set<OutputSink>();
  #attachedOnce = false;
  #result: WorkloadResult | undefined;
  #ended: MicroagentError | undefined;
  #waiters = new Set<{ resolve: (r: WorkloadResult) => void; reject: (e: unknown) => void }>();

  constructor(opts: WorkloadRelayOptions = {}) {
    this.#bufferBytes = opts.bufferBytes ?? WORKLOAD_BUFFER_BYTES;
    this.#log = opts.log ?? (() => {});
  }

  /** The workload's result, once it reported one. */
  get result(): WorkloadResult | undefined {
    return this.#result;
  }

  /** Whether a client ever attached (the supervisor lingers for a late one otherwise). */
  get attachedOnce(): boolean {
    return this.#attachedOnce;
  }

  /** Whether the ring dropped output (a late attach misses the oldest). */
  get truncated(): boolean {
    return this.#truncated;
  }

  /** Bytes held in the ring. */
  get bufferedBytes(): number {
    return this.#bytes;
  }

  /** Number of clients following live right now. */
  get attachers(): number {
    return this.#attachers.size;
  }

  /** A chunk from the guest. Returns a promise when the guest's credit must wait for attachers to have room. */
  push(stream: OutputStream, frame: Buffer): Promise<unknown> | undefined {
    // A copy: the frame may be a slice of a larger read buffer, which the ring must not pin.
    const data = Buffer.from(frame);
    this.#ring.push({ seq: this.#seq++, stream, data });
    this.#bytes += data.length;
    while (this.#bytes > this.#bufferBytes && this.#ring.length > 1) {
      this.#bytes -= (this.#ring.shift() as Chunk).data.length;
      this.#truncated = true;
    }
    const waits = [...this.#attachers].map((a) => a(stream, data)).filter((w) => w instanceof Promise);
    return waits.length > 0 ? Promise.all(waits) : undefined;
  }

  /** The workload reported its result: every waiter gets it. */
  settle(result: WorkloadResult): void {
    if (this.#result) return;
    this.#result = result;
    for (const w of [...this.#waiters]) w.resolve(result);
    this.#waiters.clear();
  }

  /**
   * The session ends without (or before) a result: waiters get `error` unless a result arrives in
   * the same turn (the link's result and the VM's exit race by a tick). The first call wins.
   */
  end(error: MicroagentError): void {
    if (this.#ended) return;
    this.#ended = error;
    setImmediate(() => {
      if (this.#result) return;
      for (const w of [...this.#waiters]) w.reject(error);
      this.#waiters.clear();
    });
  }

  /**
   * Replay the output so far at the client's pace (output arriving meanwhile joins the ring and is
   * replayed too), then follow live once caught up (checked and registered synchronously), and
   * resolve with the result.
   */
  async attach(onOutput: OutputSink, signal: AbortSignal): Promise<WorkloadResult> {
    this.#attachedOnce = true;
    if (this.#truncated) this.#log("a late attach missed the oldest workload output (buffer cap)");
    let next = 0;
    for (;;) {
      const pending = this.#ring.filter((o) => o.seq >= next);
      if (pending.length === 0 || signal.aborted) break;
      for (const o of pending) {
        if (signal.aborted) break;
        await onOutput(o.stream, o.data);
        next = o.seq + 1;
      }
    }
    if (signal.aborted) throw new Error("client went away");
    if (this.#result) return this.#result;
    if (this.#ended) throw this.#ended;
    this.#attachers.add(onOutput);
    try {
      return await this.waitResult(signal);
    } finally {
      this.#attachers.delete(onOutput);
    }
  }

  /** The result, once the workload reports it; rejects when the session ended without one. */
  waitResult(signal: AbortSignal): Promise<WorkloadResult> {
    if (this.#result) return Promise.resolve(this.#result);
    if (this.#ended) return Promise.reject(this.#ended);
    return new Promise<WorkloadResult>((resolve, reject) => {
      const w = { resolve, reject };
      this.#waiters.add(w);
      signal.addEventListener(
        "abort",
        () => {
          this.#waiters.delete(w);
          reject(new Error("client went away"));
        },
        { once: true },
      );
    });
  }
}
