/**
 * An exec handle: awaitable (the final result, with stdout/stderr as Buffers) or async-iterable
 * (output chunks as they arrive, then the result without output). Output is always streamed from the
 * supervisor so both uses share one request. Memory is bounded either way: awaiting collects at most
 * the output limits; iterating retains nothing, and a consumer that falls behind pauses the stream
 * (the supervisor and the guest command then wait) instead of queueing without bound.
 */
import { Buffer } from "node:buffer";
import type { SupervisorClient } from "../supervisor/client.ts";
import type { ExecRequest, ExecResult } from "../supervisor/protocol.ts";

export interface ExecOptions {
  env?: Record<string, string>;
  cwd?: string;
  user?: string;
  /** Fed to stdin, then EOF: bytes, or a stream of them (a file or pipe; any size, streamed). */
  stdin?: Buffer | string | AsyncIterable<Uint8Array>;
  timeoutMs?: number;
  /** Bytes of stdout kept (guest default 16 MiB); beyond it output is dropped and `stdoutTruncated` set. */
  stdoutLimitBytes?: number;
  stderrLimitBytes?: number;
  signal?: AbortSignal;
}
export interface ExecOutput {
  stream: "stdout" | "stderr";
  data: Buffer;
}

/** The final result, with output decoded. */
export interface ExecOutcome extends Omit<ExecResult, "stdout" | "stderr"> {
  stdout: Buffer;
  stderr: Buffer;
}

/** The guest's default output limit per stream (guest-channel's DEFAULT_OUTPUT_LIMIT_BYTES). */
const DEFAULT_LIMIT_BYTES = 16 * 1024 * 1024;
/** Unconsumed chunks an iterating caller may fall behind by before the stream is paused. */
const ITERATE_QUEUE_BYTES = 1024 * 1024;

export class ExecHandle implements PromiseLike<ExecOutcome>, AsyncIterable<ExecOutput> {
  readonly #result: Promise<ExecOutcome>;
  #mode: "undecided" | "collect" | "iterate" = "undecided";
  #queue: ExecOutput[] = [];
  #queueBytes = 0;
  #room: (() => void) | undefined;
  #wake: (() => void) | undefined;
  #ended = false;
  #sendSignal: ((signal: string) => void) | undefined;
  readonly #collected = { stdout: [] as Buffer[], stderr: [] as Buffer[] };
  readonly #collectedBytes = { stdout: 0, stderr: 0 };
  readonly #limits: { stdout: number; stderr: number };

  constructor(client: SupervisorClient, argv: readonly string[], opts: ExecOptions = {}) {
    const req: ExecRequest = {
      argv: [...argv],
      ...(opts.env ? { env: opts.env } : {}),
      ...(opts.cwd ? { cwd: opts.cwd } : {}),
      ...(opts.user ? { user: opts.user } : {}),
      ...(opts.timeoutMs ? { timeoutMs: opts.timeoutMs } : {}),
      ...(opts.stdoutLimitBytes ? { stdoutLimitBytes: opts.stdoutLimitBytes } : {}),
      ...(opts.stderrLimitBytes ? { stderrLimitBytes: opts.stderrLimitBytes } : {}),
    };
    this.#limits = { stdout: opts.stdoutLimitBytes ?? DEFAULT_LIMIT_BYTES, stderr: opts.stderrLimitBytes ?? DEFAULT_LIMIT_BYTES };
    const stdin = opts.stdin === undefined ? undefined : typeof opts.stdin === "string" || Buffer.isBuffer(opts.stdin) ? [Buffer.from(opts.stdin)] : opts.stdin;
    this.#result = client
      .exec(req, (stream, data) => this.#onOutput({ stream, data }), opts.signal, {
        ...(stdin ? { stdin } : {}),
        onSignal: (send) => (this.#sendSignal = send),
      })
      .then((r) => {
        if (this.#mode === "undecided") this.#collectQueued();
        return {
          ...r,
          // Streamed output arrives in chunks (none is kept when iterating); a non-streaming reply carries it inline.
          stdout: this.#collected.stdout.length > 0 ? Buffer.concat(this.#collected.stdout) : Buffer.from(r.stdout, "base64"),
          stderr: this.#collected.stderr.length > 0 ? Buffer.concat(this.#collected.stderr) : Buffer.from(r.stderr, "base64"),
        };
      })
      .finally(() => {
        this.#ended = true;
        this.#wake?.();
      });
    this.#result.catch(() => {});
  }

  #onOutput(o: ExecOutput): Promise<void> | undefined {
    if (this.#mode === "collect") {
      this.#collect(o);
      return undefined;
    }
    this.#queue.push(o);
    this.#queueBytes += o.data.length;
    this.#wake?.();
    if (this.#queueBytes <= ITERATE_QUEUE_BYTES) return undefined;
    return new Promise<void>((r) => (this.#room = r));
  }

  /** Keeps at most the limit per stream: the guest enforces it too; this holds even if it did not. */
  #collect(o: ExecOutput): void {
    const room = this.#limits[o.stream] - this.#collectedBytes[o.stream];
    if (room <= 0) return;
    const data = o.data.length > room ? o.data.subarray(0, room) : o.data;
    this.#collected[o.stream].push(data);
    this.#collectedBytes[o.stream] += data.length;
  }

  #collectQueued(): void {
    this.#mode = "collect";
    for (const o of this.#queue.splice(0)) this.#collect(o);
    this.#queueBytes = 0;
    this.#release();
  }

  #release(): void {
    const r = this.#room;
    this.#room = undefined;
    r?.();
  }

  /** Signals the running command's process group, e.g. "SIGTERM" (ignored once it ended). */
  kill(signal = "SIGTERM"): void {
    this.#sendSignal?.(signal);
  }

  then<A = ExecOutcome, B = never>(onfulfilled?: ((v: ExecOutcome) => A | PromiseLike<A>) | null, onrejected?: ((e: unknown) => B | PromiseLike<B>) | null): Promise<A | B> {
    if (this.#mode === "undecided") this.#collectQueued();
    return this.#result.then(onfulfilled, onrejected);
  }

  /** The final result; awaiting it (before iterating) collects the output. */
  get result(): Promise<ExecOutcome> {
    if (this.#mode === "undecided") this.#collectQueued();
    return this.#result;
  }

  [Symbol.asyncIterator](): AsyncIterator<ExecOutput> {
    // Decided now: iterated chunks are handed over, not kept, so the outcome's stdout/stderr are empty.
    if (this.#mode === "undecided") this.#mode = "iterate";
    return this.#iterate();
  }

  async *#iterate(): AsyncGenerator<ExecOutput> {
    for (;;) {
      const next = this.#queue.shift();
      if (next) {
        this.#queueBytes -= next.data.length;
        if (this.#queueBytes <= ITERATE_QUEUE_BYTES / 2) this.#release();
        yield next;
        continue;
      }
      this.#release();
      if (this.#ended) {
        await this.#result; // surface the error, if any
        return;
      }
      await new Promise<void>((r) => (this.#wake = r));
      this.#wake = undefined;
    }
  }
}
