/**
 * `serve e2b`'s listener: one TCP port for both planes. A request that names a sandbox in the
 * `E2b-Sandbox-Id` header (as the SDK does for every envd call when E2B_SANDBOX_URL is set) goes to
 * envd; everything else is the control API. The `E2b-Sandbox-Port` header may only name envd's
 * port: sandbox ports are not forwarded.
 */
import type { AddressInfo } from "node:net";
import type { Server } from "node:http";
import { serve } from "@hono/node-server";
import { E2bErrors } from "./errors.ts";
import { controlApp } from "./control.ts";
import { Envd } from "./envd.ts";
import { httpErrorResponse } from "./http-errors.ts";
import { SandboxTable, type SandboxConfig } from "./sandboxes.ts";

/** The port envd listens on in an E2B sandbox; the SDK sends it in E2b-Sandbox-Port. */
export const ENVD_PORT = 49983;

export interface E2bServerOptions extends SandboxConfig {
  host: SandboxConfig["host"];
  hostname: string;
  port: number;
  apiKey?: string | undefined;
  /** The user commands and file operations run as when the SDK names none (default: the image's). */
  defaultUser?: string | undefined;
}

export interface E2bServer {
  url: string;
  table: SandboxTable;
  /** Stop listening and kill every sandbox this server created. */
  close(): Promise<void>;
}

export function e2bFetch(table: SandboxTable, apiKey: string | undefined, defaultUser?: string): (req: Request) => Promise<Response> {
  const control = controlApp(table, { apiKey });
  const envd = new Envd(table, defaultUser);
  return async (req) => {
    const id = req.headers.get("e2b-sandbox-id");
    if (!id) {
      // A signed file URL arrives bare: the signature names its sandbox (see Envd.handleSigned).
      if (new URL(req.url).pathname === "/files" && new URL(req.url).searchParams.has("signature")) return envd.handleSigned(req);
      return control.fetch(req);
    }
    const port = req.headers.get("e2b-sandbox-port");
    if (port && Number(port) !== ENVD_PORT) {
      return httpErrorResponse(E2bErrors.E2B_UNSUPPORTED({ message: `port ${port} of sandbox ${id}: only envd (${ENVD_PORT}) is served; sandbox ports are not forwarded` }));
    }
    return envd.handle(req, id);
  };
}

export async function startE2bServer(opts: E2bServerOptions): Promise<E2bServer> {
  const table = new SandboxTable(opts);
  const fetch = e2bFetch(table, opts.apiKey, opts.defaultUser);
  const server = await new Promise<Server>((resolve, reject) => {
    const s = serve({ fetch, port: opts.port, hostname: opts.hostname }, () => resolve(s as Server)) as Server;
    s.once("error", reject);
  });
  const addr = server.address() as AddressInfo;
  const host = addr.family === "IPv6" ? `[${addr.address}]` : addr.address;
  return {
    url: `http://${host}:${addr.port}`,
    table,
    async close() {
      await new Promise<void>((r) => {
        server.close(() => r());
        server.closeAllConnections();
      });
      await table.killAll();
    },
  };
}
