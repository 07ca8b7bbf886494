/**
 * A client of the HTTP API daemon for tests: undici over the Unix socket (or TCP), with a small
 * Server-Sent Events reader. It is deliberately not the daemon's code: it speaks the documented wire
 * format (docs/api.md), so a test that passes proves the format, not the implementation.
 */
import { Agent, request } from "undici";

export interface ApiTarget {
  /** Unix socket path; or `tcp` for http://host:port. */
  socket?: string;
  tcp?: { host: string; port: number };
  token?: string;
}

export interface ApiResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  json(): any;
}

const agents = new Map<string, Agent>();
function agentFor(t: ApiTarget): Agent | undefined {
  if (!t.socket) return undefined;
  let a = agents.get(t.socket);
  if (!a) agents.set(t.socket, (a = new Agent({ connect: { socketPath: t.socket } })));
  return a;
}

export async function closeAgents(): Promise<void> {
  for (const a of agents.values()) await a.close().catch(() => {});
  agents.clear();
}

function origin(t: ApiTarget): string {
  return t.tcp ? `http://${t.tcp.host}:${t.tcp.port}` : "http://localhost";
}

export async function api(
  t: ApiTarget,
  method: string,
  path: string,
  o: { json?: unknown; raw?: Buffer; headers?: Record<string, string>; signal?: AbortSignal } = {},
): Promise<ApiResponse> {
  const headers: Record<string, string> = { ...(o.headers ?? {}) };
  if (t.token) headers.authorization = `Bearer ${t.token}`;
  let body: string | Buffer | undefined;
  if (o.json !== undefined) {
    headers["content-type"] = "application/json";
    body = JSON.stringify(o.json);
  } else if (o.raw) {
    headers["content-type"] = "application/octet-stream";
    body = o.raw;
  }
  const dispatcher = agentFor(t);
  const r = await request(`${origin(t)}${path}`, { method: method as "GET", headers, ...(body !== undefined ? { body } : {}), ...(dispatcher ? { dispatcher } : {}), ...(o.signal ? { signal: o.signal } : {}) });
  const buf = Buffer.from(await r.body.arrayBuffer());
  return { status: r.statusCode, headers: r.headers, body: buf, json: () => JSON.parse(buf.toString("utf8")) };
}

export interface SseEvent {
  event: string;
  data: string;
  id?: string;
}

/** Open an SSE stream; yields each event; ends when the server ends the response (or `signal` aborts). */
export async function* sse(
  t: ApiTarget,
  method: string,
  path: string,
  o: { json?: unknown; headers?: Record<string, string>; signal?: AbortSignal } = {},
): AsyncGenerator<SseEvent> {
  const headers: Record<string, string> = { accept: "text/event-stream", ...(o.headers ?? {}) };
  if (t.token) headers.authorization = `Bearer ${t.token}`;
  if (o.json !== undefined) headers["content-type"] = "application/json";
  const dispatcher = agentFor(t);
  const r = await request(`${origin(t)}${path}`, {
    method: method as "GET",
    headers,
    ...(o.json !== undefined ? { body: JSON.stringify(o.json) } : {}),
    ...(dispatcher ? { dispatcher } : {}),
    ...(o.signal ? { signal: o.signal } : {}),
  });
  if (r.statusCode !== 200 || !String(r.headers["content-type"]).startsWith("text/event-stream")) {
    throw new Error(`expected an event stream, got ${r.statusCode} ${r.headers["content-type"]}: ${await r.body.text()}`);
  }
  let buf = "";
  try {
    for await (const chunk of r.body) {
      buf += (chunk as Buffer).toString("utf8");
      let i: number;
      while ((i = buf.indexOf("\n\n")) >= 0) {
        const block = buf.slice(0, i);
        buf = buf.slice(i + 2);
        const ev: SseEvent = { event: "message", data: "" };
        const data: string[] = [];
        for (const line of block.split("\n")) {
          const c = line.indexOf(":");
          if (c === 0) continue;
          const field = c < 0 ? line : line.slice(0, c);
          const value = c < 0 ? "" : line.slice(c + 1).replace(/^ /, "");
          if (field === "event") ev.event = value;
          else if (field === "data") data.push(value);
          else if (field === "id") ev.id = value;
        }
        ev.data = data.join("\n");
        yield ev;
      }
    }
  } catch (e) {
    if (!o.signal?.aborted) throw e;
  }
}
