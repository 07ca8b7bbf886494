/**
 * The HTTP API: hono routes over the facade. Each handler parses its input with the library's
 * schemas, calls one library function and returns its result unchanged (the CLI's --json shape);
 * every failure is the library's error object with a status from its kind (common/status.ts).
 * Streams are Server-Sent Events: exec output, workspace events (resumable by id), log follow,
 * image pull progress.
 */
import { Buffer } from "node:buffer";
import { timingSafeEqual, createHash } from "node:crypto";
import { Hono, type Context } from "hono";
import { streamSSE, type SSEStreamingApi } from "hono/streaming";
import type { HttpBindings } from "@hono/node-server";
import { Workspace, FILE_WRITE_MAX_BYTES } from "../../api/workspace.ts";
import { doctor, listImages, pullImage, run } from "../../api/facade.ts";
import { parseRequest } from "../../api/requests.ts";
import { deleteJson, eventsJson, execJson, listJson, statusJson, stopJson } from "../../api/results.ts";
import { CommonErrors } from "../../contract/errors.ts";
import { ApiErrors } from "../../api/errors.ts";
import { followEvents, followLogs, readEvents, readLogBytes } from "../../workspace/history.ts";
import { ServerErrors } from "../common/errors.ts";
import { egressRecords, access, type ServerHost } from "../common/host.ts";
import { IdempotencyStore } from "../common/idempotency.ts";
import { errorBody } from "../common/status.ts";
import { CreateBodySchema, ExecBodySchema, PullBodySchema, RunBodySchema, TimeoutBodySchema } from "./schemas.ts";
import { openApiDocument } from "./openapi.ts";

export interface ApiOptions {
  host: ServerHost;
  /** Required bearer token (TCP listeners); none on the Unix socket, whose mode is the access check. */
  token?: string;
  idempotency?: IdempotencyStore;
  /** Mounts the MCP Streamable HTTP endpoint at /mcp (the daemon passes it; see mcp/http.ts). */
  mcp?: (c: Context<{ Bindings: HttpBindings }>) => Promise<Response>;
}

type Env = { Bindings: HttpBindings };

export function createApi(o: ApiOptions): Hono<Env> {
  const host = o.host;
  const idem = o.idempotency ?? new IdempotencyStore();
  const app = new Hono<Env>();

  app.onError((e, c) => {
    const { status, body } = errorBody(e);
    return c.json(body, status as 400);
  });
  app.notFound((c) => {
    const { status, body } = errorBody(ServerErrors.ROUTE_NOT_FOUND({ message: `no route ${c.req.method} ${c.req.path}` }));
    return c.json(body, status as 404);
  });

  if (o.token) {
    const want = digest(o.token);
    app.use("*", async (c, next) => {
      const got = /^Bearer (.+)$/.exec(c.req.header("authorization") ?? "")?.[1];
      if (!got || !timingSafeEqual(digest(got), want)) {
        const { body } = errorBody(ServerErrors.UNAUTHORIZED({ message: got ? "the bearer token does not match" : "this listener requires a bearer token" }));
        return c.json(body, 401, { "WWW-Authenticate": 'Bearer realm="microagent"' });
      }
      await next();
    });
  }

  app.get("/openapi.json", (c) => c.json(openApiDocument()));
  if (o.mcp) app.all("/mcp", (c) => (o.mcp as NonNullable<ApiOptions["mcp"]>)(c));

  // ---- workspaces ----

  app.get("/v1/workspaces", async (c) => c.json(listJson(await Workspace.list(host))));

  app.post("/v1/workspaces", async (c) => {
    const body = parseRequest(CreateBodySchema, await jsonBody(c), "create request");
    const { name, ...request } = body;
    const { result, replayed } = await idem.run("create", c.req.header("idempotency-key"), body, async () => (await Workspace.create(name, request, host)).created);
    return c.json(result, 201, replayed ? { "Idempotent-Replayed": "true" } : {});
  });

  app.get("/v1/workspaces/:name", async (c) => c.json(statusJson(await (await Workspace.get(c.req.param("name"), host)).status())));

  app.delete("/v1/workspaces/:name", async (c) => {
    const force = ["1", "true"].includes(c.req.query("force") ?? "");
    const ws = await Workspace.get(c.req.param("name"), host);
    return c.json(deleteJson(await ws.delete({ force })));
  });

  app.post("/v1/workspaces/:name/start", async (c) => {
    const { timeoutMs } = parseRequest(TimeoutBodySchema, await jsonBody(c, {}), "start request");
    const ws = await Workspace.get(c.req.param("name"), host);
    return c.json(await ws.start(timeoutMs ? { timeoutMs } : {}));
  });

  for (const verb of ["halt", "stop"] as const) {
    app.post(`/v1/workspaces/:name/${verb}`, async (c) => {
      const { timeoutMs } = parseRequest(TimeoutBodySchema, await jsonBody(c, {}), `${verb} request`);
      const ws = await Workspace.get(c.req.param("name"), host);
      return c.json(stopJson(await ws[verb](timeoutMs ? { timeoutMs } : {})));
    });
  }
  for (const verb of ["pause", "resume"] as const) {
    app.post(`/v1/workspaces/:name/${verb}`, async (c) => {
      const ws = await Workspace.get(c.req.param("name"), host);
      return c.json(await ws[verb]());
    });
  }
  app.post("/v1/workspaces/:name/kill", async (c) => {
    const ws = await Workspace.get(c.req.param("name"), host);
    return c.json(stopJson(await ws.kill()));
  });

  // ---- exec ----

  app.post("/v1/workspaces/:name/exec", async (c) => {
    const { argv, stdin, ...request } = parseRequest(ExecBodySchema, await jsonBody(c), "exec request");
    const ws = await Workspace.connect(c.req.param("name"), host);
    // A client that goes away cancels the command (the supervisor kills it).
    const handle = ws.exec(argv, { ...request, ...(stdin !== undefined ? { stdin: Buffer.from(stdin, "base64") } : {}), signal: c.req.raw.signal });
    if (!wantsEvents(c)) return c.json(execJson(await handle));
    return sse(c, async (s) => {
      for await (const chunk of handle) await s.writeSSE({ event: chunk.stream, data: JSON.stringify({ data: chunk.data.toString("base64") }) });
      // The output went out as it arrived: the exit event carries the result without repeating it.
      const r = await handle;
      await s.writeSSE({ event: "exit", data: JSON.stringify({ ...execJson(r), stdout: "", stderr: "" }) });
    });
  });

  // ---- files ----

  app.get("/v1/workspaces/:name/files", async (c) => {
    const path = requiredPath(c);
    const ws = await Workspace.connect(c.req.param("name"), host);
    const bytes = await ws.files.read(path);
    return c.body(new Uint8Array(bytes), 200, { "Content-Type": "application/octet-stream" });
  });

  app.put("/v1/workspaces/:name/files", async (c) => {
    const path = requiredPath(c);
    const declared = Number(c.req.header("content-length") ?? "0");
    // Refused before the body is read (the facade checks the same limit on what it is given).
    if (declared > FILE_WRITE_MAX_BYTES) {
      throw ApiErrors.FILE_TOO_LARGE({
        message: `${declared} bytes is over the ${FILE_WRITE_MAX_BYTES}-byte limit of a file write`,
        details: { path, sizeBytes: declared, limitBytes: FILE_WRITE_MAX_BYTES },
      });
    }
    const bytes = Buffer.from(await c.req.arrayBuffer());
    const ws = await Workspace.connect(c.req.param("name"), host);
    await ws.files.write(path, bytes);
    return c.json({ workspace: ws.name, path, sizeBytes: bytes.length });
  });

  // ---- history ----

  app.get("/v1/workspaces/:name/logs", async (c) => {
    const name = c.req.param("name");
    if (!wantsEvents(c)) return c.json({ logs: (await readLogBytes(name, access(host))).toString("utf8") });
    await Workspace.get(name, host);
    return sse(c, async (s) => {
      for await (const chunk of followLogs(name, { ...access(host), signal: c.req.raw.signal })) {
        await s.writeSSE({ event: "logs", data: JSON.stringify({ logs: chunk.toString("utf8") }) });
      }
    });
  });

  app.get("/v1/workspaces/:name/events", async (c) => {
    const name = c.req.param("name");
    if (!wantsEvents(c)) return c.json(eventsJson(await readEvents(name, access(host))));
    await Workspace.get(name, host);
    // `id:` is the event's 1-based position in the history: a reconnect with Last-Event-ID resumes after it.
    const after = Number.parseInt(c.req.header("last-event-id") ?? c.req.query("after") ?? "0", 10) || 0;
    return sse(c, async (s) => {
      let n = 0;
      for await (const e of followEvents(name, { ...access(host), signal: c.req.raw.signal })) {
        n++;
        if (n <= after) continue;
        await s.writeSSE({ id: String(n), event: "event", data: JSON.stringify(e) });
      }
    });
  });

  app.get("/v1/workspaces/:name/egress", async (c) => c.json({ records: await egressRecords(c.req.param("name"), host) }));

  // ---- run ----

  app.post("/v1/run", async (c) => {
    const body = parseRequest(RunBodySchema, await jsonBody(c), "run request");
    const { result, replayed } = await idem.run("run", c.req.header("idempotency-key"), body, () => run(body, { ...host, signal: c.req.raw.signal }));
    return c.json(result, 200, replayed ? { "Idempotent-Replayed": "true" } : {});
  });

  // ---- images and host ----

  app.get("/v1/images", async (c) => c.json({ images: await listImages(host) }));

  app.post("/v1/images", async (c) => {
    const { ref, arch } = parseRequest(PullBodySchema, await jsonBody(c), "pull request");
    const request = arch ? { arch } : {};
    if (!wantsEvents(c)) return c.json(await pullImage(ref, request, { ...access(host), signal: c.req.raw.signal }));
    return sse(c, async (s) => {
      const pending: Promise<void>[] = [];
      const img = await pullImage(ref, request, {
        ...access(host),
        signal: c.req.raw.signal,
        onPullProgress: (p) => void pending.push(s.writeSSE({ event: "progress", data: JSON.stringify(p) })),
      });
      await Promise.all(pending);
      await s.writeSSE({ event: "result", data: JSON.stringify(img) });
    });
  });

  app.get("/v1/host", async (c) => c.json(await doctor({}, host)));

  return app;
}

function digest(s: string): Buffer {
  return createHash("sha256").update(s).digest();
}

function wantsEvents(c: Context): boolean {
  return (c.req.header("accept") ?? "").includes("text/event-stream");
}

/** An SSE response whose failure mid-stream is an `error` event carrying the error object. */
function sse(c: Context, body: (s: SSEStreamingApi) => Promise<void>): Response {
  return streamSSE(c, async (s) => {
    try {
      await body(s);
    } catch (e) {
      if (c.req.raw.signal.aborted) return;
      await s.writeSSE({ event: "error", data: JSON.stringify(errorBody(e).body) });
    }
  });
}

async function jsonBody(c: Context, empty?: unknown): Promise<unknown> {
  const text = await c.req.text();
  if (text.trim() === "") {
    if (empty !== undefined) return empty;
    throw CommonErrors.INVALID_ARGUMENT({ message: "the request has no JSON body", remediation: "Send a JSON object with Content-Type: application/json (see /openapi.json)." });
  }
  try {
    return JSON.parse(text) as unknown;
  } catch (e) {
    throw CommonErrors.INVALID_ARGUMENT({ message: `the request body is not JSON: ${(e as Error).message}`, remediation: "Send a JSON object (see /openapi.json)." });
  }
}

function requiredPath(c: Context): string {
  const path = c.req.query("path");
  if (!path) throw CommonErrors.INVALID_ARGUMENT({ message: "missing ?path= (an absolute path in the guest)", remediation: "Pass ?path=/absolute/path/in/the/guest." });
  return path;
}
