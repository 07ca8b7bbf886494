/**
 * E2B's control API (the SDK's `apiUrl`): sandboxes created, listed, inspected, given a timeout,
 * connected to and killed. Both path generations the SDK has used are served: `POST /sandboxes`
 * and `/sandboxes/{id}/connect` (SDK <= 2.45), `POST /v2/sandboxes` and `/v2/sandboxes/{id}/connect`
 * (2.51). Every request must carry `X-API-KEY` (any non-empty value, or the server's `--api-key`).
 */
import { Buffer } from "node:buffer";
import { timingSafeEqual } from "node:crypto";
import { Hono, type Context } from "hono";
import { z } from "zod";
import { E2bErrors } from "./errors.ts";
import { httpErrorResponse } from "./http-errors.ts";
import { CLIENT_ID, ENVD_VERSION, NewSandboxSchema, type Sandbox, type SandboxTable } from "./sandboxes.ts";

const TimeoutBody = z.looseObject({ timeout: z.number().int().nonnegative() });
const ConnectBody = z.looseObject({ timeout: z.number().int().nonnegative().optional() });
const PauseBody = z.looseObject({ memory: z.boolean().nullish() });
const RefreshBody = z.looseObject({ duration: z.number().int().nonnegative().optional() });

async function body<T>(c: Context, schema: z.ZodType<T>, what: string): Promise<T> {
  let raw: unknown;
  try {
    raw = await c.req.json();
  } catch {
    raw = {};
  }
  const r = schema.safeParse(raw ?? {});
  if (r.success) return r.data;
  const issue = r.error.issues[0];
  throw E2bErrors.E2B_BAD_REQUEST({ message: `invalid ${what}: ${issue?.path.join(".") || "(root)"}: ${issue?.message ?? "invalid"}` });
}

/** The `Sandbox` object create and connect return. */
function sandboxJson(sb: Sandbox) {
  return { sandboxID: sb.id, templateID: sb.templateId, clientID: CLIENT_ID, envdVersion: ENVD_VERSION, envdAccessToken: sb.accessToken, domain: null };
}

/** `ListedSandbox` / `SandboxDetail`. */
function listedJson(sb: Sandbox) {
  return {
    sandboxID: sb.id,
    templateID: sb.templateId,
    clientID: CLIENT_ID,
    startedAt: sb.startedAt.toISOString(),
    endAt: sb.endAt.toISOString(),
    cpuCount: sb.cpuCount,
    memoryMB: sb.memoryMB,
    diskSizeMB: sb.diskSizeMB,
    state: sb.state === "running" ? "running" : "paused",
    envdVersion: ENVD_VERSION,
    metadata: sb.metadata,
  };
}

/** The SDK's metadata filter: `k=v&k2=v2`, each part URI-encoded once more before the query encoding. */
function metadataFilter(raw: string | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  if (!raw) return out;
  for (const [k, v] of new URLSearchParams(raw)) out[decodeURIComponent(k)] = decodeURIComponent(v);
  return out;
}

function filtered(table: SandboxTable, c: Context): Sandbox[] {
  const states = c.req.queries("state")?.flatMap((s) => s.split(",")).filter(Boolean) ?? [];
  const meta = metadataFilter(c.req.query("metadata"));
  const template = c.req.query("template");
  let out = table.list().filter((sb) => Object.entries(meta).every(([k, v]) => sb.metadata[k] === v));
  if (states.length > 0) out = out.filter((sb) => states.includes(sb.state === "running" ? "running" : "paused"));
  if (template) out = out.filter((sb) => sb.templateId === template);
  return out;
}

export function controlApp(table: SandboxTable, opts: { apiKey?: string | undefined }): Hono {
  const app = new Hono();
  app.onError((e) => httpErrorResponse(e));
  app.notFound((c) => httpErrorResponse(E2bErrors.E2B_UNSUPPORTED({ message: `${c.req.method} ${c.req.path} is not part of the E2B API microagent serve e2b implements` })));

  app.get("/health", (c) => c.json({ ok: true }));

  app.use("*", async (c, next) => {
    const key = c.req.header("x-api-key") ?? /^Bearer\s+(.+)$/i.exec(c.req.header("authorization") ?? "")?.[1] ?? "";
    const ok = opts.apiKey === undefined ? key.length > 0 : key.length === opts.apiKey.length && timingSafeEqual(Buffer.from(key), Buffer.from(opts.apiKey));
    if (!ok) throw E2bErrors.E2B_UNAUTHORIZED({ message: key ? "the X-API-KEY does not match this server's --api-key" : "the request carries no X-API-KEY (set E2B_API_KEY)" });
    await next();
  });

  const create = async (c: Context) => {
    const req = await body(c, NewSandboxSchema, "sandbox create request");
    if (req.autoPause) throw E2bErrors.E2B_UNSUPPORTED({ message: "autoPause needs snapshots, which microagent does not have yet" });
    return c.json(sandboxJson(await table.create(req)), 201);
  };
  app.post("/sandboxes", create);
  app.post("/v2/sandboxes", create);

  app.get("/sandboxes", (c) => c.json(filtered(table, c).map(listedJson)));
  app.get("/v2/sandboxes", (c) => {
    const limit = Number(c.req.query("limit")) || undefined;
    const all = filtered(table, c);
    return c.json((limit ? all.slice(0, limit) : all).map(listedJson));
  });

  app.get("/sandboxes/:id", (c) => c.json({ ...listedJson(table.get(c.req.param("id"))), envdAccessToken: table.get(c.req.param("id")).accessToken }));

  app.delete("/sandboxes/:id", async (c) => {
    const id = c.req.param("id");
    if (!(await table.kill(id))) throw E2bErrors.E2B_SANDBOX_NOT_FOUND({ message: `sandbox ${id} does not exist`, details: { sandboxID: id } });
    return c.body(null, 204);
  });

  app.post("/sandboxes/:id/timeout", async (c) => {
    const sb = table.get(c.req.param("id"));
    table.setTimeout(sb, (await body(c, TimeoutBody, "timeout request")).timeout);
    return c.body(null, 204);
  });

  app.post("/sandboxes/:id/refreshes", async (c) => {
    const sb = table.get(c.req.param("id"));
    const d = (await body(c, RefreshBody, "refresh request")).duration;
    const left = Math.ceil((sb.endAt.getTime() - Date.now()) / 1000);
    table.setTimeout(sb, Math.max(left, d ?? 60));
    return c.body(null, 204);
  });

  // Connecting to a running sandbox extends its timeout, never shortens it (as E2B does); connecting
  // to a paused one resumes it (201, as E2B answers a resume).
  const connect = async (c: Context) => {
    const sb = table.get(c.req.param("id")!);
    const t = (await body(c, ConnectBody, "connect request")).timeout;
    if (await table.resume(sb, t)) return c.json(sandboxJson(sb), 201);
    if (t !== undefined && Date.now() + t * 1000 > sb.endAt.getTime()) table.setTimeout(sb, t);
    return c.json(sandboxJson(sb), 200);
  };
  app.post("/sandboxes/:id/connect", connect);
  app.post("/v2/sandboxes/:id/connect", connect);

  app.post("/sandboxes/:id/pause", async (c) => {
    const sb = table.get(c.req.param("id"));
    const memory = (await body(c, PauseBody, "pause request")).memory;
    if (!(await table.pause(sb, memory !== false))) throw E2bErrors.E2B_CONFLICT({ message: `sandbox ${sb.id} is already paused`, details: { sandboxID: sb.id } });
    return c.body(null, 204);
  });
  // The older resume call (SDKs before connect resumed): 409 when the sandbox is not paused.
  app.post("/sandboxes/:id/resume", async (c) => {
    const sb = table.get(c.req.param("id"));
    const t = (await body(c, ConnectBody, "resume request")).timeout;
    if (!(await table.resume(sb, t))) throw E2bErrors.E2B_CONFLICT({ message: `sandbox ${sb.id} is not paused`, details: { sandboxID: sb.id } });
    return c.json(sandboxJson(sb), 201);
  });

  for (const op of ["snapshots", "fork"]) {
    app.post(`/sandboxes/:id/${op}`, (c) => {
      table.get(c.req.param("id"));
      throw E2bErrors.E2B_UNSUPPORTED({ message: `${op} needs VM snapshots through the E2B API, which microagent serve e2b does not offer yet` });
    });
  }
  return app;
}
