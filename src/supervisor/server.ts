/**
 * The supervisor's control server: accepts connections on the control socket, reads one request
 * per connection, dispatches it to the handlers, and writes the replies. Transport only: what each
 * operation does lives in the handlers (session.ts), so the server is tested with fake handlers.
 */
import { createServer, type Server, type Socket } from "node:net";
import { rm, stat } from "node:fs/promises";
import { isMicroagentError, toMicroagentError, CommonErrors } from "../contract/errors.ts";
import {
  ConsoleInputSchema,
  ExecInputSchema,
  LineDecoder,
  MAX_CHUNK_BYTES,
  MAX_INLINE_OUTPUT_BYTES,
  MAX_LINE_BYTES,
  MAX_STDIN_CHUNK_BYTES,
  encodeLine,
  type ConsoleExit,
  type ConsoleOpenOptions,
  type ExecRequest,
} from "./protocol.ts";
import { RequestSchema, type Op, type OpRequest, type OpResult, type Reply, type Request } from "./ops.ts";
import { SupervisorErrors } from "./errors.ts";
import { WorkspaceErrors } from "../workspace/errors.ts";

export type OutputStream = "stdout" | "stderr";

/**
 * Delivers one output chunk to the client. The promise resolves once the client has room for more
 * (its socket queue drained below the per-client bound and the supervisor's total is under its cap):
 * producers take no more from the guest until then, so a client that stops reading backpressures the
 * guest instead of filling the supervisor's memory.
 */
export type OutputSink = (stream: OutputStream, data: Buffer) => unknown;

/** What an exec request can carry besides its request line. */
export interface ExecIo {
  /** The client's stdin chunks (request `stdinStream`), ending at its `stdin_eof`. */
  stdin?: AsyncIterable<Buffer>;
  /** Register for the signals the client asks to deliver to the command. */
  onSignal(cb: (signal: string) => void): void;
}

export interface ControlServerOptions {
  /** Output bytes one client may leave queued before its producer waits. Default 256 KiB. */
  clientQueueBytes?: number;
  /** Output bytes queued across every client before all producers wait. Default 4 MiB. */
  totalQueueBytes?: number;
  /** A client whose queue stays full this long is disconnected (SUPERVISOR_CLIENT_STALLED). Default 30 s. */
  stallMs?: number;
  /** After that, how long its socket may keep the last bytes (and the error line) for it. Default 60 s. */
  stalledLingerMs?: number;
}

export const DEFAULT_CLIENT_QUEUE_BYTES = 256 * 1024;
export const DEFAULT_TOTAL_QUEUE_BYTES = 4 * 1024 * 1024;
export const DEFAULT_CLIENT_STALL_MS = 30_000;

export interface ConsoleSession {
  write(data: Buffer): void;
  resize(cols: number, rows: number): void;
  close(): void;
  /** Output from the guest; a returned promise defers the guest's credit until it settles. */
  onData(cb: (data: Buffer) => unknown): void;
  /** Resolves when the guest side closed (shell exited, VM died, quarantine). */
  closed: Promise<void>;
  /** Resolves once closed: how the process ended, or undefined when it did not report (host close, VM gone). */
  exit?: Promise<ConsoleExit | undefined>;
}

/** What each op does; the result types come from the op table (`ops.ts`). */
export interface ControlHandlers {
  status(): OpResult<"status">;
  ping(): Promise<OpResult<"ping">>;
  waitReady(timeoutMs: number | undefined): Promise<OpResult<"wait_ready">>;
  readiness(timeoutMs: number | undefined): Promise<OpResult<"readiness">>;
  exec(req: ExecRequest, onOutput: OutputSink | undefined, signal: AbortSignal, io?: ExecIo): Promise<OpResult<"exec">>;
  /** Replay the workload's output so far, follow it, and resolve with its result. */
  attach(onOutput: OutputSink, signal: AbortSignal): Promise<OpResult<"attach">>;
  waitResult(signal: AbortSignal): Promise<OpResult<"wait_result">>;
  console(opts: ConsoleOpenOptions): Promise<ConsoleSession>;
  shutdown(mode: "halt" | "stop", timeoutMs: number | undefined): Promise<OpResult<"shutdown">>;
  kill(): Promise<OpResult<"kill">>;
  quarantine(): Promise<OpResult<"quarantine">>;
  pause(): Promise<OpResult<"pause">>;
  resume(): Promise<OpResult<"resume">>;
  /** Absent: the supervisor cannot snapshot (the op is refused as unsupported). */
  snapshot?(req: OpRequest<"snapshot">): Promise<OpResult<"snapshot">>;
  /** Each service's `describe()`, by service name. Absent: the supervisor runs no services (`{}`). */
  services?(): OpResult<"services"> | Promise<OpResult<"services">>;
}

/** What the dispatch of one op may use besides its request. */
interface OpContext {
  output(stream: OutputStream | "console", data: Buffer): Promise<void>;
  signal: AbortSignal;
  stdin: StdinQueue | undefined;
  onSignal(cb: (signal: string) => void): void;
  /** A console op hands its session over for the client's later lines, then says `opened`. */
  opened(session: ConsoleSession): void;
}

/** One entry per op: the compiler checks that every op is dispatched and returns its op's result type. */
type OpDispatch = { [K in Op]: (req: OpRequest<K>, ctx: OpContext) => OpResult<K> | Promise<OpResult<K>> };

function dispatchTable(handlers: ControlHandlers): OpDispatch {
  return {
    status: () => handlers.status(),
    ping: () => handlers.ping(),
    wait_ready: (req) => handlers.waitReady(req.timeoutMs),
    readiness: (req) => handlers.readiness(req.timeoutMs),
    exec: (req, ctx) => {
      if (!req.exec.stream) {
        // The output rides in the one result line: keep it within a line and the heap.
        for (const [flag, v] of [["stdoutLimitBytes", req.exec.stdoutLimitBytes], ["stderrLimitBytes", req.exec.stderrLimitBytes]] as const) {
          if (v !== undefined && v > MAX_INLINE_OUTPUT_BYTES) {
            throw CommonErrors.INVALID_ARGUMENT({
              message: `${flag} ${v} is over ${MAX_INLINE_OUTPUT_BYTES} for a non-streamed exec`,
              remediation: "Ask for streamed output (stream: true; the CLI and library always do) to capture more.",
            });
          }
        }
      }
      const exec = req.exec.stream
        ? req.exec
        : { ...req.exec, stdoutLimitBytes: req.exec.stdoutLimitBytes ?? MAX_INLINE_OUTPUT_BYTES, stderrLimitBytes: req.exec.stderrLimitBytes ?? MAX_INLINE_OUTPUT_BYTES };
      return handlers.exec(exec, req.exec.stream ? (stream, data) => ctx.output(stream, data) : undefined, ctx.signal, {
        ...(ctx.stdin ? { stdin: ctx.stdin } : {}),
        onSignal: ctx.onSignal,
      });
    },
    attach: (_req, ctx) => handlers.attach((stream, data) => ctx.output(stream, data), ctx.signal),
    wait_result: (_req, ctx) => handlers.waitResult(ctx.signal),
    console: async (req, ctx) => {
      const { cols, rows, argv, env, cwd, user } = req;
      const session = await handlers.console({ cols, rows, ...(argv ? { argv } : {}), ...(env ? { env } : {}), ...(cwd ? { cwd } : {}), ...(user ? { user } : {}) });
      session.onData((data) => ctx.output("console", data));
      ctx.opened(session);
      await session.closed;
      const exit = await session.exit?.catch(() => undefined);
      return { closed: true as const, ...(exit ? { exit } : {}) };
    },
    shutdown: (req) => handlers.shutdown(req.mode, req.timeoutMs),
    kill: () => handlers.kill(),
    quarantine: () => handlers.quarantine(),
    pause: () => handlers.pause(),
    resume: () => handlers.resume(),
    snapshot: (req) => {
      if (!handlers.snapshot) throw WorkspaceErrors.SNAPSHOT_UNSUPPORTED({ message: "this supervisor cannot take snapshots" });
      return handlers.snapshot(req);
    },
    services: () => handlers.services?.() ?? {},
  };
}

/** Run one decoded request through its op's entry (the request's `op` selects the entry it fits). */
function runOp<K extends Op>(table: OpDispatch, req: OpRequest<K>, ctx: OpContext): OpResult<K> | Promise<OpResult<K>> {
  const fn: (req: OpRequest<K>, ctx: OpContext) => OpResult<K> | Promise<OpResult<K>> = table[req.op];
  return fn(req, ctx);
}

export interface ControlServer {
  close(): Promise<void>;
  /** Number of connections currently open (for tests and idle checks). */
  connections(): number;
}

interface ResolvedServerOptions {
  clientQueueBytes: number;
  totalQueueBytes: number;
  stallMs: number;
  stalledLingerMs: number;
}

/**
 * The supervisor-wide view of queued output: the total is the sum of every open socket's unsent
 * bytes (computed, so it never drifts), and producers waiting for room are re-checked whenever any
 * socket drains or closes.
 */
class OutputGate {
  readonly sockets = new Set<Socket>();
  readonly waiters = new Set<() => void>();

  queued(): number {
    let n = 0;
    for (const s of this.sockets) n += s.writableLength;
    return n;
  }

  wake(): void {
    for (const w of [...this.waiters]) w();
  }
}

export async function startControlServer(socketPath: string, handlers: ControlHandlers, options: ControlServerOptions = {}): Promise<ControlServer> {
  await rm(socketPath, { force: true });
  const opts: ResolvedServerOptions = {
    clientQueueBytes: options.clientQueueBytes ?? DEFAULT_CLIENT_QUEUE_BYTES,
    totalQueueBytes: options.totalQueueBytes ?? DEFAULT_TOTAL_QUEUE_BYTES,
    stallMs: options.stallMs ?? DEFAULT_CLIENT_STALL_MS,
    stalledLingerMs: options.stalledLingerMs ?? 60_000,
  };
  const gate = new OutputGate();
  const table = dispatchTable(handlers);
  const sockets = new Set<Socket>();
  const server: Server = createServer((socket) => {
    sockets.add(socket);
    gate.sockets.add(socket);
    socket.on("drain", () => gate.wake());
    socket.on("close", () => {
      sockets.delete(socket);
      gate.sockets.delete(socket);
      gate.wake();
    });
    serveConnection(socket, table, gate, opts);
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(socketPath, () => {
      server.off("error", reject);
      resolve();
    });
  });
  // Remember which file is ours: a successor supervisor may have bound the same path by the time
  // we close, and its socket must not be unlinked by us.
  const ours = await stat(socketPath).then((st) => st.ino, () => undefined);
  return {
    connections: () => sockets.size,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
      const now = await stat(socketPath).then((st) => st.ino, () => undefined);
      if (now !== undefined && now === ours) await rm(socketPath, { force: true });
    },
  };
}

/**
 * Stdin chunks from the client, handed to the exec one at a time. The socket is paused while more
 * than a window's worth waits, so a guest command that reads slowly backpressures the client.
 */
class StdinQueue implements AsyncIterable<Buffer> {
  readonly #socket: Socket;
  #chunks: Buffer[] = [];
  #bytes = 0;
  #ended = false;
  #discard = false;
  #wake: (() => void) | undefined;

  constructor(socket: Socket) {
    this.#socket = socket;
  }

  push(chunk: Buffer): void {
    if (this.#discard || this.#ended) return;
    this.#chunks.push(chunk);
    this.#bytes += chunk.length;
    if (this.#bytes > 4 * MAX_STDIN_CHUNK_BYTES) this.#socket.pause();
    this.#wake?.();
  }

  end(): void {
    this.#ended = true;
    this.#wake?.();
  }

  /** Nobody consumes any more (the exec ended): drop what comes, and keep the socket flowing. */
  discard(): void {
    this.#discard = true;
    this.#chunks = [];
    this.#bytes = 0;
    this.#ended = true;
    this.#socket.resume();
    this.#wake?.();
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<Buffer> {
    try {
      for (;;) {
        const c = this.#chunks.shift();
        if (c) {
          this.#bytes -= c.length;
          if (this.#bytes <= MAX_STDIN_CHUNK_BYTES) this.#socket.resume();
          yield c;
          continue;
        }
        if (this.#ended) return;
        await new Promise<void>((r) => (this.#wake = r));
        this.#wake = undefined;
      }
    } finally {
      this.discard();
    }
  }
}

/** One output line, built as a Buffer so the queued bytes live outside the (small) JS heap. */
function outputLine(id: string, stream: OutputStream | "console", data: Buffer): Buffer {
  return Buffer.from(`{"id":${JSON.stringify(id)},"type":"output","stream":"${stream}","data":"${data.toString("base64")}"}\n`);
}

function serveConnection(socket: Socket, table: OpDispatch, gate: OutputGate, opts: ResolvedServerOptions): void {
  const decoder = new LineDecoder();
  const abort = new AbortController();
  let request: Request | undefined;
  let consoleSession: ConsoleSession | undefined;
  let stdin: StdinQueue | undefined;
  const signalListeners: ((signal: string) => void)[] = [];
  let finished = false;
  let stallTimer: NodeJS.Timeout | undefined;

  const send = (reply: Reply) => {
    if (socket.destroyed || finished) return;
    socket.write(encodeLine(reply));
  };
  const finish = (reply: Reply) => {
    send(reply);
    finished = true;
    stdin?.discard();
    clearTimeout(stallTimer);
    socket.end();
    // Its producer is done: what is left queued no longer holds other clients back, and a client
    // that never reads it loses the socket after a bound (every byte it holds is then freed).
    gate.sockets.delete(socket);
    if (socket.writableLength > 0) setTimeout(() => socket.destroy(), opts.stallMs + opts.stalledLingerMs).unref();
    gate.wake();
  };
  const fail = (id: string, e: unknown) => {
    const err = isMicroagentError(e) ? e : toMicroagentError(e);
    finish({ id, type: "error", error: err.toJSON() });
  };

  const hasRoom = () => socket.destroyed || finished || (socket.writableLength <= opts.clientQueueBytes && gate.queued() <= opts.totalQueueBytes);
  // Bytes handed to the socket minus what still waits in it: what the client has taken.
  let written = 0;
  const flushed = () => written - socket.writableLength;
  let waiting = 0;
  // A client that takes nothing for stallMs while its producer waits is cut off. The guest was held
  // back meanwhile (no credit), and only this client's request ends, never the VM. A slow reader
  // that keeps taking bytes is not stalled.
  const watchStall = () => {
    if (stallTimer || finished || socket.writableLength === 0) return;
    const mark = flushed();
    stallTimer = setTimeout(() => {
      stallTimer = undefined;
      if (finished || socket.destroyed || waiting === 0 || socket.writableLength === 0) return;
      if (flushed() > mark) watchStall();
      else stalled();
    }, opts.stallMs);
  };
  const stalled = () => {
    abort.abort();
    const what = request?.op === "attach" ? "the workload keeps running; attach again to follow it" : "its command was killed";
    const queuedBytes = socket.writableLength;
    fail(
      request?.id ?? "",
      SupervisorErrors.SUPERVISOR_CLIENT_STALLED({
        message: `the supervisor disconnected this client: it read none of its output for ${opts.stallMs} ms while ${queuedBytes} bytes waited (${what})`,
        details: { stallMs: opts.stallMs, queuedBytes },
      }),
    );
    // What is already queued (and the error line) stays readable for a while, then the socket goes.
    setTimeout(() => socket.destroy(), opts.stalledLingerMs).unref();
  };
  const room = (): Promise<void> => {
    if (hasRoom()) return Promise.resolve();
    waiting++;
    return new Promise<void>((resolve) => {
      const check = () => {
        if (!hasRoom()) {
          watchStall();
          return;
        }
        gate.waiters.delete(check);
        waiting--;
        resolve();
      };
      gate.waiters.add(check);
      check();
    });
  };
  const output = (id: string, stream: OutputStream | "console", data: Buffer): Promise<void> => {
    if (socket.destroyed || finished) return Promise.resolve();
    for (let off = 0; off < data.length; off += MAX_CHUNK_BYTES) {
      const line = outputLine(id, stream, data.subarray(off, off + MAX_CHUNK_BYTES));
      written += line.length;
      socket.write(line);
    }
    return room();
  };

  socket.on("close", () => {
    clearTimeout(stallTimer);
    abort.abort();
    stdin?.discard();
    consoleSession?.close();
  });
  socket.on("error", () => {});
  socket.on("data", (chunk: Buffer) => {
    if (finished) return; // a client still sending stdin after its answer
    let lines: string[];
    try {
      lines = decoder.push(chunk);
    } catch (e) {
      fail(
        request?.id ?? "",
        SupervisorErrors.SUPERVISOR_PROTOCOL({
          message: (e as Error).message,
          remediation: `A control line carries at most ${MAX_LINE_BYTES} bytes: send large input as \`stdin\` chunks (an exec with stdinStream; \`microagent exec --stdin\` does this), not inline.`,
        }),
      );
      return;
    }
    for (const line of lines) {
      if (finished) return;
      if (!request) {
        let parsed: unknown;
        try {
          parsed = JSON.parse(line);
        } catch {
          fail("", SupervisorErrors.SUPERVISOR_PROTOCOL({ message: "control request is not JSON" }));
          return;
        }
        const r = RequestSchema.safeParse(parsed);
        if (!r.success) {
          const id = typeof (parsed as { id?: unknown })?.id === "string" ? (parsed as { id: string }).id : "";
          fail(id, SupervisorErrors.SUPERVISOR_PROTOCOL({ message: `invalid control request: ${r.error.issues[0]?.message ?? "schema"}` }));
          return;
        }
        request = r.data;
        if (request.op === "exec" && request.exec.stdinStream) stdin = new StdinQueue(socket);
        void dispatch(request);
        continue;
      }
      // Only console connections and exec connections with streamed stdin send more lines.
      if (request.op === "exec") {
        const input = ExecInputSchema.safeParse(safeJson(line));
        if (!input.success || (input.data.type !== "signal" && !stdin)) {
          fail(request.id, SupervisorErrors.SUPERVISOR_PROTOCOL({ message: `unexpected line after the exec request${input.success ? "" : `: ${input.error.issues[0]?.message ?? "schema"}`}` }));
          return;
        }
        if (input.data.type === "stdin") stdin?.push(Buffer.from(input.data.data, "base64"));
        else if (input.data.type === "stdin_eof") stdin?.end();
        else for (const l of signalListeners) l(input.data.signal);
        continue;
      }
      const input = ConsoleInputSchema.safeParse(safeJson(line));
      if (!input.success || request.op !== "console") {
        fail(request.id, SupervisorErrors.SUPERVISOR_PROTOCOL({ message: "unexpected line after the request" }));
        return;
      }
      if (!consoleSession) continue;
      if (input.data.type === "input") consoleSession.write(Buffer.from(input.data.data, "base64"));
      else if (input.data.type === "resize") consoleSession.resize(input.data.cols, input.data.rows);
      else consoleSession.close();
    }
  });

  const dispatch = async (req: Request) => {
    try {
      const value = await runOp(table, req, {
        output: (stream, data) => output(req.id, stream, data),
        signal: abort.signal,
        stdin,
        onSignal: (cb) => void signalListeners.push(cb),
        opened: (session) => {
          consoleSession = session;
          send({ id: req.id, type: "opened" });
        },
      });
      finish({ id: req.id, type: "result", value });
    } catch (e) {
      fail(req.id, e);
    }
  };
}

function safeJson(line: string): unknown {
  try {
    return JSON.parse(line);
  } catch {
    return undefined;
  }
}
