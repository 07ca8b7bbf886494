/**
 * A small QMP (QEMU Machine Protocol) client over a unix socket. The protocol: QEMU sends a greeting
 * `{"QMP": {...}}`; the client enters command mode with `qmp_capabilities`; then each command is
 * `{"execute": name, "arguments": {...}, "id": n}` and its reply is `{"return": ...}` or
 * `{"error": {"class", "desc"}}` with the same id; asynchronous `{"event": ...}` messages may arrive
 * at any time. Messages are JSON objects terminated by CRLF.
 *
 * QMP errors are translated to VmmErrors in exactly one place (`translateQmpError`).
 */
import { connect, type Socket } from "node:net";
import { z } from "zod";
import type { MicroagentError } from "../../contract/errors.ts";
import { VmmErrors } from "../errors.ts";

/** A line longer than this is a protocol error (QEMU's replies are small; query-* outputs stay far below). */
export const QMP_MAX_LINE_BYTES = 4 * 1024 * 1024;

const GreetingSchema = z.object({ QMP: z.object({ version: z.unknown().optional(), capabilities: z.array(z.unknown()).optional() }).loose() });
const ReturnSchema = z.object({ return: z.unknown(), id: z.unknown().optional() });
const ErrorSchema = z.object({ error: z.object({ class: z.string(), desc: z.string() }), id: z.unknown().optional() });
const EventSchema = z.object({
  event: z.string(),
  data: z.unknown().optional(),
  timestamp: z.object({ seconds: z.number(), microseconds: z.number() }).optional(),
});

export interface QmpEvent {
  event: string;
  data: unknown;
  timestamp?: { seconds: number; microseconds: number };
}

export interface QmpConnectOptions {
  /** Bound on connecting and the capabilities handshake; default 5 s. */
  timeoutMs?: number;
  /** Keep retrying the connection until the deadline (QEMU may not be listening yet). Default true. */
  retry?: boolean;
  /** Stop retrying (e.g. QEMU exited); the call then fails with QMP_CONNECT_FAILED. */
  signal?: AbortSignal;
}

export interface QmpStatus {
  status: string;
  running: boolean;
}

const StatusSchema = z.object({ status: z.string(), running: z.boolean() }).loose();

interface Pending {
  resolve(value: unknown): void;
  reject(error: MicroagentError): void;
  command: string;
  timer: NodeJS.Timeout | undefined;
}

/** Map a QMP `error` reply to our error type. The one translation point for QEMU command failures. */
export function translateQmpError(command: string, error: { class: string; desc: string }): MicroagentError {
  return VmmErrors.QMP_COMMAND_FAILED({
    message: `QEMU refused ${command}: ${error.desc} (${error.class})`,
    details: { command, class: error.class, desc: error.desc },
  });
}

export class QmpClient {
  readonly #socket: Socket;
  readonly #pending = new Map<number, Pending>();
  readonly #listeners = new Set<(e: QmpEvent) => void>();
  readonly #events: QmpEvent[] = [];
  #nextId = 1;
  #buffer: Buffer[] = [];
  #bufferBytes = 0;
  #closedError: MicroagentError | undefined;
  #greeting: { resolve(msg: unknown): void; reject(e: MicroagentError): void } | undefined;
  /** QEMU's version from the greeting. */
  version: unknown;

  private constructor(socket: Socket) {
    this.#socket = socket;
    socket.on("data", (chunk: Buffer) => this.#onData(chunk));
    socket.on("error", (err) => this.#fail(VmmErrors.QMP_CLOSED({ message: `QMP connection failed: ${err.message}`, cause: err })));
    // QEMU ending its side is the end of the conversation even before the socket fully closes.
    socket.on("end", () => this.#fail(VmmErrors.QMP_CLOSED({ message: "QMP connection closed by QEMU" })));
    socket.on("close", () => this.#fail(VmmErrors.QMP_CLOSED({ message: "QMP connection closed by QEMU" })));
  }

  /** Connect to QEMU's QMP socket, read the greeting and enter command mode. */
  static async connect(path: string, opts: QmpConnectOptions = {}): Promise<QmpClient> {
    const timeoutMs = opts.timeoutMs ?? 5000;
    const deadline = Date.now() + timeoutMs;
    let lastError: Error | undefined;
    for (;;) {
      try {
        const socket = await openSocket(path, Math.max(1, deadline - Date.now()));
        const client = new QmpClient(socket);
        try {
          await client.#handshake(Math.max(1, deadline - Date.now()));
        } catch (e) {
          client.close();
          throw e;
        }
        return client;
      } catch (e) {
        const err = e as NodeJS.ErrnoException;
        const retryable = err.code === "ENOENT" || err.code === "ECONNREFUSED" || err.code === "EAGAIN";
        lastError = err;
        if (!(opts.retry ?? true) || !retryable || Date.now() >= deadline || opts.signal?.aborted) {
          if ((e as MicroagentError).code?.startsWith?.("QMP_")) throw e;
          throw VmmErrors.QMP_CONNECT_FAILED({
            message: `cannot connect to QEMU's control socket ${path}: ${lastError.message}`,
            cause: e,
            details: { path },
          });
        }
        await new Promise((resolve) => setTimeout(resolve, 25));
      }
    }
  }

  async #handshake(timeoutMs: number): Promise<void> {
    const greeting = await new Promise<unknown>((resolve, reject) => {
      const timer = setTimeout(() => reject(VmmErrors.QMP_TIMEOUT({ message: `QEMU sent no QMP greeting within ${timeoutMs} ms` })), timeoutMs);
      this.#greeting = {
        resolve: (msg) => {
          clearTimeout(timer);
          resolve(msg);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      };
      if (this.#closedError) {
        clearTimeout(timer);
        reject(this.#closedError);
      }
    });
    const parsed = GreetingSchema.safeParse(greeting);
    if (!parsed.success) throw VmmErrors.QMP_PROTOCOL({ message: `unexpected QMP greeting: ${JSON.stringify(greeting).slice(0, 200)}` });
    this.version = parsed.data.QMP.version;
    await this.execute("qmp_capabilities", undefined, { timeoutMs });
  }

  /** Run one QMP command; resolves with its `return` value. */
  execute(command: string, args?: Record<string, unknown>, opts: { timeoutMs?: number } = {}): Promise<unknown> {
    if (this.#closedError) return Promise.reject(this.#closedError);
    const id = this.#nextId++;
    const timeoutMs = opts.timeoutMs ?? 10_000;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(VmmErrors.QMP_TIMEOUT({ message: `QEMU did not answer ${command} within ${timeoutMs} ms`, details: { command, timeoutMs } }));
      }, timeoutMs);
      this.#pending.set(id, { resolve, reject, command, timer });
      this.#socket.write(`${JSON.stringify({ execute: command, ...(args ? { arguments: args } : {}), id })}\r\n`);
    });
  }

  async queryStatus(): Promise<QmpStatus> {
    const ret = await this.execute("query-status");
    const parsed = StatusSchema.safeParse(ret);
    if (!parsed.success) throw VmmErrors.QMP_PROTOCOL({ message: `unexpected query-status reply: ${JSON.stringify(ret).slice(0, 200)}` });
    return { status: parsed.data.status, running: parsed.data.running };
  }

  /** Ask the guest to power off (ACPI power button). The guest decides when. */
  async systemPowerdown(): Promise<void> {
    await this.execute("system_powerdown");
  }

  /** Pause the vCPUs. */
  async stop(): Promise<void> {
    await this.execute("stop");
  }

  /** Resume the vCPUs. */
  async cont(): Promise<void> {
    await this.execute("cont");
  }

  /**
   * End QEMU at once. QEMU may close the socket before or after replying, so a closed connection
   * counts as success here.
   */
  async quit(): Promise<void> {
    try {
      await this.execute("quit", undefined, { timeoutMs: 5000 });
    } catch (e) {
      if (!VmmErrors.QMP_CLOSED.is(e)) throw e;
    }
  }

  /** Subscribe to asynchronous events (SHUTDOWN, STOP, RESUME, ...). Returns an unsubscribe function. */
  onEvent(listener: (e: QmpEvent) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Events seen so far (bounded to the last 256). */
  events(): readonly QmpEvent[] {
    return this.#events;
  }

  /** Wait for the next event named `name` (or one already seen, when `includePast`). */
  waitForEvent(name: string, opts: { timeoutMs?: number; includePast?: boolean } = {}): Promise<QmpEvent> {
    if (opts.includePast) {
      const seen = this.#events.find((e) => e.event === name);
      if (seen) return Promise.resolve(seen);
    }
    const timeoutMs = opts.timeoutMs ?? 10_000;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        off();
        reject(VmmErrors.QMP_TIMEOUT({ message: `no ${name} event from QEMU within ${timeoutMs} ms` }));
      }, timeoutMs);
      const off = this.onEvent((e) => {
        if (e.event !== name) return;
        clearTimeout(timer);
        off();
        resolve(e);
      });
    });
  }

  close(): void {
    this.#socket.destroy();
  }

  /** True once the connection is gone (every later `execute` fails with QMP_CLOSED). */
  get closed(): boolean {
    return this.#closedError !== undefined;
  }

  #onData(chunk: Buffer): void {
    let start = 0;
    for (;;) {
      const nl = chunk.indexOf(0x0a, start);
      if (nl < 0) break;
      const piece = chunk.subarray(start, nl);
      const line = this.#bufferBytes > 0 ? Buffer.concat([...this.#buffer, piece]) : piece;
      this.#buffer = [];
      this.#bufferBytes = 0;
      start = nl + 1;
      this.#onLine(line.toString("utf8").trim());
      if (this.#closedError) return;
    }
    const rest = chunk.subarray(start);
    if (rest.length > 0) {
      this.#bufferBytes += rest.length;
      // Check the cap before keeping more: a runaway line must not grow memory without bound.
      if (this.#bufferBytes > QMP_MAX_LINE_BYTES) {
        this.#fail(VmmErrors.QMP_PROTOCOL({ message: `QMP message longer than ${QMP_MAX_LINE_BYTES} bytes` }));
        this.#socket.destroy();
        return;
      }
      this.#buffer.push(Buffer.from(rest));
    }
  }

  #onLine(line: string): void {
    if (line === "") return;
    let msg: unknown;
    try {
      msg = JSON.parse(line);
    } catch {
      this.#fail(VmmErrors.QMP_PROTOCOL({ message: `QEMU sent a line that is not JSON: ${line.slice(0, 200)}` }));
      this.#socket.destroy();
      return;
    }
    if (this.#greeting) {
      const g = this.#greeting;
      this.#greeting = undefined;
      g.resolve(msg);
      return;
    }
    const ev = EventSchema.safeParse(msg);
    if (ev.success) {
      const event: QmpEvent = { event: ev.data.event, data: ev.data.data, ...(ev.data.timestamp ? { timestamp: ev.data.timestamp } : {}) };
      this.#events.push(event);
      if (this.#events.length > 256) this.#events.shift();
      for (const l of this.#listeners) l(event);
      return;
    }
    const ok = ReturnSchema.safeParse(msg);
    const err = ok.success ? undefined : ErrorSchema.safeParse(msg);
    const id = ok.success ? ok.data.id : err?.success ? err.data.id : undefined;
    const pending = typeof id === "number" ? this.#pending.get(id) : undefined;
    if (!pending) {
      // A reply to a command that already timed out, or something unknown: not fatal, just ignored.
      return;
    }
    this.#pending.delete(id as number);
    clearTimeout(pending.timer);
    if (ok.success) pending.resolve(ok.data.return);
    else if (err?.success) pending.reject(translateQmpError(pending.command, err.data.error));
    else pending.reject(VmmErrors.QMP_PROTOCOL({ message: `unexpected QMP reply: ${line.slice(0, 200)}` }));
  }

  #fail(error: MicroagentError): void {
    if (this.#closedError) return;
    this.#closedError = error;
    if (this.#greeting) {
      const g = this.#greeting;
      this.#greeting = undefined;
      g.reject(error);
    }
    for (const [id, p] of this.#pending) {
      clearTimeout(p.timer);
      this.#pending.delete(id);
      p.reject(error);
    }
  }
}

function openSocket(path: string, timeoutMs: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect(path);
    const timer = setTimeout(() => {
      socket.destroy();
      reject(Object.assign(new Error(`connect timed out after ${timeoutMs} ms`), { code: "ETIMEDOUT" }));
    }, timeoutMs);
    socket.once("connect", () => {
      clearTimeout(timer);
      socket.removeAllListeners("error");
      resolve(socket);
    });
    socket.once("error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}
