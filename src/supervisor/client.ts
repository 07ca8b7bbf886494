/**
 * The control-socket client: what the CLI and the Workspace facade use to talk to a running
 * supervisor. One connection per request; errors the supervisor sends back are rebuilt as
 * MicroagentErrors with the same code, kind and remediation.
 */
import { connect as netConnect, type Socket } from "node:net";
import { randomUUID } from "node:crypto";
import { CommonErrors, MicroagentError, definedErrorCodes, isMicroagentError, type ErrorObject } from "../contract/errors.ts";
import {
  CONTROL_PROTOCOL_VERSION,
  LineDecoder,
  MAX_STDIN_CHUNK_BYTES,
  encodeLine,
  type ConsoleExit,
  type ConsoleOpenOptions,
  type ConsoleInput,
  type ExecInput,
  type ExecRequest,
} from "./protocol.ts";
import { ReplySchema, decodeResult, type Op, type OpRequestInput, type OpResult, type Reply } from "./ops.ts";
import { SupervisorErrors } from "./errors.ts";

/** A returned promise pauses reading from the supervisor until it settles (backpressure to the guest). */
type OutputHandler = (stream: "stdout" | "stderr" | "console", data: Buffer) => unknown;
/** Lines a client sends after its request (exec: stdin/stdin_eof/signal; console: input/resize/close). */
type ClientLine = ExecInput | ConsoleInput;

/** What `call` may do besides sending the request line. */
export interface CallHandlers {
  onOutput?: OutputHandler;
  onOpened?: (socket: Socket) => void;
  signal?: AbortSignal;
  stdin?: AsyncIterable<Uint8Array> | Iterable<Uint8Array>;
  onConnected?: (send: (line: ClientLine) => void) => void;
}

/**
 * Rebuild an error the supervisor sent: same code, kind and remediation, even for codes (and kinds)
 * this process never loaded, so `kind` is any string here.
 */
export function errorFromObject(obj: Omit<ErrorObject, "kind"> & { kind: string }): MicroagentError {
  const known = definedErrorCodes().has(obj.code);
  const err = known
    ? new MicroagentError(obj.code, { message: obj.message, remediation: obj.remediation, ...(obj.details ? { details: obj.details } : {}) })
    : SupervisorErrors.SUPERVISOR_PROTOCOL({ message: obj.message, remediation: obj.remediation, ...(obj.details ? { details: obj.details } : {}) });
  if (!known) Object.assign(err, { code: obj.code, kind: obj.kind, retryable: obj.retryable });
  return err;
}

/** Resolves when the socket can take more, or is gone. */
function drained(socket: Socket): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      socket.off("drain", done);
      socket.off("close", done);
      resolve();
    };
    socket.on("drain", done);
    socket.on("close", done);
  });
}

export interface ConsoleConnection {
  write(data: Buffer | string): void;
  resize(cols: number, rows: number): void;
  /** Ask the guest to close the console; `done` resolves afterwards. */
  close(): void;
  /** Receive console output (the first listener also gets what arrived before it); returns an unsubscribe. */
  onData(cb: (data: Buffer) => void): () => void;
  /** Resolves when the console closed from either side: with how its process ended, when the guest reported it. */
  done: Promise<ConsoleExit | undefined>;
}

export class SupervisorClient {
  readonly socketPath: string;

  constructor(socketPath: string) {
    this.socketPath = socketPath;
  }

  private open(): Promise<Socket> {
    return new Promise((resolve, reject) => {
      const s = netConnect(this.socketPath);
      s.once("connect", () => {
        s.off("error", reject);
        resolve(s);
      });
      s.once("error", (e: NodeJS.ErrnoException) =>
        reject(
          SupervisorErrors.SUPERVISOR_UNREACHABLE({
            message: `cannot reach the workspace supervisor at ${this.socketPath}: ${e.code ?? e.message}`,
            cause: e,
          }),
        ),
      );
    });
  }

  /**
   * Send one request; stream lines go to `onOutput`/`onOpened`; resolves with the op's result,
   * checked against the op's result schema (a supervisor of another version answering something
   * else is SUPERVISOR_PROTOCOL naming the op and the field). `stdin` is sent after the request as
   * `stdin` lines (within the socket's flow control), then `stdin_eof`; `onConnected` gets a
   * function to send further lines (e.g. `signal`).
   */
  async call<K extends Op>(op: K, body: OpRequestInput<K>, handlers: CallHandlers = {}): Promise<OpResult<K>> {
    const socket = await this.open();
    const id = randomUUID();
    return new Promise((resolve, reject) => {
      const decoder = new LineDecoder();
      let settled = false;
      const settle = (fn: () => void) => {
        if (settled) return;
        settled = true;
        handlers.signal?.removeEventListener("abort", onAbort);
        fn();
        socket.end();
      };
      const onAbort = () => settle(() => {
        socket.destroy();
        reject(handlers.signal?.reason ?? new Error("aborted"));
      });
      handlers.signal?.addEventListener("abort", onAbort, { once: true });
      let waiting = 0;
      const resumeOne = () => {
        if (--waiting === 0 && !socket.destroyed) socket.resume();
      };
      socket.on("data", (chunk: Buffer) => {
        let lines: string[];
        try {
          lines = decoder.push(chunk);
        } catch (e) {
          settle(() => reject(SupervisorErrors.SUPERVISOR_PROTOCOL({ message: (e as Error).message })));
          return;
        }
        for (const line of lines) {
          let reply: Reply;
          try {
            reply = ReplySchema.parse(JSON.parse(line));
          } catch {
            settle(() => reject(SupervisorErrors.SUPERVISOR_PROTOCOL({ message: "the supervisor sent an invalid reply line" })));
            return;
          }
          if (reply.type === "output") {
            const w = handlers.onOutput?.(reply.stream, Buffer.from(reply.data, "base64"));
            if (w instanceof Promise) {
              // The consumer is behind: stop reading until it catches up, so the supervisor (and
              // through it the guest) waits instead of this process buffering without bound.
              if (waiting++ === 0) socket.pause();
              w.then(resumeOne, resumeOne);
            }
          }
          else if (reply.type === "opened") handlers.onOpened?.(socket);
          else if (reply.type === "result") {
            const decoded = decodeResult(op, reply.value);
            if (decoded.ok) settle(() => resolve(decoded.value));
            else {
              settle(() =>
                reject(
                  SupervisorErrors.SUPERVISOR_PROTOCOL({
                    message: `the supervisor's \`${op}\` result does not match this client's protocol: ${decoded.field}: ${decoded.problem}`,
                    details: { op, field: decoded.field, problem: decoded.problem },
                  }),
                ),
              );
            }
          }
          else settle(() => reject(errorFromObject(reply.error)));
        }
      });
      socket.on("error", () => {});
      socket.on("close", () =>
        settle(() =>
          reject(
            SupervisorErrors.SUPERVISOR_UNREACHABLE({
              message: "the workspace supervisor closed the connection before answering (it may have exited, or it cut off this client for not reading its output)",
            }),
          ),
        ),
      );
      socket.write(encodeLine({ v: CONTROL_PROTOCOL_VERSION, id, op, ...body }));
      handlers.onConnected?.((line) => {
        if (!settled && !socket.destroyed) socket.write(encodeLine(line));
      });
      if (handlers.stdin) {
        const source = handlers.stdin;
        const pump = async () => {
          for await (const chunk of source) {
            const buf = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
            for (let off = 0; off < buf.length; off += MAX_STDIN_CHUNK_BYTES) {
              if (settled || socket.destroyed) return;
              const line = encodeLine({ type: "stdin", data: buf.subarray(off, off + MAX_STDIN_CHUNK_BYTES).toString("base64") });
              if (!socket.write(line)) await drained(socket);
            }
          }
          if (!settled && !socket.destroyed) socket.write(encodeLine({ type: "stdin_eof" }));
        };
        pump().catch((e: unknown) =>
          settle(() => {
            socket.destroy();
            reject(
              isMicroagentError(e)
                ? e
                : CommonErrors.INVALID_ARGUMENT({ message: `reading stdin for the command failed: ${(e as Error).message}`, remediation: "Check the file or pipe given to --stdin.", cause: e }),
            );
          }),
        );
      }
    });
  }

  async status(): Promise<OpResult<"status">> {
    return this.call("status", {});
  }

  /** Round trip to the guest through the supervisor; `guestMs` is the supervisor<->guest part. */
  async ping(): Promise<OpResult<"ping">> {
    return this.call("ping", {});
  }

  async waitReady(timeoutMs?: number): Promise<OpResult<"wait_ready">> {
    return this.call("wait_ready", timeoutMs ? { timeoutMs } : {});
  }

  async readiness(timeoutMs?: number): Promise<OpResult<"readiness">> {
    return this.call("readiness", timeoutMs ? { timeoutMs } : {});
  }

  /**
   * Run a command. `onOutput` may return a promise to hold the output back (see `call`); `io.stdin`
   * streams the command's stdin; `io.onSignal` receives a function that signals the running command.
   */
  async exec(
    req: ExecRequest,
    onOutput?: (stream: "stdout" | "stderr", data: Buffer) => unknown,
    signal?: AbortSignal,
    io: { stdin?: AsyncIterable<Uint8Array> | Iterable<Uint8Array>; onSignal?: (send: (signal: string) => void) => void } = {},
  ): Promise<OpResult<"exec">> {
    return this.call(
      "exec",
      { exec: { ...req, stream: Boolean(onOutput), ...(io.stdin ? { stdinStream: true } : {}) } },
      {
        ...(onOutput ? { onOutput: (s, d) => (s === "console" ? undefined : onOutput(s, d)) } : {}),
        ...(signal ? { signal } : {}),
        ...(io.stdin ? { stdin: io.stdin } : {}),
        ...(io.onSignal ? { onConnected: (send) => io.onSignal?.((sig) => send({ type: "signal", signal: sig })) } : {}),
      },
    );
  }

  async attach(onOutput: (stream: "stdout" | "stderr", data: Buffer) => unknown, signal?: AbortSignal): Promise<OpResult<"attach">> {
    return this.call("attach", {}, { onOutput: (s, d) => (s === "console" ? undefined : onOutput(s, d)), ...(signal ? { signal } : {}) });
  }

  async waitResult(signal?: AbortSignal): Promise<OpResult<"wait_result">> {
    return this.call("wait_result", {}, signal ? { signal } : {});
  }

  /** Resolves with the state the VM ended in. */
  async shutdown(mode: "halt" | "stop", timeoutMs?: number): Promise<OpResult<"shutdown">> {
    return this.call("shutdown", { mode, ...(timeoutMs ? { timeoutMs } : {}) });
  }

  async kill(): Promise<OpResult<"kill">> {
    return this.call("kill", {});
  }

  async quarantine(): Promise<OpResult<"quarantine">> {
    return this.call("quarantine", {});
  }

  async pause(): Promise<OpResult<"pause">> {
    return this.call("pause", {});
  }

  async resume(): Promise<OpResult<"resume">> {
    return this.call("resume", {});
  }

  /** Capture the VM into `stateFile` + a frozen disk layer (the VM goes on on `overlayPath`). */
  async snapshot(req: OpRequestInput<"snapshot">): Promise<OpResult<"snapshot">> {
    return this.call("snapshot", req);
  }

  /** What each supervisor service reports about itself, by name (`{}` when none run). */
  async services(): Promise<OpResult<"services">> {
    return this.call("services", {});
  }

  /**
   * Open a PTY in the guest: the workspace shell, or `opts.argv` (with env/cwd/user like exec).
   * Resolves once the supervisor has the console open.
   */
  async console(opts: ConsoleOpenOptions): Promise<ConsoleConnection> {
    const listeners: ((d: Buffer) => void)[] = [];
    const pending: Buffer[] = [];
    let socket: Socket | undefined;
    const opened = Promise.withResolvers<void>();
    const done = this.call(
      "console",
      opts,
      {
        onOutput: (_s, d) => {
          if (listeners.length === 0) pending.push(d);
          for (const l of listeners) l(d);
        },
        onOpened: (s) => {
          socket = s;
          opened.resolve();
        },
      },
    ).then(
      (v) => v.exit,
      (e) => {
        opened.reject(e);
        throw e;
      },
    );
    // When opening fails, `opened` carries the error to the caller; `done` must not also surface as
    // an unhandled rejection.
    done.catch(() => {});
    await opened.promise;
    const sendLine = (v: ConsoleInput) => {
      if (socket && !socket.destroyed) socket.write(encodeLine(v));
    };
    return {
      write: (data) => sendLine({ type: "input", data: Buffer.from(data).toString("base64") }),
      resize: (cols, rows) => sendLine({ type: "resize", cols, rows }),
      close: () => sendLine({ type: "close" }),
      onData: (cb) => {
        listeners.push(cb);
        for (const d of pending.splice(0)) cb(d);
        return () => {
          const i = listeners.indexOf(cb);
          if (i >= 0) listeners.splice(i, 1);
        };
      },
      done: done.catch((e) => {
        // A console closed by the peer or the VM is an ordinary end.
        if (SupervisorErrors.SUPERVISOR_UNREACHABLE.is(e)) return undefined;
        throw e;
      }),
    };
  }
}
