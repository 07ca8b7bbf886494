/**
 * The agent-facing adapters driven by real clients against real VMs (QEMU under TCG here):
 * - HTTP: `microagent serve` as a child process, undici over its Unix socket: create (with an
 *   Idempotency-Key), start, events as SSE resumed by Last-Event-ID, exec as JSON and as SSE, files,
 *   logs, egress; SIGTERM leaves the workspace running and a restarted daemon sees it; delete.
 * - MCP over stdio: the SDK's Client spawning `node bin/microagent.js serve mcp`: create, start,
 *   exec (output, timeout, cancellation killing the command), files, delete with preview/confirm.
 * - MCP over Streamable HTTP at the restarted daemon's /mcp (TCP, bearer token): workspace_run.
 * Needs `npm run build` (bin/ runs dist/).
 */
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { tmpdir } from "node:os";
import { Client, StreamableHTTPClientTransport } from "@modelcontextprotocol/client";
import { StdioClientTransport } from "@modelcontextprotocol/client/stdio";
import { workspaceFixture, type WorkspaceFixture } from "../helpers/workspace.ts";
import { findProcessesMentioning } from "../helpers/global-setup.ts";
import { api, closeAgents, sse, type ApiTarget, type SseEvent } from "../helpers/api-client.ts";
import { CreateJsonSchema, DoctorJsonSchema, ErrorResultSchema, ImageJsonSchema, ImageListJsonSchema, EventSchema, ExecJsonSchema, StartJsonSchema, StatusJsonSchema } from "../../src/contract/results.ts";
import { Workspace } from "../../src/api/workspace.ts";

const BIN = new URL("../../bin/microagent.js", import.meta.url).pathname;
let fx: WorkspaceFixture;
let imageRef: string;

before(async () => {
  fx = await workspaceFixture("adapters");
  imageRef = await fx.image("adapters/busybox:1");
  process.env.MICROAGENT_INSECURE_REGISTRIES = fx.registry.host;
  process.env.MICROAGENT_KERNEL_CACHE ??= join(tmpdir(), "microagent-test-kernel-cache");
});

after(async () => {
  await closeAgents();
  let left = findProcessesMentioning(fx.stateDir).filter((p) => /qemu-system|supervisor\/main|microagent\.js/.test(p.cmdline));
  for (let i = 0; i < 100 && left.length > 0; i++) {
    await new Promise((r) => setTimeout(r, 50));
    left = findProcessesMentioning(fx.stateDir).filter((p) => /qemu-system|supervisor\/main|microagent\.js/.test(p.cmdline));
  }
  for (const p of left) {
    try {
      process.kill(p.pid, "SIGKILL");
    } catch {
      /* gone */
    }
  }
  await fx.cleanup();
  assert.deepEqual(left.map((p) => p.cmdline), [], "a daemon, qemu or supervisor survived the suite");
});

interface Daemon {
  child: ChildProcess;
  socket: string;
  tcp?: { host: string; port: number };
  stderr(): string;
}

/** Start `microagent serve` and wait for its listening lines (bounded). */
async function startDaemon(extra: string[] = []): Promise<Daemon> {
  const child = spawn(process.execPath, [BIN, "--state-dir", fx.stateDir, "serve", ...extra], { stdio: ["ignore", "ignore", "pipe"], env: process.env });
  let err = "";
  child.stderr?.on("data", (d: Buffer) => (err += d.toString("utf8")));
  const deadline = Date.now() + 30_000;
  const wantTcp = extra.includes("--listen");
  for (;;) {
    const sock = /listening on unix:(\S+)/.exec(err)?.[1];
    const tcp = /listening on http:\/\/([\d.]+):(\d+)/.exec(err);
    if (sock && (!wantTcp || tcp)) return { child, socket: sock, ...(tcp ? { tcp: { host: tcp[1] as string, port: Number(tcp[2]) } } : {}), stderr: () => err };
    if (child.exitCode !== null || Date.now() > deadline) throw new Error(`daemon did not start: ${err}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function stopDaemon(d: Daemon): Promise<number | null> {
  if (d.child.exitCode !== null) return d.child.exitCode;
  const done = new Promise<number | null>((r) => d.child.once("exit", (code) => r(code)));
  d.child.kill("SIGTERM");
  const t = setTimeout(() => d.child.kill("SIGKILL"), 15_000);
  const code = await done;
  clearTimeout(t);
  return code;
}

/** Collect SSE events until `until` says stop (or the stream ends), bounded by `ms`. */
async function collect(stream: (signal: AbortSignal) => AsyncGenerator<SseEvent>, until: (e: SseEvent, all: SseEvent[]) => boolean, ms: number): Promise<Array<SseEvent & { at: number }>> {
  const ac = new AbortController();
  const timer = setTimeout(() => ac.abort(), ms);
  const out: Array<SseEvent & { at: number }> = [];
  try {
    for await (const e of stream(ac.signal)) {
      out.push({ ...e, at: performance.now() });
      if (until(e, out)) break;
    }
  } finally {
    clearTimeout(timer);
    ac.abort();
  }
  return out;
}

const b64 = (s: string) => Buffer.from(s).toString("base64");
const unb64 = (s: string) => Buffer.from(s, "base64").toString("utf8");

test("serve: the HTTP API over its Unix socket drives a workspace; SIGTERM leaves it running and a restarted daemon sees it", { timeout: 600_000 }, async () => {
  let d = await startDaemon();
  try {
    const t: ApiTarget = { socket: d.socket };
    // Image pull with progress events, then the list has it.
    const pulled = await collect((signal) => sse(t, "POST", "/v1/images", { signal, json: { ref: imageRef } }), (e) => e.event === "result" || e.event === "error", 120_000);
    assert.equal(pulled.at(-1)?.event, "result", JSON.stringify(pulled.at(-1)));
    assert.equal(JSON.parse(pulled[0]?.data ?? "{}").type, "resolved");
    assert.ok(pulled.some((e) => e.event === "progress" && /^layer-/.test(JSON.parse(e.data).type)));
    const image = ImageJsonSchema.parse(JSON.parse((pulled.at(-1) as SseEvent).data));
    assert.deepEqual(ImageListJsonSchema.parse((await api(t, "GET", "/v1/images")).json()).images.map((i) => i.digest), [image.digest]);
    assert.equal(DoctorJsonSchema.safeParse((await api(t, "GET", "/v1/host")).json()).success, true);

    const body = { name: "h1", image: imageRef, resources: { profile: "tiny" } };
    const created = await api(t, "POST", "/v1/workspaces", { json: body, headers: { "idempotency-key": "create-h1" } });
    assert.equal(created.status, 201, created.body.toString());
    assert.equal(CreateJsonSchema.parse(created.json()).state, "prepared");
    const again = await api(t, "POST", "/v1/workspaces", { json: body, headers: { "idempotency-key": "create-h1" } });
    assert.equal(again.status, 201);
    assert.equal(again.headers["idempotent-replayed"], "true");
    assert.deepEqual(again.json(), created.json());
    const reused = await api(t, "POST", "/v1/workspaces", { json: { ...body, name: "h2" }, headers: { "idempotency-key": "create-h1" } });
    assert.equal(reused.status, 422);
    assert.equal(reused.json().error.code, "IDEMPOTENCY_KEY_REUSED");
    const dup = await api(t, "POST", "/v1/workspaces", { json: body });
    assert.equal(dup.status, 409, "without the key, a second create of the same name is the library's conflict");

    // Events as SSE while the workspace boots: ids are positions, and the stream follows live.
    const eventsPromise = collect((signal) => sse(t, "GET", "/v1/workspaces/h1/events", { signal }), (e) => e.event === "event" && EventSchema.parse(JSON.parse(e.data)).state === "running", 120_000);
    const started = await api(t, "POST", "/v1/workspaces/h1/start", { json: {} });
    assert.equal(started.status, 200, started.body.toString());
    assert.equal(StartJsonSchema.parse(started.json()).state, "running");
    const events = await eventsPromise;
    const states = events.map((e) => EventSchema.parse(JSON.parse(e.data)).state);
    assert.deepEqual(states.slice(0, 1), ["prepared"]);
    assert.ok(states.includes("starting") && states.at(-1) === "running", states.join(","));
    assert.deepEqual(events.map((e) => e.id), events.map((_, i) => String(i + 1)));
    // Resume: Last-Event-ID n-1 replays only the last one.
    const last = events.length;
    const resumed = await collect((signal) => sse(t, "GET", "/v1/workspaces/h1/events", { signal, headers: { "last-event-id": String(last - 1) } }), () => true, 30_000);
    assert.equal(resumed[0]?.id, String(last));

    // exec: JSON result (a non-zero exit is a result, not an error).
    const ex = await api(t, "POST", "/v1/workspaces/h1/exec", { json: { argv: ["sh", "-c", "echo hi; echo oops >&2; cat; exit 3"], stdin: b64("fed\n") } });
    assert.equal(ex.status, 200, ex.body.toString());
    const exr = ExecJsonSchema.parse(ex.json());
    assert.deepEqual([exr.status, exr.exitCode, unb64(exr.stdout), unb64(exr.stderr)], ["exited", 3, "hi\nfed\n", "oops\n"]);

    // exec as SSE: output arrives while the command still runs.
    const t0 = performance.now();
    const stream = await collect((signal) => sse(t, "POST", "/v1/workspaces/h1/exec", { signal, json: { argv: ["sh", "-c", "echo one; sleep 1.5; echo two >&2"] } }), (e) => e.event === "exit" || e.event === "error", 60_000);
    assert.deepEqual(stream.map((e) => e.event), ["stdout", "stderr", "exit"]);
    assert.equal(unb64(JSON.parse((stream[0] as SseEvent).data).data), "one\n");
    assert.equal(unb64(JSON.parse((stream[1] as SseEvent).data).data), "two\n");
    const exit = ExecJsonSchema.parse(JSON.parse((stream[2] as SseEvent).data));
    assert.equal(exit.exitCode, 0);
    assert.ok((stream[2] as { at: number }).at - (stream[0] as { at: number }).at > 1000, `the first chunk came ${Math.round((stream[0] as { at: number }).at - t0)} ms in, the exit ${Math.round((stream[2] as { at: number }).at - t0)} ms in: not streamed`);

    // Files: bytes in, the same bytes out (binary included).
    const bytes = Buffer.from([0, 1, 2, 255, 10, 0x41]);
    const put = await api(t, "PUT", "/v1/workspaces/h1/files?path=/tmp/blob.bin", { raw: bytes });
    assert.equal(put.status, 200, put.body.toString());
    assert.deepEqual(put.json(), { workspace: "h1", path: "/tmp/blob.bin", sizeBytes: 6 });
    const got = await api(t, "GET", "/v1/workspaces/h1/files?path=/tmp/blob.bin");
    assert.equal(got.status, 200);
    assert.deepEqual(got.body, bytes);
    const nofile = await api(t, "GET", "/v1/workspaces/h1/files?path=/nope");
    assert.equal(nofile.status, 422);
    assert.equal(nofile.json().error.code, "FILE_READ_FAILED");
    assert.equal((await api(t, "GET", "/v1/workspaces/h1/files?path=relative")).status, 400);

    // Pause/resume: exec on a paused workspace is refused with the resume remedy; after resume it works.
    const paused = await api(t, "POST", "/v1/workspaces/h1/pause");
    assert.equal(paused.status, 200, paused.body.toString());
    assert.deepEqual([paused.json().state, paused.json().changed], ["paused", true]);
    const refusedExec = await api(t, "POST", "/v1/workspaces/h1/exec", { json: { argv: ["true"] } });
    assert.equal(refusedExec.status, 409, refusedExec.body.toString());
    assert.equal(refusedExec.json().error.code, "WORKSPACE_PAUSED");
    const thawed = await api(t, "POST", "/v1/workspaces/h1/resume");
    assert.deepEqual([thawed.status, thawed.json().state], [200, "running"]);
    assert.deepEqual(Buffer.from(ExecJsonSchema.parse((await api(t, "POST", "/v1/workspaces/h1/exec", { json: { argv: ["cat", "/tmp/blob.bin"] } })).json()).stdout, "base64"), bytes);

    // Closing an exec stream cancels the command in the guest.
    const victim = collect((signal) => sse(t, "POST", "/v1/workspaces/h1/exec", { signal, json: { argv: ["sh", "-c", "echo $$ > /tmp/victim.pid; echo started; exec sleep 60"] } }), (e) => e.event === "stdout", 30_000);
    assert.equal((await victim).length, 1);
    let state = "";
    for (let i = 0; i < 50 && state !== "gone\n"; i++) {
      await new Promise((r) => setTimeout(r, 200));
      state = unb64(ExecJsonSchema.parse((await api(t, "POST", "/v1/workspaces/h1/exec", { json: { argv: ["sh", "-c", 'kill -0 "$(cat /tmp/victim.pid)" 2>/dev/null && echo alive || echo gone'] } })).json()).stdout);
    }
    assert.equal(state, "gone\n", "the command outlived its closed stream");

    const logs = await api(t, "GET", "/v1/workspaces/h1/logs");
    assert.ok(logs.json().logs.length > 0, "the serial log has the boot");
    const followed = await collect((signal) => sse(t, "GET", "/v1/workspaces/h1/logs", { signal }), () => true, 30_000);
    assert.equal(followed[0]?.event, "logs");
    assert.ok(JSON.parse(followed[0]?.data ?? "{}").logs.length > 0);
    assert.deepEqual((await api(t, "GET", "/v1/workspaces/h1/egress")).json(), { records: [] });
    assert.equal(StatusJsonSchema.parse((await api(t, "GET", "/v1/workspaces/h1")).json()).event.state, "running");

    // SIGTERM: the daemon exits cleanly; the VM does not notice.
    assert.equal(await stopDaemon(d), 0, d.stderr());
    assert.match(d.stderr(), /workspaces keep running/);
    assert.equal((await (await Workspace.get("h1", { stateDir: fx.stateDir })).status()).event.state, "running");
    await closeAgents();

    d = await startDaemon(["--listen", "127.0.0.1:0"]);
    const t2: ApiTarget = { socket: d.socket };
    const list = (await api(t2, "GET", "/v1/workspaces")).json();
    assert.deepEqual(list.workspaces.map((w: { name: string; state: string }) => [w.name, w.state]), [["h1", "running"]]);
    const after = ExecJsonSchema.parse((await api(t2, "POST", "/v1/workspaces/h1/exec", { json: { argv: ["cat", "/tmp/blob.bin"] } })).json());
    assert.deepEqual(Buffer.from(after.stdout, "base64"), bytes, "the restarted daemon reaches the same VM");

    // MCP over Streamable HTTP on the same daemon (TCP, bearer token): a one-shot run end to end.
    const token = readFileSync(join(fx.stateDir, "api.token"), "utf8").trim();
    const tcp = d.tcp as { port: number };
    const mcp = new Client({ name: "adapters-test", version: "1" });
    await mcp.connect(new StreamableHTTPClientTransport(new URL(`http://127.0.0.1:${tcp.port}/mcp`), { requestInit: { headers: { authorization: `Bearer ${token}` } } }));
    try {
      assert.ok((await mcp.listTools()).tools.some((x) => x.name === "workspace_run"));
      const args = { image: imageRef, command: ["sh", "-c", "echo via-mcp-http; exit 4"], timeoutSeconds: 120, resources: { profile: "tiny" }, idempotencyKey: "run-1" };
      const r = await mcp.callTool({ name: "workspace_run", arguments: args }, { timeout: 300_000 });
      assert.notEqual(r.isError, true, JSON.stringify(r.content));
      const sc = r.structuredContent as { exitCode: number; result: { stdout: string }; kept: boolean; truncated: boolean; replayed: boolean; workspace: string };
      assert.deepEqual([sc.exitCode, sc.result.stdout, sc.kept, sc.truncated, sc.replayed], [4, "via-mcp-http\n", false, false, false]);
      // The same key again (another request, another MCP server object on the same daemon) replays: no second VM.
      const again = (await mcp.callTool({ name: "workspace_run", arguments: args }, { timeout: 60_000 })).structuredContent as typeof sc;
      assert.deepEqual([again.replayed, again.workspace, again.exitCode], [true, sc.workspace, 4]);
      const other = await mcp.callTool({ name: "workspace_run", arguments: { ...args, command: ["true"] } }, { timeout: 60_000 });
      assert.equal(other.isError, true);
      assert.equal(ErrorResultSchema.parse(other.structuredContent).error.code, "IDEMPOTENCY_KEY_REUSED");
    } finally {
      await mcp.close();
    }

    // Delete: refused while running (the library's conflict), then forced.
    const refused = await api(t2, "DELETE", "/v1/workspaces/h1");
    assert.equal(refused.status, 409);
    assert.ok(ErrorResultSchema.safeParse(refused.json()).success);
    const del = await api(t2, "DELETE", "/v1/workspaces/h1?force=true");
    assert.equal(del.status, 200, del.body.toString());
    assert.deepEqual([del.json().deleted, del.json().killed], [true, true]);
    assert.deepEqual((await api(t2, "GET", "/v1/workspaces")).json(), { workspaces: [] });
  } finally {
    await stopDaemon(d);
    await Workspace.get("h1", { stateDir: fx.stateDir }).then((w) => w.delete({ force: true })).catch(() => {});
  }
});

test("serve mcp: the SDK's Client over stdio creates, starts, execs (timeout, cancellation), writes and reads files, and deletes with a preview", { timeout: 600_000 }, async () => {
  const transport = new StdioClientTransport({ command: process.execPath, args: [BIN, "--state-dir", fx.stateDir, "serve", "mcp"], env: process.env as Record<string, string>, stderr: "pipe" });
  const c = new Client({ name: "adapters-stdio", version: "1" });
  await c.connect(transport);
  const call = async (name: string, args: Record<string, unknown>, o: { signal?: AbortSignal } = {}) => {
    const r = await c.callTool({ name, arguments: args }, { timeout: 300_000, ...(o.signal ? { signal: o.signal } : {}) });
    return { isError: r.isError === true, sc: r.structuredContent as Record<string, unknown> & { [k: string]: unknown }, text: (r.content as Array<{ text?: string }>)[0]?.text ?? "" };
  };
  try {
    assert.equal((await c.listTools()).tools.length >= 15, true);
    const created = await call("workspace_create", { name: "m1", image: imageRef, resources: { profile: "tiny" }, idempotencyKey: "m1" });
    assert.equal(created.isError, false, created.text);
    assert.equal(created.sc.state, "prepared");
    const replay = await call("workspace_create", { name: "m1", image: imageRef, resources: { profile: "tiny" }, idempotencyKey: "m1" });
    assert.deepEqual([replay.isError, replay.sc.replayed], [false, true]);
    const started = await call("workspace_start", { name: "m1" });
    assert.equal(started.sc.state, "running", started.text);

    const ex = await call("workspace_exec", { name: "m1", command: ["sh", "-c", "echo out; echo err >&2; exit 2"] });
    assert.deepEqual([ex.isError, ex.sc.status, ex.sc.exitCode, ex.sc.stdout, ex.sc.stderr, ex.sc.truncated], [false, "exited", 2, "out\n", "err\n", false]);
    // Output over the cap is cut and flagged.
    const big = await call("workspace_exec", { name: "m1", command: ["sh", "-c", "yes abcdefghij | head -c 100000"] });
    assert.deepEqual([big.sc.truncated, (big.sc.stdout as string).length], [true, 64 * 1024]);
    // A timeout ends the command.
    const slow = await call("workspace_exec", { name: "m1", command: ["sleep", "30"], timeoutSeconds: 1 });
    assert.equal(slow.sc.status, "timed_out", slow.text);
    // Cancelling the request kills the command in the guest.
    const ac = new AbortController();
    const pending = call("workspace_exec", { name: "m1", command: ["sh", "-c", "echo $$ > /tmp/victim.pid; exec sleep 60"], timeoutSeconds: 120 }, { signal: ac.signal });
    await new Promise((r) => setTimeout(r, 1500));
    ac.abort();
    await assert.rejects(pending);
    let alive = "";
    for (let i = 0; i < 50; i++) {
      alive = String((await call("workspace_exec", { name: "m1", command: ["sh", "-c", 'p=$(cat /tmp/victim.pid); kill -0 "$p" 2>/dev/null && echo alive || echo gone'] })).sc.stdout);
      if (alive === "gone\n") break;
      await new Promise((r) => setTimeout(r, 200));
    }
    assert.equal(alive, "gone\n", "the cancelled command still runs in the guest");

    const w = await call("file_write", { name: "m1", path: "/tmp/note.txt", content: "hello from mcp\n" });
    assert.equal(w.sc.sizeBytes, 15, w.text);
    const rd = await call("file_read", { name: "m1", path: "/tmp/note.txt" });
    assert.deepEqual([rd.sc.content, rd.sc.truncated], ["hello from mcp\n", false]);
    const st = await call("workspace_status", { name: "m1" });
    assert.equal((st.sc.event as { state: string }).state, "running");

    // Pause: exec is refused with the library's error; a delete preview counts a paused VM as alive.
    const paused = await call("workspace_pause", { name: "m1" });
    assert.deepEqual([paused.isError, paused.sc.state, paused.sc.changed], [false, "paused", true], paused.text);
    const frozenExec = await call("workspace_exec", { name: "m1", command: ["true"] });
    assert.equal(frozenExec.isError, true);
    assert.equal((frozenExec.sc as { error: { code: string } }).error.code, "WORKSPACE_PAUSED");
    const pausedPreview = await call("workspace_delete", { name: "m1" });
    assert.deepEqual([pausedPreview.sc.preview, pausedPreview.sc.actions], [true, []]);
    assert.match(String(pausedPreview.sc.refused), /paused/);
    const thawed = await call("workspace_resume", { name: "m1" });
    assert.equal(thawed.sc.state, "running", thawed.text);

    // Destructive tools preview first.
    const preview = await call("workspace_delete", { name: "m1", force: true });
    assert.deepEqual([preview.sc.preview, preview.sc.actions], [true, ["kill the VM of m1", "delete workspace m1 and its disk"]]);
    assert.equal((await Workspace.list({ stateDir: fx.stateDir })).find((x) => x.name === "m1")?.state, "running", "a preview changes nothing");
    const killPreview = await call("workspace_kill", { name: "m1" });
    assert.equal(killPreview.sc.preview, true);
    const del = await call("workspace_delete", { name: "m1", force: true, confirm: true });
    assert.deepEqual([del.isError, del.sc.deleted, del.sc.killed], [false, true, true], del.text);
    const gone = await call("workspace_status", { name: "m1" });
    assert.equal(gone.isError, true);
    assert.equal((gone.sc as { error: { kind: string } }).error.kind, "not_found");
  } finally {
    await c.close();
    await Workspace.get("m1", { stateDir: fx.stateDir }).then((x) => x.delete({ force: true })).catch(() => {});
  }
});
