/**
 * An exec handle: awaitable (the final result, with stdout/stderr as Buffers) and async-iterable
 * (output chunks as they arrive). Output is always streamed from the supervisor so both uses share
 * one request; iteration is optional.
 */
import { Buffer } from "node:buffer";
import type { SupervisorClient } from "../supervisor/client.ts";
import type { ExecRequest, ExecResult } from "../supervisor/protocol.ts";

export interface ExecOptions {
  env?: Record<string, string>;
  cwd?: string;
  user?: string;
  /** Bytes fed to stdin, then EOF. */
  stdin?: Buffer | string;
  timeoutMs?: number;
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

/** Exit code the CLI uses for a status: exited -> its code (0-255), timed_out 124, signaled 128+n, failed_to_start 127. */
export function execExitCode(r: Pick<ExecResult, "status" | "exitCode" | "signal">): number {
  switch (r.status) {
    case "exited": {
      const c = r.exitCode ?? 1;
      return c < 0 ? 1 : Math.min(c, 255);
    }
    case "timed_out":
      return 124;
    case "failed_to_start":
      return 127;
    case "signaled":
      return 128 + signalNumber(r.signal);
  }
}

const SIGNALS: Record<string, number> = { SIGHUP: 1, SIGINT: 2, SIGQUIT: 3, SIGILL: 4, SIGTRAP: 5, SIGABRT: 6, SIGBUS: 7, SIGFPE: 8, SIGKILL: 9, SIGUSR1: 10, SIGSEGV: 11, SIGUSR2: 12, SIGPIPE: 13, SIGALRM: 14, SIGTERM: 15 };

function signalNumber(sig: string | undefined): number {
  if (!sig) return 9;
  if (/^\d+$/.test(sig)) return Number(sig);
  return SIGNALS[sig.toUpperCase().startsWith("SIG") ? sig.toUpperCase() : `SIG${sig.toUpperCase()}`] ?? 9;
}

export class ExecHandle implements PromiseLike<ExecOutcome>, AsyncIterable<ExecOutput> {
  readonly #result: Promise<ExecOutcome>;
  readonly #queue: ExecOutput[] = [];
  #wake: (() => void) | undefined;
  #ended = false;

  constructor(client: SupervisorClient, argv: readonly string[], opts: ExecOptions = {}) {
    const req: ExecRequest = {
      argv: [...argv],
      ...(opts.env ? { env: opts.env } : {}),
      ...(opts.cwd ? { cwd: opts.cwd } : {}),
      ...(opts.user ? { user: opts.user } : {}),
      ...(opts.stdin !== undefined ? { stdin: Buffer.from(opts.stdin).toString("base64") } : {}),
      ...(opts.timeoutMs ? { timeoutMs: opts.timeoutMs } : {}),
      ...(opts.stdoutLimitBytes ? { stdoutLimitBytes: opts.stdoutLimitBytes } : {}),
      ...(opts.stderrLimitBytes ? { stderrLimitBytes: opts.stderrLimitBytes } : {}),
    };
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    this.#result = client
      .exec(
        req,
        (stream, data) => {
          (stream === "stdout" ? out : err).push(data);
          this.#queue.push({ stream, data });
          this.#wake?.();
        },
        opts.signal,
      )
      .then((r) => ({
        ...r,
        // Streamed output arrives in chunks; a non-streaming reply carries it inline.
        stdout: out.length > 0 ? Buffer.concat(out) : Buffer.from(r.stdout, "base64"),
        stderr: err.length > 0 ? Buffer.concat(err) : Buffer.from(r.stderr, "base64"),
      }))
      .finally(() => {
        this.#ended = true;
        this.#wake?.();
      });
    this.#result.catch(() => {});
  }

  then<A = ExecOutcome, B = never>(onfulfilled?: ((v: ExecOutcome) => A | PromiseLike<A>) | null, onrejected?: ((e: unknown) => B | PromiseLike<B>) | null): Promise<A | B> {
    return this.#result.then(onfulfilled, onrejected);
  }

  get result(): Promise<ExecOutcome> {
    return this.#result;
  }

  async *[Symbol.asyncIterator](): AsyncIterator<ExecOutput> {
    for (;;) {
      const next = this.#queue.shift();
      if (next) {
        yield next;
        continue;
      }
      if (this.#ended) {
        await this.#result; // surface the error, if any
        return;
      }
      await new Promise<void>((r) => (this.#wake = r));
      this.#wake = undefined;
    }
  }
}
