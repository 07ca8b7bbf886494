/**
 * The typed host API of one guest channel: handshake, boot config, exec sessions, the console,
 * workload output and result, graceful shutdown. Built on the mux; every guest message is validated
 * by its zod schema before it is acted on.
 */
import type { Duplex } from "node:stream";
import type { MicroagentError } from "../contract/errors.ts";
import { CommonErrors } from "../contract/errors.ts";
import { ChannelErrors } from "./errors.ts";
import type { Frame } from "./frame.ts";
import { CHANNELS, DEFAULT_MAX_FRAME_BYTES, DEFAULT_WINDOW_BYTES, MAX_FRAME_BYTES_LIMIT, PROTOCOL_VERSION } from "./frame.ts";
import type { BootConfigInput } from "./boot-config.ts";
import { parseBootConfig } from "./boot-config.ts";
import type { ExecExitMessage, ExecStatus, GuestControlMessage, Hello, WorkloadResultMessage } from "./messages.ts";
import {
  bootConfigMessage,
  closeSchema,
  decodeJson,
  execExitSchema,
  goawaySchema,
  guestControlSchema,
  guestOpenSchema,
  helloSchema,
  helloVersionSchema,
  pingMessage,
  resumeMessage,
  type ResumeMessage,
  type ResumedMessage,
  type RefreshMessage,
  type RefreshedMessage,
  type SecretsWipedMessage,
  resizeMessage,
  shutdownMessage,
  signalMessage,
  welcomeMessage,
} from "./messages.ts";
import type { MuxStream, StreamEvent } from "./mux.ts";
import { Mux } from "./mux.ts";

export interface GuestChannelOptions {
  /** How long to wait for the guest's hello (a TCG boot takes seconds). Default 60 000. */
  helloTimeoutMs?: number;
  /** Largest frame payload the host accepts. Default 64 KiB. */
  maxFrameBytes?: number;
  /** Per-stream window offered to the guest. Default 256 KiB. */
  windowBytes?: number;
  /** Most concurrent streams. Default 64. */
  maxStreams?: number;
  /** Called when the channel dies, to attach e.g. the serial log tail to every pending error. */
  describeDeath?: () => string | undefined;
  /** An exec with timeoutMs fails with CHANNEL_TIMEOUT when no result came this long after it. Default 30 000. */
  execBackstopMs?: number;
}

export interface ResolvedGuestChannelOptions {
  helloTimeoutMs: number;
  maxFrameBytes: number;
  windowBytes: number;
  maxStreams: number;
  describeDeath: (() => string | undefined) | undefined;
  execBackstopMs: number;
}

export function resolveGuestChannelOptions(o: GuestChannelOptions = {}): ResolvedGuestChannelOptions {
  const maxFrameBytes = o.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES;
  if (maxFrameBytes < 1024 || maxFrameBytes > MAX_FRAME_BYTES_LIMIT) throw new RangeError(`maxFrameBytes must be in [1024, ${MAX_FRAME_BYTES_LIMIT}]`);
  return {
    helloTimeoutMs: o.helloTimeoutMs ?? 60_000,
    maxFrameBytes,
    windowBytes: o.windowBytes ?? DEFAULT_WINDOW_BYTES,
    maxStreams: o.maxStreams ?? 64,
    describeDeath: o.describeDeath,
    execBackstopMs: o.execBackstopMs ?? 30_000,
  };
}

export interface ExecRequest {
  argv: string[];
  /** Extra environment (on top of the boot config's), as KEY=VALUE entries or a record. */
  env?: string[] | Record<string, string>;
  cwd?: string;
  /** name, uid, name:group or uid:gid. */
  user?: string;
  /** Bytes to send as stdin (then EOF), or true to keep stdin open for `writeStdin`. Default: no stdin. */
  stdin?: string | Uint8Array | boolean;
  /** The guest kills the process group after this long: status `timed_out`. */
  timeoutMs?: number;
  /** Bytes of stdout kept; beyond it the output is discarded and `stdoutTruncated` set. Default 16 MiB. */
  stdoutLimitBytes?: number;
  stderrLimitBytes?: number;
}

export interface ExecOutputChunk {
  stream: "stdout" | "stderr";
  data: Buffer;
}

export interface ExecResult {
  status: ExecStatus;
  exitCode?: number;
  signal?: string;
  /** Why the process never started (status failed_to_start), e.g. {code: "ENOENT", message}. */
  error?: { code: string; message: string };
  /** Collected output (empty when the handle was iterated instead). */
  stdout: Buffer;
  stderr: Buffer;
  stdoutTruncated: boolean;
  stderrTruncated: boolean;
  startedAt: string;
  exitedAt: string;
}

/** How the workload ended, as the guest reports it; channel-link turns it into the wire WorkloadResult (supervisor/protocol.ts). */
export interface GuestWorkloadResult {
  exitCode?: number;
  signal?: string;
  startedAt?: string;
  exitedAt?: string;
  /** The workload never started (e.g. ENOENT for its command). */
  startError?: { code: string; message: string };
  /** Output the guest could not stream to the host in time (it is still in the serial log). */
  outputDroppedBytes?: number;
}

export interface BootReport {
  workload?: { pid: number; startedAt: string };
  /** The guest had already been configured (a reconnect). */
  alreadyConfigured: boolean;
}

function withDeath(err: MicroagentError, describe: (() => string | undefined) | undefined): MicroagentError {
  const tail = describe?.();
  if (!tail || !ChannelErrors.CHANNEL_PEER_CLOSED.is(err)) return err;
  return ChannelErrors.CHANNEL_PEER_CLOSED({ message: err.message, cause: err.cause, details: { ...(err.details ?? {}), logTail: tail } });
}

/** `Promise.withResolvers`, with rejections marked observed: whoever awaits sees them; never unhandled. */
function deferred<T>(): PromiseWithResolvers<T> {
  const d = Promise.withResolvers<T>();
  d.promise.catch(() => {});
  return d;
}

function envList(env: ExecRequest["env"]): string[] | undefined {
  if (!env) return undefined;
  return Array.isArray(env) ? env : Object.entries(env).map(([k, v]) => `${k}=${v}`);
}

const DEFAULT_OUTPUT_LIMIT_BYTES = 16 * 1024 * 1024;

/**
 * One exec session on the guest channel (the supervisor side; the library's public `ExecHandle` in
 * api/exec.ts is the client of a supervisor): await it for the result, or iterate it for output
 * chunks (with backpressure).
 */
export class GuestExecHandle implements PromiseLike<ExecResult>, AsyncIterable<ExecOutputChunk> {
  readonly #stream: MuxStream;
  readonly #done = deferred<ExecResult>();
  #mode: "undecided" | "collect" | "iterate" = "undecided";
  #out: Buffer[] = [];
  #err: Buffer[] = [];
  #queue: ExecOutputChunk[] = [];
  #wake: (() => void) | undefined;
  #exit: ExecExitMessage | undefined;
  #failure: MicroagentError | undefined;

  /** @internal */
  constructor(stream: MuxStream, describeDeath: (() => string | undefined) | undefined) {
    this.#stream = stream;
    stream.onEvent = (ev) => this.#onEvent(ev);
    stream.onFail = (err) => {
      this.#failure = withDeath(err, describeDeath);
      this.#done.reject(this.#failure);
      this.#wake?.();
    };
  }

  /** @internal Settles with the result without choosing collect mode (awaiting the handle does). */
  get settled(): Promise<ExecResult> {
    return this.#done.promise;
  }

  /** @internal Fails the handle (e.g. the host-side backstop timeout). */
  fail(err: MicroagentError): void {
    if (this.#exit || this.#failure) return;
    this.#failure = err;
    this.#done.reject(err);
    this.#wake?.();
  }

  /** The stream id (for logs). */
  get id(): number {
    return this.#stream.id;
  }

  async writeStdin(data: string | Uint8Array): Promise<void> {
    await this.#stream.write(CHANNELS.in, typeof data === "string" ? Buffer.from(data) : data);
  }

  closeStdin(): void {
    this.#stream.eof(CHANNELS.in);
  }

  /** Sends a signal to the process group, e.g. "SIGTERM". */
  kill(signal = "SIGKILL"): void {
    if (!this.#stream.ended) this.#stream.sendMessage(signalMessage(signal));
  }

  then<A = ExecResult, B = never>(
    onfulfilled?: ((value: ExecResult) => A | PromiseLike<A>) | null,
    onrejected?: ((reason: unknown) => B | PromiseLike<B>) | null,
  ): Promise<A | B> {
    if (this.#mode === "undecided") this.#mode = "collect";
    return this.#done.promise.then(onfulfilled, onrejected);
  }

  [Symbol.asyncIterator](): AsyncIterator<ExecOutputChunk> {
    // Decide the mode now, not at the first next(): output may arrive before the consumer pulls.
    if (this.#mode === "undecided") this.#mode = "iterate";
    return this.#iterate();
  }

  async *#iterate(): AsyncGenerator<ExecOutputChunk> {
    for (;;) {
      const c = this.#queue.shift();
      if (c) {
        yield c;
        // Credit goes back only once the consumer is done with the chunk (it may wait on its reader).
        this.#stream.ack(c.data.length);
        continue;
      }
      if (this.#failure) throw this.#failure;
      if (this.#exit) return;
      await new Promise<void>((r) => (this.#wake = r));
      this.#wake = undefined;
    }
  }

  #onEvent(ev: StreamEvent): void {
    switch (ev.kind) {
      case "data": {
        if (ev.channel !== CHANNELS.out && ev.channel !== CHANNELS.err)
          throw ChannelErrors.CHANNEL_PROTOCOL_VIOLATION({ message: `exec output on channel ${ev.channel}` });
        const chunk: ExecOutputChunk = { stream: ev.channel === CHANNELS.out ? "stdout" : "stderr", data: ev.data };
        if (this.#mode === "iterate") {
          this.#queue.push(chunk);
          this.#wake?.();
        } else {
          this.#mode = "collect";
          (chunk.stream === "stdout" ? this.#out : this.#err).push(ev.data);
          this.#stream.ack(ev.data.length);
        }
        break;
      }
      case "eof":
        break;
      case "msg": {
        const m = decodeJson(ev.payload, execExitSchema, "exec exit message");
        this.#exit = m;
        this.#done.resolve({
          status: m.status,
          ...(m.exitCode !== undefined ? { exitCode: m.exitCode } : {}),
          ...(m.signal !== undefined ? { signal: m.signal } : m.signalNumber !== undefined ? { signal: String(m.signalNumber) } : {}),
          ...(m.status === "failed_to_start" ? { error: { code: m.errorCode ?? "EUNKNOWN", message: m.error ?? "failed to start" } } : {}),
          stdout: Buffer.concat(this.#out),
          stderr: Buffer.concat(this.#err),
          stdoutTruncated: m.stdoutTruncated,
          stderrTruncated: m.stderrTruncated,
          startedAt: m.startedAt,
          exitedAt: m.exitedAt,
        });
        this.#wake?.();
        break;
      }
      case "close":
        if (!this.#exit) {
          const c = decodeJson(ev.payload.length ? ev.payload : Buffer.from("{}"), closeSchema, "close");
          this.#failure = ChannelErrors.CHANNEL_GUEST_ERROR({ message: `the guest closed exec stream ${this.id} without a result${c.error ? `: ${c.error}` : ""}` });
          this.#done.reject(this.#failure);
          this.#wake?.();
        }
        break;
    }
  }
}

export interface ConsoleOptions {
  cols?: number;
  rows?: number;
  /** Default: the boot config's shell. */
  argv?: string[];
  env?: string[] | Record<string, string>;
  cwd?: string;
  user?: string;
}

/** An interactive PTY session in the guest. */
export class ConsoleHandle {
  readonly #stream: MuxStream;
  readonly #listeners = new Set<(data: Buffer) => unknown>();
  readonly #done = deferred<ExecResult>();
  #backlog: Buffer[] = [];
  #backlogBytes = 0;

  /** @internal */
  constructor(stream: MuxStream, describeDeath: (() => string | undefined) | undefined) {
    this.#stream = stream;
    stream.onFail = (err) => this.#done.reject(withDeath(err, describeDeath));
    stream.onEvent = (ev) => {
      if (ev.kind === "data") {
        if (this.#listeners.size === 0) {
          // Keep a bounded backlog until someone listens (the prompt usually arrives first).
          this.#backlog.push(ev.data);
          this.#backlogBytes += ev.data.length;
          while (this.#backlogBytes > 1024 * 1024) this.#backlogBytes -= this.#backlog.shift()!.length;
        }
        const waits: Promise<unknown>[] = [];
        for (const l of this.#listeners) {
          const w = l(ev.data);
          if (w instanceof Promise) waits.push(w);
        }
        const n = ev.data.length;
        if (waits.length === 0) this.#stream.ack(n);
        else Promise.all(waits).then(() => lateAck(this.#stream, n), () => lateAck(this.#stream, n));
      } else if (ev.kind === "msg") {
        const m = decodeJson(ev.payload, execExitSchema, "console exit message");
        this.#done.resolve({
          status: m.status,
          ...(m.exitCode !== undefined ? { exitCode: m.exitCode } : {}),
          ...(m.signal !== undefined ? { signal: m.signal } : {}),
          ...(m.status === "failed_to_start" ? { error: { code: m.errorCode ?? "EUNKNOWN", message: m.error ?? "failed to start" } } : {}),
          stdout: Buffer.alloc(0),
          stderr: Buffer.alloc(0),
          stdoutTruncated: false,
          stderrTruncated: false,
          startedAt: m.startedAt,
          exitedAt: m.exitedAt,
        });
      } else if (ev.kind === "close") {
        this.#done.reject(ChannelErrors.CHANNEL_GUEST_ERROR({ message: "the guest closed the console without a result" }));
      }
    };
  }

  /** Resolves when the shell exits. */
  get exited(): Promise<ExecResult> {
    return this.#done.promise;
  }

  /** A listener that returns a promise holds the guest's credit for that chunk until it settles. */
  onData(listener: (data: Buffer) => unknown): () => void {
    for (const b of this.#backlog) listener(b);
    this.#backlog = [];
    this.#backlogBytes = 0;
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  async write(data: string | Uint8Array): Promise<void> {
    await this.#stream.write(CHANNELS.in, typeof data === "string" ? Buffer.from(data) : data);
  }

  resize(cols: number, rows: number): void {
    this.#stream.sendMessage(resizeMessage(cols, rows));
  }

  /** Closes the console (the guest kills the shell's process group); `exited` then rejects with CHANNEL_CLOSED. */
  close(): void {
    this.#stream.close();
    this.#done.reject(ChannelErrors.CHANNEL_CLOSED({ message: "the console was closed by the host" }));
  }
}

type State = "handshake" | "open" | "closed";

export class GuestChannel {
  readonly #mux: Mux;
  readonly #opts: ResolvedGuestChannelOptions;
  #state: State = "handshake";
  #hello: Hello | undefined;
  readonly #helloWait = deferred<Hello>();
  readonly #closed = deferred<MicroagentError>();
  readonly #result = deferred<GuestWorkloadResult>();
  #bootWait: PromiseWithResolvers<BootReport> | undefined;
  #workloadStarted: { pid: number; startedAt: string } | undefined;
  #shutdownWait: PromiseWithResolvers<void> | undefined;
  #pings = new Map<number, () => void>();
  #resumeWait: PromiseWithResolvers<ResumedMessage> | undefined;
  #wipeWait: PromiseWithResolvers<SecretsWipedMessage> | undefined;
  #refreshWait: PromiseWithResolvers<RefreshedMessage> | undefined;
  #nextPing = 1;
  readonly #workloadListeners = new Set<(chunk: ExecOutputChunk) => unknown>();

  private constructor(duplex: Duplex, opts: ResolvedGuestChannelOptions) {
    this.#opts = opts;
    this.#mux = new Mux(duplex, { maxFrameBytes: opts.maxFrameBytes, windowBytes: opts.windowBytes, maxStreams: opts.maxStreams }, {
      onControl: (f) => this.#onControl(f),
      onGuestOpen: (s, payload) => this.#onGuestOpen(s, payload),
      onFatal: (err) => this.#onFatal(err),
    });
  }

  /** Waits for the guest's hello on `duplex`, checks its version and answers. */
  static async connect(duplex: Duplex, options?: GuestChannelOptions): Promise<GuestChannel> {
    const opts = resolveGuestChannelOptions(options);
    const ch = new GuestChannel(duplex, opts);
    // Ask for a hello: a guest that missed our predecessor's disconnect starts a new session on it.
    ch.#mux.sendControl("hello", { type: "hello-request", protocol: PROTOCOL_VERSION });
    const timer = setTimeout(() => {
      ch.#mux.fail(ChannelErrors.CHANNEL_TIMEOUT({ message: `the guest did not say hello within ${opts.helloTimeoutMs} ms`, details: { phase: "hello" } }));
    }, opts.helloTimeoutMs);
    try {
      await ch.#helloWait.promise;
    } catch (e) {
      throw withDeath(e as MicroagentError, opts.describeDeath);
    } finally {
      clearTimeout(timer);
    }
    return ch;
  }

  /** The guest's hello (protocol and init version, capabilities, state). */
  get hello(): Hello {
    return this.#hello!;
  }

  /** Resolves with the error that ended the channel (peer closed, violation, local close). */
  get closed(): Promise<MicroagentError> {
    return this.#closed.promise;
  }

  get isOpen(): boolean {
    return this.#state === "open";
  }

  get workloadStarted(): { pid: number; startedAt: string } | undefined {
    return this.#workloadStarted;
  }

  /** Sends the boot config and waits until the guest reports ready (setup done, workload started). */
  async sendBootConfig(cfg: BootConfigInput, opts: { timeoutMs?: number } = {}): Promise<BootReport> {
    this.#assertOpen();
    const parsed = parseBootConfig(cfg);
    if (this.#bootWait) throw ChannelErrors.CHANNEL_CLOSED({ message: "a boot config was already sent on this channel", remediation: "Send the boot config once per boot." });
    const wait = deferred<BootReport>();
    this.#bootWait = wait;
    this.#mux.sendControl("msg", bootConfigMessage(parsed));
    return this.#withTimeout(wait.promise, opts.timeoutMs ?? 10 * 60_000, "boot-config");
  }

  exec(req: ExecRequest): GuestExecHandle {
    this.#assertOpen();
    if (!Array.isArray(req.argv) || req.argv.length === 0) throw CommonErrors.INVALID_ARGUMENT({ message: "exec needs a non-empty argv", remediation: "Pass the command as an argv array." });
    const stdinData = typeof req.stdin === "string" || req.stdin instanceof Uint8Array ? req.stdin : undefined;
    const env = envList(req.env);
    const stream = this.#mux.open({
      kind: "exec",
      argv: req.argv,
      ...(env ? { env } : {}),
      ...(req.cwd ? { cwd: req.cwd } : {}),
      ...(req.user ? { user: req.user } : {}),
      stdin: req.stdin !== undefined && req.stdin !== false,
      ...(req.timeoutMs ? { timeoutMs: req.timeoutMs } : {}),
      stdoutLimitBytes: req.stdoutLimitBytes ?? DEFAULT_OUTPUT_LIMIT_BYTES,
      stderrLimitBytes: req.stderrLimitBytes ?? DEFAULT_OUTPUT_LIMIT_BYTES,
    });
    const h = new GuestExecHandle(stream, this.#opts.describeDeath);
    if (req.timeoutMs) {
      // The guest enforces the timeout; this is the backstop for a guest that stopped answering.
      const backstopMs = req.timeoutMs + this.#opts.execBackstopMs;
      const timer = setTimeout(() => {
        h.fail(ChannelErrors.CHANNEL_TIMEOUT({ message: `exec ${req.argv[0]} got no result ${backstopMs} ms after it started (its timeout was ${req.timeoutMs} ms)`, details: { phase: "exec" } }));
        stream.close();
      }, backstopMs);
      timer.unref();
      h.settled.then(
        () => clearTimeout(timer),
        () => clearTimeout(timer),
      );
    }
    if (stdinData !== undefined) {
      h.writeStdin(stdinData).then(
        () => h.closeStdin(),
        () => {}, // the stream ended first: the result says why
      );
    }
    return h;
  }

  openConsole(opts: ConsoleOptions = {}): ConsoleHandle {
    this.#assertOpen();
    const env = envList(opts.env);
    const stream = this.#mux.open({
      kind: "console",
      cols: opts.cols ?? 80,
      rows: opts.rows ?? 24,
      ...(opts.argv ? { argv: opts.argv } : {}),
      ...(env ? { env } : {}),
      ...(opts.cwd ? { cwd: opts.cwd } : {}),
      ...(opts.user ? { user: opts.user } : {}),
    });
    return new ConsoleHandle(stream, this.#opts.describeDeath);
  }

  /**
   * Receives the workload's streamed stdout/stderr (when the boot config asked for streamOutput).
   * A listener that returns a promise holds the guest's credit for that chunk until it settles.
   */
  onWorkloadOutput(listener: (chunk: ExecOutputChunk) => unknown): () => void {
    this.#workloadListeners.add(listener);
    return () => this.#workloadListeners.delete(listener);
  }

  /** Resolves when the workload exits (or reports it never started). */
  result(): Promise<GuestWorkloadResult> {
    return this.#result.promise;
  }

  /**
   * After a snapshot restore: hand the guest fresh entropy and the host's time (and a new hostname
   * or NIC identity for a fork); resolves with what it applied. One at a time.
   */
  async resume(o: Omit<ResumeMessage, "type">, opts: { timeoutMs?: number } = {}): Promise<ResumedMessage> {
    this.#assertOpen();
    if (this.#resumeWait) throw ChannelErrors.CHANNEL_CLOSED({ message: "a resume is already in flight on this channel", remediation: "Send one resume per restore." });
    const wait = deferred<ResumedMessage>();
    this.#resumeWait = wait;
    this.#mux.sendControl("msg", resumeMessage(o));
    try {
      return await this.#withTimeout(wait.promise, opts.timeoutMs ?? 30_000, "resume");
    } finally {
      this.#resumeWait = undefined;
    }
  }

  /** Before a snapshot: the guest zeroes, removes and unmounts /run/secrets. */
  async wipeSecrets(opts: { timeoutMs?: number } = {}): Promise<SecretsWipedMessage> {
    this.#assertOpen();
    if (this.#wipeWait) throw ChannelErrors.CHANNEL_CLOSED({ message: "a secrets wipe is already in flight on this channel", remediation: "Wait for the first one." });
    const wait = deferred<SecretsWipedMessage>();
    this.#wipeWait = wait;
    this.#mux.sendControl("msg", { type: "secrets-wipe" });
    try {
      return await this.#withTimeout(wait.promise, opts.timeoutMs ?? 30_000, "secrets-wipe");
    } finally {
      this.#wipeWait = undefined;
    }
  }

  /** After a capture or a restore: the boot's secrets again, and a fork's new trust files. */
  async refresh(o: Omit<RefreshMessage, "type">, opts: { timeoutMs?: number } = {}): Promise<RefreshedMessage> {
    this.#assertOpen();
    if (this.#refreshWait) throw ChannelErrors.CHANNEL_CLOSED({ message: "a refresh is already in flight on this channel", remediation: "Wait for the first one." });
    const wait = deferred<RefreshedMessage>();
    this.#refreshWait = wait;
    const msg: RefreshMessage = { type: "refresh", ...o };
    this.#mux.sendControl("msg", msg);
    try {
      return await this.#withTimeout(wait.promise, opts.timeoutMs ?? 30_000, "refresh");
    } finally {
      this.#refreshWait = undefined;
    }
  }

  /** Round trip through the guest's event loop; resolves with the time taken in ms. */
  async ping(timeoutMs = 10_000): Promise<number> {
    this.#assertOpen();
    const id = this.#nextPing++;
    const t0 = performance.now();
    const wait = deferred<void>();
    this.#pings.set(id, () => wait.resolve());
    this.#mux.sendControl("msg", pingMessage(id));
    await this.#withTimeout(wait.promise, timeoutMs, "ping");
    return performance.now() - t0;
  }

  /**
   * Asks the guest to stop: the workload gets its stop signal, up to `timeoutMs` (max 10 s) to exit,
   * then everything is killed, disks synced and the VM powered off. Resolves when the guest confirms
   * or the channel closes (the VM is gone).
   */
  async shutdown(opts: { timeoutMs?: number } = {}): Promise<void> {
    if (this.#state === "closed") return;
    const timeoutMs = Math.min(opts.timeoutMs ?? 10_000, 10_000);
    const wait = (this.#shutdownWait ??= deferred<void>());
    this.#mux.sendControl("msg", shutdownMessage(timeoutMs));
    // The guest itself waits timeoutMs before killing; allow it that plus time to power off.
    await this.#withTimeout(wait.promise, timeoutMs + 15_000, "shutdown");
  }

  /** Closes the channel from the host side (the guest keeps running and waits for a new host). */
  close(): void {
    if (this.#state === "closed") return;
    this.#mux.fail(ChannelErrors.CHANNEL_CLOSED({ message: "the channel was closed by the host" }));
  }

  #assertOpen(): void {
    if (this.#state !== "open") throw this.#mux.failure ?? ChannelErrors.CHANNEL_CLOSED({ message: "the channel is not open" });
  }

  async #withTimeout<T>(p: Promise<T>, ms: number, phase: string): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    const t = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(ChannelErrors.CHANNEL_TIMEOUT({ message: `the guest did not finish ${phase} within ${ms} ms`, details: { phase } })), ms);
    });
    try {
      return await Promise.race([p, t]);
    } finally {
      clearTimeout(timer);
    }
  }

  #onFatal(err: MicroagentError): void {
    const e = withDeath(err, this.#opts.describeDeath);
    const wasShuttingDown = this.#shutdownWait !== undefined;
    this.#state = "closed";
    this.#helloWait.reject(e);
    this.#bootWait?.reject(e);
    if (wasShuttingDown && ChannelErrors.CHANNEL_PEER_CLOSED.is(e)) this.#shutdownWait!.resolve();
    else this.#shutdownWait?.reject(e);
    this.#result.reject(e);
    this.#resumeWait?.reject(e);
    this.#wipeWait?.reject(e);
    this.#refreshWait?.reject(e);
    for (const p of this.#pings.values()) p();
    this.#pings.clear();
    this.#closed.resolve(e);
  }

  #onControl(f: Frame): void {
    if (f.type === "goaway") {
      const g = decodeJson(f.payload, goawaySchema, "goaway");
      const err =
        g.code === "INCOMPATIBLE_VERSION"
          ? ChannelErrors.CHANNEL_INCOMPATIBLE_VERSION({ message: `the guest refused the session: ${g.message}` })
          : ChannelErrors.CHANNEL_GUEST_ERROR({ message: `the guest ended the session (${g.code}): ${g.message}`, details: { guestCode: g.code } });
      this.#mux.fail(err);
      return;
    }
    if (this.#state === "handshake") {
      if (f.type !== "hello") throw ChannelErrors.CHANNEL_PROTOCOL_VIOLATION({ message: `expected hello first, got ${f.type}` });
      const v = decodeJson(f.payload, helloVersionSchema, "hello");
      if (v.protocol !== PROTOCOL_VERSION) {
        const message = `the guest's microagent-init speaks protocol ${v.protocol}, this host speaks ${PROTOCOL_VERSION}`;
        this.#mux.sendControl("goaway", { code: "INCOMPATIBLE_VERSION", message });
        throw ChannelErrors.CHANNEL_INCOMPATIBLE_VERSION({ message, details: { guestProtocol: v.protocol, hostProtocol: PROTOCOL_VERSION } });
      }
      const hello = decodeJson(f.payload, helloSchema, "hello");
      this.#mux.peerMaxFrameBytes = hello.maxFrameBytes;
      this.#mux.peerWindowBytes = hello.initialWindowBytes;
      this.#mux.sendControl("welcome", welcomeMessage(this.#opts.maxFrameBytes, this.#opts.windowBytes, PROTOCOL_VERSION));
      this.#hello = hello;
      this.#mux.awaitingHello = false;
      this.#state = "open";
      this.#helloWait.resolve(hello);
      return;
    }
    if (f.type !== "msg") throw ChannelErrors.CHANNEL_PROTOCOL_VIOLATION({ message: `unexpected ${f.type} frame after the handshake` });
    this.#onMessage(decodeJson(f.payload, guestControlSchema, "control message"));
  }

  #onMessage(m: GuestControlMessage): void {
    switch (m.type) {
      case "ready":
        this.#bootWait?.resolve({ ...(this.#workloadStarted ? { workload: this.#workloadStarted } : {}), alreadyConfigured: m.note !== undefined });
        break;
      case "workload-started":
        this.#workloadStarted = { pid: m.pid, startedAt: m.startedAt };
        break;
      case "result":
        this.#result.resolve(toWorkloadResult(m));
        break;
      case "boot-failed":
        this.#bootWait?.reject(
          ChannelErrors.CHANNEL_BOOT_FAILED({
            message: m.message,
            details: { stage: m.stage, ...(m.index !== undefined ? { index: m.index } : {}), ...(m.command ? { command: m.command } : {}), ...(m.exitCode !== undefined ? { exitCode: m.exitCode } : {}) },
          }),
        );
        break;
      case "pong": {
        const p = m.id !== undefined ? this.#pings.get(m.id) : undefined;
        if (p && m.id !== undefined) {
          this.#pings.delete(m.id);
          p();
        }
        break;
      }
      case "shutdown-complete":
        this.#shutdownWait?.resolve();
        break;
      case "resumed":
        this.#resumeWait?.resolve(m);
        break;
      case "secrets-wiped":
        this.#wipeWait?.resolve(m);
        break;
      case "refreshed":
        this.#refreshWait?.resolve(m);
        break;
    }
  }

  #onGuestOpen(s: MuxStream, payload: Buffer): void {
    decodeJson(payload, guestOpenSchema, "guest open");
    s.onEvent = (ev) => {
      if (ev.kind !== "data") return;
      if (ev.channel !== CHANNELS.out && ev.channel !== CHANNELS.err)
        throw ChannelErrors.CHANNEL_PROTOCOL_VIOLATION({ message: `workload output on channel ${ev.channel}` });
      const chunk: ExecOutputChunk = { stream: ev.channel === CHANNELS.out ? "stdout" : "stderr", data: ev.data };
      const waits: Promise<unknown>[] = [];
      for (const l of this.#workloadListeners) {
        const w = l(chunk);
        if (w instanceof Promise) waits.push(w);
      }
      const n = ev.data.length;
      if (waits.length === 0) s.ack(n);
      else Promise.all(waits).then(() => lateAck(s, n), () => lateAck(s, n));
    };
  }
}

/** Credit granted after an await: the channel may have died meanwhile, which is not an error here. */
function lateAck(s: MuxStream, n: number): void {
  try {
    s.ack(n);
  } catch {
    /* the channel is gone */
  }
}

function toWorkloadResult(m: WorkloadResultMessage): GuestWorkloadResult {
  return {
    ...(m.exitCode !== undefined ? { exitCode: m.exitCode } : {}),
    ...(m.signal !== undefined ? { signal: m.signal } : m.signalNumber !== undefined ? { signal: String(m.signalNumber) } : {}),
    ...(m.startedAt ? { startedAt: m.startedAt } : {}),
    ...(m.exitedAt ? { exitedAt: m.exitedAt } : {}),
    ...(m.startError ? { startError: m.startError } : {}),
    ...(m.outputDroppedBytes !== undefined ? { outputDroppedBytes: m.outputDroppedBytes } : {}),
  };
}
