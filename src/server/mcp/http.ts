/**
 * MCP over Streamable HTTP at /mcp on the daemon: stateless (one server and transport per request,
 * no session), behind the SDK's localhost Host and Origin checks, so a web page reached through DNS
 * rebinding cannot drive it. The daemon's own listener checks (socket mode, bearer token) run first.
 */
import type { Context } from "hono";
import type { HttpBindings } from "@hono/node-server";
import { RESPONSE_ALREADY_SENT } from "@hono/node-server/utils/response";
import { NodeStreamableHTTPServerTransport, localhostHostValidation, localhostOriginValidation } from "@modelcontextprotocol/node";
import type { IdempotencyStore } from "../common/idempotency.ts";
import type { ServerHost } from "../common/host.ts";
import { buildMcpServer } from "./tools.ts";

export function mcpHttpHandler(o: { host: ServerHost; idempotency: IdempotencyStore }): (c: Context<{ Bindings: HttpBindings }>) => Promise<Response> {
  const validHost = localhostHostValidation();
  const validOrigin = localhostOriginValidation();
  return async (c) => {
    const { incoming, outgoing } = c.env;
    // Each check answers 403 itself when it fails.
    if (!validHost(incoming, outgoing) || !validOrigin(incoming, outgoing)) return RESPONSE_ALREADY_SENT;
    const server = buildMcpServer(o);
    const transport = new NodeStreamableHTTPServerTransport({ sessionIdGenerator: undefined });
    outgoing.on("close", () => {
      void transport.close().catch(() => {});
      void server.close().catch(() => {});
    });
    await server.connect(transport);
    await transport.handleRequest(incoming, outgoing);
    return RESPONSE_ALREADY_SENT;
  };
}
