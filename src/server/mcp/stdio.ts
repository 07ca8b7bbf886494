/**
 * `microagent serve mcp`: the MCP server on stdio, for a client that spawns it. On a terminal there is
 * no client, only a person who would see JSON-RPC and wonder: refuse with a hint instead.
 */
import { StdioServerTransport } from "@modelcontextprotocol/server/stdio";
import { ServerErrors } from "../common/errors.ts";
import type { ServerHost } from "../common/host.ts";
import { buildMcpServer } from "./tools.ts";

export async function runMcpStdio(o: { host: ServerHost; stdinIsTty: boolean }): Promise<void> {
  if (o.stdinIsTty) {
    throw ServerErrors.TTY_REFUSED({ message: "`microagent serve mcp` was started on a terminal; it talks JSON-RPC on stdin/stdout to an MCP client" });
  }
  const server = buildMcpServer({ host: o.host });
  const transport = new StdioServerTransport();
  const closed = new Promise<void>((resolve) => {
    transport.onclose = () => resolve();
    process.stdin.once("end", () => resolve());
  });
  await server.connect(transport);
  await closed;
  await server.close().catch(() => {});
}
