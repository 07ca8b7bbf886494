/**
 * envd, the per-sandbox agent API the SDK talks to at `sandboxUrl`, served host-side: `/health`,
 * `/files` and the Connect-JSON services `process.Process` and `filesystem.Filesystem`. The sandbox
 * is the one named by the `E2b-Sandbox-Id` header (the SDK sends it on every request when
 * E2B_SANDBOX_URL is set), and the request must carry that sandbox's `X-Access-Token`.
 */
import { Buffer } from "node:buffer";
import { createHash, timingSafeEqual } from "node:crypto";
import { gunzipSync, gzipSync } from "node:zlib";
import { z } from "zod";
import { E2bErrors } from "./errors.ts";
import { parseStreamRequest, StreamLost, streamResponse, unaryErrorResponse } from "./connect.ts";
import { httpErrorResponse } from "./http-errors.ts";
import * as guest from "./guest.ts";
import type { ProcessEvent } from "./processes.ts";
import type { Sandbox, SandboxTable } from "./sandboxes.ts";

const Selector = z.looseObject({ pid: z.coerce.number().int().optional(), tag: z.string().optional() });
const StartRequest = z.looseObject({
  process: z.looseObject({
    cmd: z.string().min(1),
    args: z.array(z.string()).default([]),
    envs: z.record(z.string(), z.string()).default({}),
    cwd: z.string().optional(),
  }),
  pty: z.unknown().optional(),
  tag: z.string().optional(),
  stdin: z.boolean().optional(),
});
const ProcessRequest = z.looseObject({ process: Selector.optional() });
const SendInputRequest = z.looseObject({ process: Selector.optional(), input: z.looseObject({ stdin: z.string().optional(), pty: z.string().optional() }).optional() });
const SendSignalRequest = z.looseObject({ process: Selector.optional(), signal: z.union([z.string(), z.number()]).optional() });
const PathRequest = z.looseObject({ path: z.string().default("") });
const ListDirRequest = z.looseObject({ path: z.string().default(""), depth: z.coerce.number().int().nonnegative().default(1) });
const MoveRequest = z.looseObject({ source: z.string().min(1), destination: z.string().min(1) });

function parse<T>(schema: z.ZodType<T>, value: unknown, what: string): T {
  const r = schema.safeParse(value);
  if (r.success) return r.data;
  const issue = r.error.issues[0];
  throw E2bErrors.E2B_BAD_REQUEST({ message: `invalid ${what}: ${issue?.path.join(".") || "(root)"}: ${issue?.message ?? "invalid"}` });
}

/**
 * The user a request runs as: HTTP Basic `user:` (the SDK's form), or `username` on /files; with
 * neither, the server's --user (E2B templates default to `user`), else the image's default user.
 */
function requestUser(req: Request, fallback: string | undefined, query?: URLSearchParams): string | undefined {
  const q = query?.get("username");
  if (q) return q;
  const auth = req.headers.get("authorization");
  const m = auth && /^Basic\s+(.+)$/i.exec(auth);
  const user = m ? Buffer.from(m[1]!, "base64").toString("utf8").split(":")[0] : undefined;
  return user || fallback;
}

function sameSecret(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

/**
 * A signed /files URL (the SDK's `downloadUrl`/`uploadUrl` for a secured sandbox): the signature is
 * `v1_` + base64(sha256("path:operation:user:token[:expiration]")), unpadded, keyed by the sandbox's
 * access token, so the URL works without headers. "ok", "expired", or "invalid" for this sandbox.
 */
function checkSignature(url: URL, method: string, token: string): "ok" | "expired" | "invalid" {
  const signature = url.searchParams.get("signature") ?? "";
  const exp = url.searchParams.get("signature_expiration");
  const op = method === "GET" ? "read" : "write";
  const raw = [url.searchParams.get("path") ?? "", op, url.searchParams.get("username") ?? "", token, ...(exp !== null ? [exp] : [])].join(":");
  const want = `v1_${createHash("sha256").update(raw).digest("base64").replace(/=+$/, "")}`;
  if (!sameSecret(signature, want)) return "invalid";
  if (exp !== null && Number(exp) * 1000 < Date.now()) return "expired";
  return "ok";
}

function signatureError(message: string): Response {
  return new Response(JSON.stringify({ code: 401, message }), { status: 401, headers: { "content-type": "application/json" } });
}

export class Envd {
  readonly #table: SandboxTable;
  readonly #defaultUser: string | undefined;

  constructor(table: SandboxTable, defaultUser?: string) {
    this.#table = table;
    this.#defaultUser = defaultUser;
  }

  /** Route one data-plane request; `sandboxId` came from the multiplexing header. */
  async handle(req: Request, sandboxId: string): Promise<Response> {
    const url = new URL(req.url);
    const path = url.pathname;
    // A sandbox that is gone answers as E2B's proxy does for a dead one: 502 (the SDK reads it as "not running").
    if (!this.#table.has(sandboxId)) {
      return new Response(JSON.stringify({ code: 502, message: `sandbox ${sandboxId} is not running [E2B_SANDBOX_NOT_FOUND]` }), { status: 502, headers: { "content-type": "application/json" } });
    }
    const sb = this.#table.get(sandboxId);
    if (path === "/files" && url.searchParams.has("signature")) return this.#signedFiles(req, url, [sb]);
    const token = req.headers.get("x-access-token") ?? "";
    if (!sameSecret(token, sb.accessToken)) {
      const err = E2bErrors.E2B_UNAUTHORIZED({ message: `missing or wrong X-Access-Token for sandbox ${sandboxId}` });
      return path.startsWith("/process.") || path.startsWith("/filesystem.") ? unaryErrorResponse(err) : httpErrorResponse(err);
    }
    if (path === "/health" && req.method === "GET") return new Response(null, { status: 204 });
    if (path === "/files") {
      try {
        if (req.method === "GET") return await this.#readFile(req, url, sb);
        if (req.method === "POST") return await this.#writeFiles(req, url, sb);
      } catch (e) {
        return httpErrorResponse(e);
      }
    }
    const rpc = /^\/(process\.Process|filesystem\.Filesystem)\/([A-Za-z]+)$/.exec(path);
    if (rpc && req.method === "POST") return this.#rpc(req, sb, rpc[1]!, rpc[2]!);
    return httpErrorResponse(E2bErrors.E2B_UNSUPPORTED({ message: `envd ${req.method} ${path} is not implemented by microagent serve e2b` }));
  }

  /**
   * A signed /files request. Without E2b-Sandbox-Id (a signed URL is fetched bare, and with
   * E2B_SANDBOX_URL it points at this server, not at a per-sandbox host) the sandbox is the one
   * whose token the signature verifies with.
   */
  async handleSigned(req: Request): Promise<Response> {
    return this.#signedFiles(req, new URL(req.url), this.#table.list());
  }

  async #signedFiles(req: Request, url: URL, candidates: readonly Sandbox[]): Promise<Response> {
    let expired = false;
    for (const sb of candidates) {
      const v = checkSignature(url, req.method, sb.accessToken);
      if (v === "expired") expired = true;
      if (v !== "ok") continue;
      try {
        if (req.method === "GET") return await this.#readFile(req, url, sb);
        if (req.method === "POST") return await this.#writeFiles(req, url, sb);
        return httpErrorResponse(E2bErrors.E2B_UNSUPPORTED({ message: `envd ${req.method} /files is not implemented` }));
      } catch (e) {
        return httpErrorResponse(e);
      }
    }
    return signatureError(expired ? "signature is already expired" : "invalid signature");
  }

  async #readFile(req: Request, url: URL, sb: Sandbox): Promise<Response> {
    const path = url.searchParams.get("path") ?? "";
    const data = await guest.readFile(sb.workspace, path, { user: requestUser(req, this.#defaultUser, url.searchParams) });
    const gzip = /\bgzip\b/.test(req.headers.get("accept-encoding") ?? "") && data.length > 0;
    const body = gzip ? gzipSync(data) : data;
    return new Response(body.length > 0 ? new Uint8Array(body) : null, {
      status: 200,
      headers: { "content-type": "application/octet-stream", "content-length": String(body.length), ...(gzip ? { "content-encoding": "gzip" } : {}) },
    });
  }

  async #writeFiles(req: Request, url: URL, sb: Sandbox): Promise<Response> {
    const user = requestUser(req, this.#defaultUser, url.searchParams);
    const queryPath = url.searchParams.get("path") ?? undefined;
    const type = req.headers.get("content-type") ?? "";
    const files: Array<{ path: string; data: Buffer }> = [];
    if (type.startsWith("multipart/form-data")) {
      const form = await req.formData();
      const parts = form.getAll("file");
      for (const p of parts) {
        // A plain field (no file name) is content too: browsers' FormData.append("file", text) sends one.
        const isText = typeof p === "string";
        const name = parts.length === 1 && queryPath ? queryPath : (isText ? undefined : p.name) || queryPath;
        if (!name) throw E2bErrors.E2B_BAD_REQUEST({ message: "an uploaded file has neither a path query parameter nor a file name" });
        files.push({ path: name, data: isText ? Buffer.from(p, "utf8") : Buffer.from(await p.arrayBuffer()) });
      }
    } else {
      if (!queryPath) throw E2bErrors.E2B_BAD_REQUEST({ message: "an octet-stream upload needs the path query parameter" });
      let data = Buffer.from(await req.arrayBuffer());
      if (/\bgzip\b/.test(req.headers.get("content-encoding") ?? "")) data = gunzipSync(data);
      files.push({ path: queryPath, data });
    }
    const out = [];
    for (const f of files) {
      const abs = await guest.writeFile(sb.workspace, f.path, f.data, { user });
      out.push({ name: abs.split("/").at(-1) ?? abs, type: "file", path: abs });
    }
    return Response.json(out);
  }

  async #rpc(req: Request, sb: Sandbox, service: string, method: string): Promise<Response> {
    const user = requestUser(req, this.#defaultUser);
    if (service === "process.Process" && (method === "Start" || method === "Connect")) {
      let body: unknown;
      try {
        body = parseStreamRequest(Buffer.from(await req.arrayBuffer()));
      } catch (e) {
        return streamResponse(async () => {
          throw E2bErrors.E2B_BAD_REQUEST({ message: (e as Error).message });
        });
      }
      const keepaliveS = Number(req.headers.get("keepalive-ping-interval")) || 50;
      return method === "Start" ? this.#start(sb, body, user, keepaliveS) : this.#connect(sb, body, keepaliveS);
    }
    try {
      const body: unknown = await req.json().catch(() => ({}));
      return Response.json(await this.#unary(sb, service, method, body, user));
    } catch (e) {
      return unaryErrorResponse(e);
    }
  }

  #start(sb: Sandbox, body: unknown, user: string | undefined, keepaliveS: number): Response {
    return streamResponse(async (send, signal) => {
      const req = parse(StartRequest, body, "process.Start request");
      if (req.pty !== undefined && req.pty !== null) throw E2bErrors.E2B_UNSUPPORTED({ message: "PTY sessions are not implemented by microagent serve e2b" });
      await this.#follow(sb, send, signal, keepaliveS, (listener) =>
        sb.processes.start(
          {
            config: { cmd: req.process.cmd, args: req.process.args, envs: req.process.envs, ...(req.process.cwd ? { cwd: req.process.cwd } : {}) },
            ...(req.tag ? { tag: req.tag } : {}),
            // envd before 0.3.0 always opened stdin; the field is optional for that reason.
            stdin: req.stdin ?? true,
            ...(user ? { user } : {}),
            sandboxEnv: sb.envs,
          },
          listener,
        ),
      );
    });
  }

  #connect(sb: Sandbox, body: unknown, keepaliveS: number): Response {
    return streamResponse(async (send, signal) => {
      const req = parse(ProcessRequest, body, "process.Connect request");
      const entry = sb.processes.find(req.process);
      await this.#follow(sb, send, signal, keepaliveS, async (listener) => {
        sb.processes.attach(entry, listener);
        listener({ start: { pid: entry.pid } });
      });
    });
  }

  /** Forward a process's events to a stream until its end event or the client leaving. */
  async #follow(sb: Sandbox, send: (m: unknown) => void, signal: AbortSignal, keepaliveS: number, subscribe: (listener: (e: ProcessEvent) => void) => Promise<unknown>): Promise<void> {
    const { promise: ended, resolve: finish } = Promise.withResolvers<void>();
    let lost: string | undefined;
    const listener = (e: ProcessEvent) => {
      if ("lost" in e) {
        lost = e.lost.error;
        return finish();
      }
      send({ event: e });
      if ("end" in e) finish();
    };
    const ping = setInterval(() => send({ event: { keepalive: {} } }), Math.max(1, keepaliveS) * 1000);
    ping.unref();
    const onAbort = () => finish();
    signal.addEventListener("abort", onAbort, { once: true });
    try {
      await subscribe(listener);
      await ended;
      if (lost !== undefined) throw new StreamLost(lost);
    } finally {
      clearInterval(ping);
      signal.removeEventListener("abort", onAbort);
      sb.processes.unsubscribe(listener);
    }
  }

  async #unary(sb: Sandbox, service: string, method: string, body: unknown, user: string | undefined): Promise<unknown> {
    const u = user ? { user } : {};
    const ws = sb.workspace;
    switch (`${service}/${method}`) {
      case "process.Process/List":
        return { processes: sb.processes.list() };
      case "process.Process/SendInput": {
        const req = parse(SendInputRequest, body, "process.SendInput request");
        const entry = sb.processes.find(req.process);
        if (req.input?.pty !== undefined) throw E2bErrors.E2B_UNSUPPORTED({ message: "PTY input is not implemented by microagent serve e2b" });
        await sb.processes.sendStdin(entry, Buffer.from(req.input?.stdin ?? "", "base64"));
        return {};
      }
      case "process.Process/CloseStdin": {
        const req = parse(ProcessRequest, body, "process.CloseStdin request");
        await sb.processes.closeStdin(sb.processes.find(req.process));
        return {};
      }
      case "process.Process/SendSignal": {
        const req = parse(SendSignalRequest, body, "process.SendSignal request");
        const entry = sb.processes.find(req.process);
        const s = String(req.signal ?? "");
        const sig = s === "9" || s === "SIGNAL_SIGKILL" ? "KILL" : s === "15" || s === "SIGNAL_SIGTERM" ? "TERM" : undefined;
        if (!sig) throw E2bErrors.E2B_BAD_REQUEST({ message: `signal '${s}' is not one envd accepts (SIGNAL_SIGTERM, SIGNAL_SIGKILL)` });
        await sb.processes.signal(entry, sig);
        return {};
      }
      case "filesystem.Filesystem/Stat":
        return { entry: await guest.stat(ws, parse(PathRequest, body, "Stat request").path, u) };
      case "filesystem.Filesystem/ListDir": {
        const req = parse(ListDirRequest, body, "ListDir request");
        return { entries: await guest.listDir(ws, req.path, Math.max(1, req.depth), u) };
      }
      case "filesystem.Filesystem/MakeDir":
        return { entry: await guest.makeDir(ws, parse(PathRequest, body, "MakeDir request").path, u) };
      case "filesystem.Filesystem/Move": {
        const req = parse(MoveRequest, body, "Move request");
        return { entry: await guest.move(ws, req.source, req.destination, u) };
      }
      case "filesystem.Filesystem/Remove":
        await guest.remove(ws, parse(PathRequest, body, "Remove request").path, u);
        return {};
      default:
        throw E2bErrors.E2B_UNSUPPORTED({ message: `${service}/${method} is not implemented by microagent serve e2b` });
    }
  }
}
