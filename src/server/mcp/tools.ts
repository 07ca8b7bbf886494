/**
 * The MCP tools: snake_case names, arguments that mirror the library's request types in camelCase,
 * each a call of one facade function. A result is structured content (the library's result, with
 * guest output as capped UTF-8 text) plus a short text line; a failure is `isError: true` with the
 * library's error object as structured content. Destructive tools preview first (`confirm` absent),
 * create/run take an idempotency key, long commands have a timeout and die with a cancelled request.
 */
import { Buffer } from "node:buffer";
import { z } from "zod";
import { McpServer, type CallToolResult } from "@modelcontextprotocol/server";
import { Workspace } from "../../api/workspace.ts";
import { doctor, listImages, pullImage, run } from "../../api/facade.ts";
import { ExecRequestSchema, RunRequestSchema, WorkspaceRequestSchema } from "../../api/requests.ts";
import { ArchSchema } from "../../contract/backend.ts";
import { toMicroagentError } from "../../contract/errors.ts";
import { readLogBytes } from "../../workspace/history.ts";
import { LIVE_STATES } from "../../workspace/state.ts";
import { packageVersion } from "../../version.ts";
import { egressRecords, access, type ServerHost } from "../common/host.ts";
import { IdempotencyStore } from "../common/idempotency.ts";

/** Guest output returned per stream, at most (the rest is dropped and `truncated` says so). */
export const OUTPUT_CAP_BYTES = 64 * 1024;
/** Default and ceiling of a command's timeout, seconds. */
export const DEFAULT_TIMEOUT_SECONDS = 120;
export const MAX_TIMEOUT_SECONDS = 3600;

export interface McpOptions {
  host: ServerHost;
  idempotency?: IdempotencyStore;
}

export const TOOL_NAMES = [
  "workspace_run",
  "workspace_create",
  "workspace_start",
  "workspace_exec",
  "workspace_halt",
  "workspace_stop",
  "workspace_pause",
  "workspace_resume",
  "workspace_kill",
  "workspace_delete",
  "workspace_list",
  "workspace_status",
  "workspace_logs",
  "workspace_egress",
  "file_read",
  "file_write",
  "image_pull",
  "image_list",
  "host_doctor",
] as const;

const name = z.string().min(1).describe("workspace name");
const timeoutSeconds = z.number().int().positive().max(MAX_TIMEOUT_SECONDS);
const idempotencyKey = z.string().min(1).max(200).optional().describe("a repeat with the same key and arguments returns the first result");
const confirm = z.boolean().optional().describe("true to act; without it the call only previews what would happen");

/** Capped UTF-8 text of a byte stream, and whether it was cut. */
function capped(b: Buffer, cap = OUTPUT_CAP_BYTES): { text: string; truncated: boolean } {
  if (b.length <= cap) return { text: b.toString("utf8"), truncated: false };
  return { text: b.subarray(0, cap).toString("utf8"), truncated: true };
}

function ok(structured: Record<string, unknown>, text: string): CallToolResult {
  return { content: [{ type: "text", text }], structuredContent: structured };
}

function fail(e: unknown): CallToolResult {
  const err = toMicroagentError(e);
  const obj = err.toJSON();
  return { isError: true, content: [{ type: "text", text: `${obj.code} (${obj.kind}): ${obj.message}\n${obj.remediation}` }], structuredContent: { ok: false, error: obj } };
}

/** Run a tool body; any thrown error becomes the tool error result. */
async function guarded(fn: () => Promise<CallToolResult>): Promise<CallToolResult> {
  try {
    return await fn();
  } catch (e) {
    return fail(e);
  }
}

export function buildMcpServer(o: McpOptions): McpServer {
  const host = o.host;
  const idem = o.idempotency ?? new IdempotencyStore();
  const server = new McpServer({ name: "microagent", version: packageVersion() });
  const mutating = { destructiveHint: false, idempotentHint: false, openWorldHint: false, readOnlyHint: false };
  const readOnly = { readOnlyHint: true, openWorldHint: false };
  const destructive = { destructiveHint: true, idempotentHint: true, openWorldHint: false, readOnlyHint: false };

  server.registerTool(
    "workspace_run",
    {
      title: "Run one command in a scratch workspace",
      description: "Boot a fresh workspace from an image, run one command (argv), return its exit code and output, delete the workspace (unless keep).",
      inputSchema: z.strictObject({
        image: RunRequestSchema.shape.image,
        command: z.array(z.string()).min(1).optional().describe("argv, replacing the image's Cmd"),
        env: RunRequestSchema.shape.env,
        timeoutSeconds: timeoutSeconds.optional().describe(`bound on the command once the guest is up (default ${DEFAULT_TIMEOUT_SECONDS})`),
        keep: RunRequestSchema.shape.keep,
        network: RunRequestSchema.shape.network,
        resources: RunRequestSchema.shape.resources,
        idempotencyKey,
      }),
      annotations: { ...mutating, openWorldHint: true },
    },
    async (a, ctx) =>
      guarded(async () => {
        const { idempotencyKey: key, timeoutSeconds: t, command, ...rest } = a;
        const request = { ...rest, ...(command ? { cmd: command } : {}), timeoutMs: (t ?? DEFAULT_TIMEOUT_SECONDS) * 1000 };
        const { result: r, replayed } = await idem.run("workspace_run", key, request, () => run(request, { ...host, signal: ctx.mcpReq.signal }));
        const out = capped(Buffer.from(r.result.stdout, "base64"));
        const err = capped(Buffer.from(r.result.stderr, "base64"));
        const structured = { ...r, result: { ...r.result, stdout: out.text, stderr: err.text }, truncated: out.truncated || err.truncated, replayed };
        return ok(structured, `exit ${r.exitCode}${r.timedOut ? " (timed out)" : ""}\n${out.text}${err.text ? `\n[stderr]\n${err.text}` : ""}`);
      }),
  );

  server.registerTool(
    "workspace_create",
    {
      title: "Create a workspace",
      description: "Create a persistent workspace from an image (state prepared); boot it with workspace_start.",
      // No networkOptions: an agent must not widen its own egress policy (allow lists, passthrough, published ports).
      inputSchema: WorkspaceRequestSchema.omit({ networkOptions: true }).extend({ name, idempotencyKey }),
      annotations: mutating,
    },
    async (a) =>
      guarded(async () => {
        const { idempotencyKey: key, name: n, ...request } = a;
        const { result, replayed } = await idem.run("workspace_create", key, { name: n, ...request }, async () => (await Workspace.create(n, request, host)).created);
        return ok({ ...result, replayed }, `created ${result.workspace} (${result.state}) from ${result.image.resolvedRef}`);
      }),
  );

  server.registerTool(
    "workspace_start",
    {
      title: "Start a workspace",
      description: "Boot a workspace and wait until its guest is up.",
      inputSchema: z.strictObject({ name, timeoutSeconds: timeoutSeconds.optional() }),
      annotations: { ...mutating, idempotentHint: true },
    },
    async (a) =>
      guarded(async () => {
        const ws = await Workspace.get(a.name, host);
        const r = await ws.start(a.timeoutSeconds ? { timeoutMs: a.timeoutSeconds * 1000 } : {});
        return ok(r, `${r.workspace} is ${r.state}${r.bootMs !== undefined ? ` (booted in ${Math.round(r.bootMs)} ms)` : ""}`);
      }),
  );

  server.registerTool(
    "workspace_exec",
    {
      title: "Run a command in a workspace",
      description: `Run argv in a running workspace; returns status, exit code and output (each stream capped at ${OUTPUT_CAP_BYTES} bytes, with a truncated flag). A non-zero exit is a result, not an error. Cancelling the request kills the command.`,
      inputSchema: z.strictObject({
        name,
        command: z.array(z.string()).min(1).describe("argv"),
        env: ExecRequestSchema.shape.env,
        cwd: ExecRequestSchema.shape.cwd,
        user: ExecRequestSchema.shape.user,
        stdin: z.string().optional().describe("text fed to stdin, then EOF"),
        timeoutSeconds: timeoutSeconds.optional().describe(`kill the command after this long (default ${DEFAULT_TIMEOUT_SECONDS})`),
      }),
      annotations: mutating,
    },
    async (a, ctx) =>
      guarded(async () => {
        const ws = await Workspace.connect(a.name, host);
        const r = await ws.exec(a.command, {
          ...(a.env ? { env: a.env } : {}),
          ...(a.cwd ? { cwd: a.cwd } : {}),
          ...(a.user ? { user: a.user } : {}),
          ...(a.stdin !== undefined ? { stdin: a.stdin } : {}),
          timeoutMs: (a.timeoutSeconds ?? DEFAULT_TIMEOUT_SECONDS) * 1000,
          // The guest keeps a little more than we return, so `truncated` is known even at the cap.
          stdoutLimitBytes: OUTPUT_CAP_BYTES + 1,
          stderrLimitBytes: OUTPUT_CAP_BYTES + 1,
          signal: ctx.mcpReq.signal,
        });
        const out = capped(r.stdout);
        const err = capped(r.stderr);
        const truncated = out.truncated || err.truncated || r.stdoutTruncated || r.stderrTruncated;
        const structured = {
          status: r.status,
          ...(r.exitCode !== undefined ? { exitCode: r.exitCode } : {}),
          ...(r.signal ? { signal: r.signal } : {}),
          stdout: out.text,
          stderr: err.text,
          truncated,
          startedAt: r.startedAt,
          completedAt: r.completedAt,
          ...(r.error ? { error: r.error } : {}),
        };
        const head = r.status === "exited" ? `exit ${r.exitCode}` : r.status;
        return ok(structured, `${head}${truncated ? " (output truncated)" : ""}\n${out.text}${err.text ? `\n[stderr]\n${err.text}` : ""}`);
      }),
  );

  for (const verb of ["halt", "stop"] as const) {
    server.registerTool(
      `workspace_${verb}`,
      {
        title: `${verb === "halt" ? "Halt" : "Stop"} a workspace`,
        description: verb === "halt" ? "Power the guest off cleanly; the disk and the workspace stay." : "Stop the workspace (graceful, then forced); the disk stays.",
        inputSchema: z.strictObject({ name, timeoutSeconds: timeoutSeconds.optional() }),
        annotations: { ...mutating, idempotentHint: true },
      },
      async (a) =>
        guarded(async () => {
          const ws = await Workspace.get(a.name, host);
          const r = await ws[verb](a.timeoutSeconds ? { timeoutMs: a.timeoutSeconds * 1000 } : {});
          return ok({ workspace: r.workspace, state: r.state, previousState: r.previousState, changed: r.changed }, `${r.workspace}: ${r.previousState} -> ${r.state}`);
        }),
    );
  }

  for (const verb of ["pause", "resume"] as const) {
    server.registerTool(
      `workspace_${verb}`,
      {
        title: verb === "pause" ? "Pause a workspace" : "Resume a paused workspace",
        description:
          verb === "pause"
            ? "Freeze the workspace's vCPUs: memory, disk, processes and network flows are kept; exec and files are refused until workspace_resume."
            : "Thaw a paused workspace: every process continues where it stopped.",
        inputSchema: z.strictObject({ name }),
        annotations: { ...mutating, idempotentHint: true },
      },
      async (a) =>
        guarded(async () => {
          const r = await (await Workspace.get(a.name, host))[verb]();
          return ok(r, `${r.workspace}: ${r.state}${r.changed ? ` (${r.ms.toFixed(1)} ms)` : " (unchanged)"}`);
        }),
    );
  }

  server.registerTool(
    "workspace_kill",
    {
      title: "Kill a workspace's VM",
      description: "Kill the VM now (unsaved guest state is lost; the disk stays). Without confirm: true, previews what would happen.",
      inputSchema: z.strictObject({ name, confirm }),
      annotations: destructive,
    },
    async (a) =>
      guarded(async () => {
        const ws = await Workspace.get(a.name, host);
        if (!a.confirm) {
          const s = await ws.status();
          const actions = LIVE_STATES.has(s.event.state) ? [`kill the VM of ${a.name} (state ${s.event.state})`] : [];
          return ok({ preview: true, workspace: a.name, state: s.event.state, actions }, `preview: ${actions.length ? actions.join("; ") : `nothing to kill (${a.name} is ${s.event.state})`}. Call again with confirm: true to act.`);
        }
        const r = await ws.kill();
        return ok({ workspace: r.workspace, state: r.state, previousState: r.previousState, changed: r.changed }, `${r.workspace}: ${r.previousState} -> ${r.state}`);
      }),
  );

  server.registerTool(
    "workspace_delete",
    {
      title: "Delete a workspace",
      description: "Remove a workspace and its disk. Refused while it runs unless force (kills it first). Without confirm: true, previews what would happen.",
      inputSchema: z.strictObject({ name, force: z.boolean().optional().describe("kill a running VM first"), confirm }),
      annotations: destructive,
    },
    async (a) =>
      guarded(async () => {
        if (!a.confirm) {
          const list = await Workspace.list(host);
          const w = list.find((x) => x.name === a.name);
          if (!w) await Workspace.get(a.name, host); // not found: the library's error
          // The states in which a VMM process may be alive: exactly what the library's delete refuses without force.
          const live = w !== undefined && w.state !== "unknown" && LIVE_STATES.has(w.state);
          const actions = [...(live && a.force ? [`kill the VM of ${a.name}`] : []), `delete workspace ${a.name} and its disk`];
          const refused = live && !a.force;
          return ok(
            { preview: true, workspace: a.name, state: w?.state ?? "unknown", actions: refused ? [] : actions, ...(refused ? { refused: `the workspace is ${w?.state ?? "live"} (its VM is alive): pass force: true to kill it first` } : {}) },
            refused ? `preview: ${a.name} is ${w?.state ?? "live"}; delete would be refused without force: true` : `preview: ${actions.join("; ")}. Call again with confirm: true to act.`,
          );
        }
        const ws = await Workspace.get(a.name, host);
        const r = await ws.delete({ force: Boolean(a.force) });
        return ok(r, r.deleted ? `deleted ${r.name}${r.killed ? " (VM killed)" : ""}` : `${r.name} was already gone`);
      }),
  );

  server.registerTool(
    "workspace_list",
    { title: "List workspaces", description: "Every workspace with its state.", inputSchema: z.strictObject({}), annotations: readOnly },
    async () =>
      guarded(async () => {
        const workspaces = await Workspace.list(host);
        return ok({ workspaces }, workspaces.length ? workspaces.map((w) => `${w.name}: ${w.state}`).join("\n") : "no workspaces");
      }),
  );

  server.registerTool(
    "workspace_status",
    { title: "A workspace's status", description: "State, latest event, verification, readiness and the workload result.", inputSchema: z.strictObject({ name }), annotations: readOnly },
    async (a) =>
      guarded(async () => {
        const s = await (await Workspace.get(a.name, host)).status();
        return ok(s as unknown as Record<string, unknown>, `${a.name}: ${s.event.state} (${s.readiness.ready ? "ready" : "not ready"}) - ${s.event.detail}`);
      }),
  );

  server.registerTool(
    "workspace_logs",
    {
      title: "A workspace's console log",
      description: `The guest's serial console output: the last tailBytes bytes (default and cap ${OUTPUT_CAP_BYTES}).`,
      inputSchema: z.strictObject({ name, tailBytes: z.number().int().positive().max(OUTPUT_CAP_BYTES).optional() }),
      annotations: readOnly,
    },
    async (a) =>
      guarded(async () => {
        const bytes = await readLogBytes(a.name, access(host));
        const tail = a.tailBytes ?? OUTPUT_CAP_BYTES;
        const truncated = bytes.length > tail;
        const logs = bytes.subarray(Math.max(0, bytes.length - tail)).toString("utf8");
        return ok({ logs, truncated }, logs || "(no output yet)");
      }),
  );

  server.registerTool(
    "workspace_egress",
    {
      title: "A workspace's egress records",
      description: "The egress audit records (allowed and denied flows, DNS answers), newest last; the last `limit` (default 200).",
      inputSchema: z.strictObject({ name, limit: z.number().int().positive().max(5000).optional() }),
      annotations: readOnly,
    },
    async (a) =>
      guarded(async () => {
        const all = await egressRecords(a.name, host);
        const limit = a.limit ?? 200;
        const records = all.slice(-limit);
        return ok({ records, truncated: all.length > records.length }, `${records.length} egress record(s)${all.length > records.length ? ` of ${all.length}` : ""}`);
      }),
  );

  server.registerTool(
    "file_read",
    {
      title: "Read a file in a workspace",
      description: `Read a file in a running workspace (absolute path). Text is returned as UTF-8; encoding base64 for binary. Capped at ${OUTPUT_CAP_BYTES} bytes (truncated flag).`,
      inputSchema: z.strictObject({ name, path: z.string().min(1), encoding: z.enum(["utf8", "base64"]).optional() }),
      annotations: readOnly,
    },
    async (a) =>
      guarded(async () => {
        const ws = await Workspace.connect(a.name, host);
        const bytes = await ws.files.read(a.path);
        const truncated = bytes.length > OUTPUT_CAP_BYTES;
        const part = bytes.subarray(0, OUTPUT_CAP_BYTES);
        const content = a.encoding === "base64" ? part.toString("base64") : part.toString("utf8");
        return ok({ path: a.path, sizeBytes: bytes.length, encoding: a.encoding ?? "utf8", content, truncated }, a.encoding === "base64" ? `${bytes.length} bytes (base64)` : content);
      }),
  );

  server.registerTool(
    "file_write",
    {
      title: "Write a file in a workspace",
      description: "Create or replace a file in a running workspace (absolute path; the parent directory must exist).",
      inputSchema: z.strictObject({ name, path: z.string().min(1), content: z.string(), encoding: z.enum(["utf8", "base64"]).optional() }),
      annotations: { ...mutating, idempotentHint: true },
    },
    async (a) =>
      guarded(async () => {
        const ws = await Workspace.connect(a.name, host);
        const bytes = Buffer.from(a.content, a.encoding === "base64" ? "base64" : "utf8");
        await ws.files.write(a.path, bytes);
        return ok({ workspace: a.name, path: a.path, sizeBytes: bytes.length }, `wrote ${bytes.length} bytes to ${a.path}`);
      }),
  );

  server.registerTool(
    "image_pull",
    {
      title: "Pull an image",
      description: "Download an OCI image into the local store (digests verified).",
      inputSchema: z.strictObject({ ref: z.string().min(1), arch: ArchSchema.optional() }),
      annotations: { ...mutating, idempotentHint: true, openWorldHint: true },
    },
    async (a, ctx) =>
      guarded(async () => {
        const img = await pullImage(a.ref, a.arch ? { arch: a.arch } : {}, { ...access(host), signal: ctx.mcpReq.signal });
        return ok(img, `pulled ${img.ref} -> ${img.resolvedRef} (${img.sizeBytes} bytes)`);
      }),
  );

  server.registerTool(
    "image_list",
    { title: "List images", description: "Images in the local store.", inputSchema: z.strictObject({}), annotations: readOnly },
    async () =>
      guarded(async () => {
        const images = await listImages(host);
        return ok({ images }, images.length ? images.map((i) => i.ref).join("\n") : "no images");
      }),
  );

  server.registerTool(
    "host_doctor",
    { title: "Check the host", description: "Can this host run workspaces: KVM, tools, kernel, the verdict.", inputSchema: z.strictObject({}), annotations: readOnly },
    async () =>
      guarded(async () => {
        const r = await doctor({}, host);
        return ok(r as unknown as Record<string, unknown>, `verdict: ${r.verdict}`);
      }),
  );

  return server;
}
