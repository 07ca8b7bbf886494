/**
 * `microagent serve`: the agent-facing adapters over the library. The bare command runs the HTTP API
 * daemon (Unix socket by default, TCP with a bearer token on request); `serve mcp` is the MCP server
 * on stdio. Each adapter is a thin layer over src/api: the behaviour lives in the library, the
 * adapter only translates requests, results and errors.
 */
import { Command, Option } from "commander";
import { action } from "../action.ts";
import { runDaemon } from "../../server/http/daemon.ts";
import { runMcpStdio } from "../../server/mcp/stdio.ts";
// serve e2b: the E2B-compatible server's subcommand (built in src/server/e2b).
import { e2bCommand } from "../../server/e2b/command.ts";

export function serveCommand(): Command {
  const serve = new Command("serve")
    .description("serve the HTTP API daemon (Unix socket by default); `serve mcp` is the MCP server on stdio")
    .option("--socket <path>", "Unix socket path (default <state-dir>/microagent.sock)")
    .option("--listen <host:port>", "also listen on TCP (loopback only unless --listen-public); requires a bearer token")
    .option("--token-file <path>", "bearer token file for TCP clients (generated, mode 0600, if absent; default <state-dir>/api.token)")
    .addOption(new Option("--listen-public", "allow a non-loopback --listen address (the token is still required)"))
    .action(
      action(async (ctx, o: { socket?: string; listen?: string; tokenFile?: string; listenPublic?: boolean }) => {
        await runDaemon({
          host: { stateDir: ctx.globals.stateDir, ...(ctx.globals.supervisor ? { supervisorPath: ctx.globals.supervisor } : {}) },
          ...(o.socket ? { socket: o.socket } : {}),
          ...(o.listen ? { listen: o.listen } : {}),
          ...(o.tokenFile ? { tokenFile: o.tokenFile } : {}),
          listenPublic: Boolean(o.listenPublic),
          log: (line) => ctx.streams.stderr.write(`${line}\n`),
        });
        return {};
      }),
    );

  serve
    .command("mcp")
    .description("the MCP server on stdio (for an MCP client to spawn; refuses to start on a terminal)")
    .action(
      action(async (ctx) => {
        await runMcpStdio({
          host: { stateDir: ctx.globals.stateDir, ...(ctx.globals.supervisor ? { supervisorPath: ctx.globals.supervisor } : {}) },
          stdinIsTty: Boolean(process.stdin.isTTY),
        });
        return {};
      }),
    );

  serve.addCommand(e2bCommand());

  return serve;
}
