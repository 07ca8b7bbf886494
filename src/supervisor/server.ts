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
  LineDecoder,
  MAX_CHUNK_BYTES,
  RequestSchema,
  encodeLine,
  type ExecRequest,
  type ExecResult,
  type Readiness,
  type Reply,
  type Request,
  type SupervisorStatus,
  type WorkloadResult,
} from "./protocol.ts";
import { SupervisorErrors } from "./errors.ts";

export type OutputStream = "stdout" | "stderr";

/** Unread reply bytes a client may leave queued before it is disconnected. */
export const MAX_PENDING_REPLY_BYTES = 32 * 1024 * 1024;

export interface ConsoleSession {
  write(data: Buffer): void;
  resize(cols: number, rows: number): void;
  close(): void;
  onData(cb: (data: Buffer) => void): void;
  /** Resolves when the guest side closed (shell exited, VM died, quarantine). */
  closed: Promise<void>;
}

export interface ControlHandlers {
  status(): SupervisorStatus;
  ping(): Promise<{ guestMs: number }>;
  waitReady(timeoutMs: number | undefined): Promise<SupervisorStatus>;
  readiness(timeoutMs: number | undefined): Promise<Readiness>;
  exec(req: ExecRequest, onOutput: ((stream: OutputStream, data: Buffer) => void) | undefined, signal: AbortSignal): Promise<ExecResult>;
  /** Replay the workload's output so far, follow it, and resolve with its result. */
  attach(onOutput: (stream: OutputStream, data: Buffer) => void, signal: AbortSignal): Promise<WorkloadResult>;
  waitResult(signal: AbortSignal): Promise<WorkloadResult>;
  console(size: { cols: number; rows: number }): Promise<ConsoleSession>;
  shutdown(mode: "halt" | "stop", timeoutMs: number | undefined): Promise<unknown>;
  kill(): Promise<unknown>;
  quarantine(): Promise<unknown>;
}

export interface ControlServer {
  close(): Promise<void>;
  /** Number of connections currently open (for tests and idle checks). */
  connections(): number;
}

export async function startControlServer(socketPath: string, handlers: ControlHandlers): Promise<ControlServer> {
  await rm(socketPath, { force: true });
  const sockets = new Set<Socket>();
  const server: Server = createServer((socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    serveConnection(socket, handlers);
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

function serveConnection(socket: Socket, handlers: ControlHandlers): void {
  const decoder = new LineDecoder();
  const abort = new AbortController();
  let request: Request | undefined;
  let consoleSession: ConsoleSession | undefined;
  let finished = false;

  const send = (reply: Reply) => {
    if (socket.destroyed || finished) return;
    // A client that does not read must not make the supervisor buffer without bound: past the cap
    // it is cut off (its request is aborted; the guest side keeps its own flow control).
    if (socket.writableLength > MAX_PENDING_REPLY_BYTES) {
      socket.destroy();
      return;
    }
    socket.write(encodeLine(reply));
  };
  const finish = (reply: Reply) => {
    send(reply);
    finished = true;
    socket.end();
  };
  const fail = (id: string, e: unknown) => {
    const err = isMicroagentError(e) ? e : toMicroagentError(e);
    finish({ id, type: "error", error: err.toJSON() });
  };
  const output = (id: string, stream: OutputStream | "console", data: Buffer) => {
    for (let off = 0; off < data.length; off += MAX_CHUNK_BYTES) {
      send({ id, type: "output", stream, data: data.subarray(off, off + MAX_CHUNK_BYTES).toString("base64") });
    }
  };

  socket.on("close", () => {
    abort.abort();
    consoleSession?.close();
  });
  socket.on("error", () => {});
  socket.on("data", (chunk: Buffer) => {
    let lines: string[];
    try {
      lines = decoder.push(chunk);
    } catch (e) {
      fail(request?.id ?? "", SupervisorErrors.SUPERVISOR_PROTOCOL({ message: (e as Error).message }));
      return;
    }
    for (const line of lines) {
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
        void dispatch(request);
        continue;
      }
      // Only console connections send more lines.
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
      let value: unknown;
      switch (req.op) {
        case "status":
          value = handlers.status();
          break;
        case "ping":
          value = await handlers.ping();
          break;
        case "wait_ready":
          value = await handlers.waitReady(req.timeoutMs);
          break;
        case "readiness":
          value = await handlers.readiness(req.timeoutMs);
          break;
        case "exec":
          value = await handlers.exec(
            req.exec,
            req.exec.stream ? (stream, data) => output(req.id, stream, data) : undefined,
            abort.signal,
          );
          break;
        case "attach":
          value = await handlers.attach((stream, data) => output(req.id, stream, data), abort.signal);
          break;
        case "wait_result":
          value = await handlers.waitResult(abort.signal);
          break;
        case "console": {
          const session = await handlers.console({ cols: req.cols, rows: req.rows });
          consoleSession = session;
          session.onData((data) => output(req.id, "console", data));
          send({ id: req.id, type: "opened" });
          await session.closed;
          value = { closed: true };
          break;
        }
        case "shutdown":
          value = await handlers.shutdown(req.mode, req.timeoutMs);
          break;
        case "kill":
          value = await handlers.kill();
          break;
        case "quarantine":
          value = await handlers.quarantine();
          break;
        default: {
          const never: never = req;
          throw CommonErrors.INTERNAL({ message: `unhandled op ${(never as Request).op}` });
        }
      }
      finish({ id: req.id, type: "result", value: value ?? null });
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
