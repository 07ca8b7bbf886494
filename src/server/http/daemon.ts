/**
 * `microagent serve`: the API daemon. It listens on a Unix socket (mode 0600: same-user access is the
 * check) and, when asked, on TCP with a bearer token (loopback only unless --listen-public). It holds
 * no workspace state: workspaces live on disk and their VMs under their own supervisors, so SIGTERM
 * closes the listeners and leaves every workspace running, and the next daemon sees them all.
 */
import { randomBytes } from "node:crypto";
import { chmod, lstat, mkdir, readFile, stat, unlink, writeFile } from "node:fs/promises";
import { connect, isIP, type Server } from "node:net";
import { dirname, join, resolve } from "node:path";
import { createAdaptorServer } from "@hono/node-server";
import { defaultStateDir } from "../../workspace/paths.ts";
import { ServerErrors } from "../common/errors.ts";
import type { ServerHost } from "../common/host.ts";
import { IdempotencyStore } from "../common/idempotency.ts";
import { mcpHttpHandler } from "../mcp/http.ts";
import { createApi } from "./app.ts";

export interface DaemonOptions {
  host: ServerHost;
  /** Unix socket path (default `<state-dir>/microagent.sock`). */
  socket?: string;
  /** `HOST:PORT` for a TCP listener as well (port 0 picks one). */
  listen?: string;
  /** Bearer token file (default `<state-dir>/api.token`). */
  tokenFile?: string;
  listenPublic?: boolean;
  log?: (line: string) => void;
  /** Resolves the daemon's run when it aborts (tests); SIGTERM and SIGINT also stop it. */
  signal?: AbortSignal;
}

export interface DaemonAddresses {
  socket: string;
  tcp?: { host: string; port: number };
}

/** Parse `HOST:PORT` / `[V6]:PORT`. */
export function parseListen(spec: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(spec);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) throw ServerErrors.LISTEN_REFUSED({ message: `--listen '${spec}' is not HOST:PORT`, remediation: "Pass --listen 127.0.0.1:PORT." });
  return { host: (m[1] ?? m[2]) as string, port };
}

export function isLoopback(host: string): boolean {
  if (host === "localhost") return true;
  if (isIP(host) === 4) return host.startsWith("127.");
  return host === "::1";
}

/** Read the token, or create one (mode 0600) when the file does not exist. */
export async function loadToken(path: string): Promise<string> {
  try {
    const st = await stat(path);
    if ((st.mode & 0o077) !== 0) {
      throw ServerErrors.LISTEN_REFUSED({
        message: `token file ${path} is readable by other users (mode ${(st.mode & 0o777).toString(8)})`,
        remediation: `Run \`chmod 600 ${path}\`, or delete it to have a new one generated.`,
      });
    }
    const token = (await readFile(path, "utf8")).trim();
    if (token.length < 16) throw ServerErrors.LISTEN_REFUSED({ message: `token file ${path} holds fewer than 16 characters`, remediation: `Delete ${path} to have a new token generated.` });
    return token;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
  }
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  const token = randomBytes(32).toString("base64url");
  await writeFile(path, `${token}\n`, { mode: 0o600, flag: "wx" });
  return token;
}

/** A socket file left by a daemon that died is removed; one with a live listener is a conflict. */
async function claimSocket(path: string): Promise<void> {
  const st = await lstat(path).catch(() => undefined);
  if (!st) return;
  if (!st.isSocket()) {
    throw ServerErrors.LISTEN_FAILED({ message: `${path} exists and is not a socket`, remediation: "Pass --socket with a path that is free (or a socket a dead daemon left).", details: { socket: path } });
  }
  const live = await new Promise<boolean>((res) => {
    const s = connect(path);
    s.once("connect", () => (s.destroy(), res(true)));
    s.once("error", () => res(false));
  });
  if (live) throw ServerErrors.LISTEN_FAILED({ message: `another daemon is listening on ${path}`, details: { socket: path } });
  await unlink(path).catch(() => {});
}

function listen(server: Server, ...args: [string] | [number, string]): Promise<void> {
  return new Promise((res, rej) => {
    server.once("error", (e) => rej(ServerErrors.LISTEN_FAILED({ message: `cannot listen on ${args.join(":")}: ${(e as Error).message}`, cause: e })));
    server.listen(...(args as [string]), () => res());
  });
}

/** Start the listeners; resolves with their addresses and a `close()` that stops them (workspaces keep running). */
export async function startDaemon(o: DaemonOptions): Promise<{ addresses: DaemonAddresses; close(): Promise<void> }> {
  const stateDir = resolve(o.host.stateDir ?? defaultStateDir());
  const host: ServerHost = { ...o.host, stateDir };
  const socket = resolve(o.socket ?? join(stateDir, "microagent.sock"));
  let tcp: { host: string; port: number } | undefined;
  let token: string | undefined;
  if (o.listen) {
    tcp = parseListen(o.listen);
    if (!isLoopback(tcp.host) && !o.listenPublic) {
      throw ServerErrors.LISTEN_REFUSED({ message: `--listen ${o.listen} is not a loopback address; the API would be reachable from other hosts` });
    }
    token = await loadToken(resolve(o.tokenFile ?? join(stateDir, "api.token")));
  }
  const idempotency = new IdempotencyStore();
  const mcp = mcpHttpHandler({ host, idempotency });
  const servers: Server[] = [];

  await mkdir(dirname(socket), { recursive: true, mode: 0o700 });
  await claimSocket(socket);
  const unix = createAdaptorServer({ fetch: createApi({ host, idempotency, mcp }).fetch }) as unknown as Server;
  // The socket is created 0600 (umask), not chmod-ed after: no window where another user could connect.
  const umask = process.umask(0o177);
  try {
    await listen(unix, socket);
  } finally {
    process.umask(umask);
  }
  await chmod(socket, 0o600);
  servers.push(unix);

  if (tcp && token) {
    const server = createAdaptorServer({ fetch: createApi({ host, idempotency, mcp, token }).fetch }) as unknown as Server;
    await listen(server, tcp.port, tcp.host);
    const addr = server.address();
    if (addr && typeof addr === "object") tcp = { host: tcp.host, port: addr.port };
    servers.push(server);
  }

  return {
    addresses: { socket, ...(tcp ? { tcp } : {}) },
    async close() {
      await Promise.all(
        servers.map(
          (s) =>
            new Promise<void>((res) => {
              s.close(() => res());
              // Streams (SSE follows) would hold close() forever: end them after a short grace.
              setTimeout(() => (s as unknown as { closeAllConnections?: () => void }).closeAllConnections?.(), 2000).unref();
            }),
        ),
      );
      await unlink(socket).catch(() => {});
    },
  };
}

/** Run the daemon until SIGTERM/SIGINT (or `signal`); then close the listeners and return. */
export async function runDaemon(o: DaemonOptions): Promise<void> {
  const log = o.log ?? (() => {});
  const d = await startDaemon(o);
  log(`microagent: listening on unix:${d.addresses.socket}`);
  if (d.addresses.tcp) log(`microagent: listening on http://${d.addresses.tcp.host.includes(":") ? `[${d.addresses.tcp.host}]` : d.addresses.tcp.host}:${d.addresses.tcp.port}`);
  await new Promise<void>((res) => {
    const stop = () => res();
    process.once("SIGTERM", stop);
    process.once("SIGINT", stop);
    o.signal?.addEventListener("abort", stop, { once: true });
  });
  log("microagent: shutting down (workspaces keep running)");
  await d.close();
}
