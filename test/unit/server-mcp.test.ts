/**
 * The MCP server without a VM: the SDK's own Client over Streamable HTTP at the daemon's /mcp lists
 * the tools with their zod-derived schemas, a tool error keeps the library's error object, destructive
 * tools preview; the conformance suite's initialize, ping, tools-list and dns-rebinding-protection
 * scenarios pass against /mcp; stdio refuses a terminal. VM runs are in test/integration/server-adapters.test.ts.
 */
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { createServer, connect, type Server } from "node:net";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { Client, StreamableHTTPClientTransport } from "@modelcontextprotocol/client";
import { startDaemon } from "../../src/server/http/daemon.ts";
import { runMcpStdio } from "../../src/server/mcp/stdio.ts";
import { TOOL_NAMES } from "../../src/server/mcp/tools.ts";
import { ErrorResultSchema } from "../../src/contract/results.ts";
import { isMicroagentError } from "../../src/contract/errors.ts";
import { scratchDir } from "../helpers/scratch.ts";

const run = promisify(execFile);
const stateDir = scratchDir("srv-mcp");
const daemon = await startDaemon({ host: { stateDir }, listen: "127.0.0.1:0" });
const token = readFileSync(join(stateDir, "api.token"), "utf8").trim();
const tcp = daemon.addresses.tcp as { host: string; port: number };

after(() => daemon.close());

async function client(): Promise<Client> {
  const c = new Client({ name: "microagent-test", version: "1" });
  await c.connect(new StreamableHTTPClientTransport(new URL(`http://127.0.0.1:${tcp.port}/mcp`), { requestInit: { headers: { authorization: `Bearer ${token}` } } }));
  return c;
}

test("server-mcp: the tools over Streamable HTTP: snake_case names, zod input schemas, annotations", async () => {
  const c = await client();
  try {
    const { tools } = await c.listTools();
    const names = tools.map((t) => t.name).sort();
    assert.deepEqual(names, [...TOOL_NAMES].sort());
    const listed: readonly string[] = names;
    for (const n of names) assert.match(n, /^[a-z]+(_[a-z]+)+$/);
    for (const must of ["workspace_run", "workspace_create", "workspace_start", "workspace_exec", "workspace_halt", "workspace_pause", "workspace_resume", "workspace_delete", "workspace_list", "workspace_status", "workspace_logs", "workspace_egress", "file_read", "file_write", "image_pull", "image_list", "host_doctor"]) {
      assert.ok(listed.includes(must), must);
    }
    const byName = new Map(tools.map((t) => [t.name, t]));
    const runTool = byName.get("workspace_run");
    const props = runTool?.inputSchema.properties as Record<string, { type?: string; items?: { type?: string } }>;
    assert.equal(props.command?.type, "array");
    assert.equal(props.command?.items?.type, "string");
    assert.ok(props.env && props.timeoutSeconds && props.idempotencyKey && props.image);
    assert.deepEqual(runTool?.inputSchema.required, ["image"]);
    assert.ok((byName.get("workspace_create")?.inputSchema.properties as Record<string, unknown>).resources, "create takes the library's WorkspaceRequest fields");
    assert.equal(byName.get("workspace_delete")?.annotations?.destructiveHint, true);
    assert.equal(byName.get("workspace_list")?.annotations?.readOnlyHint, true);
    assert.ok((byName.get("workspace_delete")?.inputSchema.properties as Record<string, unknown>).confirm);
  } finally {
    await c.close();
  }
});

test("server-mcp: a failing tool is isError with the library's error object; delete previews before it acts; bad arguments are refused", async () => {
  const c = await client();
  try {
    const list = await c.callTool({ name: "workspace_list", arguments: {} });
    assert.deepEqual(list.structuredContent, { workspaces: [] });
    const missing = await c.callTool({ name: "workspace_status", arguments: { name: "nope" } });
    assert.equal(missing.isError, true);
    const body = ErrorResultSchema.parse(missing.structuredContent);
    assert.equal(body.error.code, "WORKSPACE_NOT_FOUND");
    assert.equal(body.error.kind, "not_found");
    const del = await c.callTool({ name: "workspace_delete", arguments: { name: "nope" } });
    assert.equal(del.isError, true, "the preview of a missing workspace is the not-found error");
    const bad = await c.callTool({ name: "workspace_exec", arguments: { name: "x", command: [] } });
    assert.equal(bad.isError, true);
    const egress = await c.callTool({ name: "workspace_egress", arguments: { name: "nope" } });
    assert.equal(ErrorResultSchema.parse(egress.structuredContent).error.kind, "not_found");
    assert.deepEqual((await c.callTool({ name: "image_list", arguments: {} })).structuredContent, { images: [] });
  } finally {
    await c.close();
  }
});

/** A loopback TCP port that forwards to the daemon's Unix socket (no token needed there): the conformance CLI speaks only http://host:port and sets no headers. */
async function forwarder(socket: string): Promise<{ port: number; server: Server }> {
  const server = createServer((c) => {
    const u = connect(socket);
    c.pipe(u).pipe(c);
    c.on("error", () => u.destroy());
    u.on("error", () => c.destroy());
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return { port: (server.address() as { port: number }).port, server };
}

test("server-mcp: conformance scenarios initialize, ping, tools-list, dns-rebinding-protection pass against /mcp", { timeout: 120_000 }, async () => {
  const fwd = await forwarder(daemon.addresses.socket);
  const bin = new URL("../../node_modules/.bin/conformance", import.meta.url).pathname;
  try {
    for (const scenario of ["server-initialize", "ping", "tools-list", "dns-rebinding-protection"]) {
      const outDir = scratchDir(`conformance-${scenario}`);
      const r = await run(process.execPath, [bin, "server", "--url", `http://127.0.0.1:${fwd.port}/mcp`, "--scenario", scenario, "-o", outDir], { timeout: 60_000 }).catch((e: { stdout: string; stderr: string; code: number }) => e);
      const out = `${r.stdout}\n${r.stderr}`;
      const m = /Passed:\s*(\d+)\/(\d+)/.exec(out);
      assert.ok(m, `${scenario}: no summary\n${out}`);
      assert.equal(m[1], m[2], `${scenario}: ${out}`);
      assert.ok(Number(m[2]) >= 1, scenario);
      assert.doesNotMatch(out, /Failed:\s*[1-9]/, scenario);
    }
  } finally {
    fwd.server.close();
  }
});

test("server-mcp: serve mcp refuses to start on a terminal, with a hint", async () => {
  await assert.rejects(runMcpStdio({ host: { stateDir }, stdinIsTty: true }), (e: unknown) => isMicroagentError(e) && e.code === "TTY_REFUSED" && /docs\/mcp\.md/.test(e.remediation));
});
