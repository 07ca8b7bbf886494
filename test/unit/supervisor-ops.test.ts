// The control protocol's op table: the published JSON Schema matches the code, every op is
// dispatched and documented, and the client refuses results that do not match their op's schema.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createServer, type Socket } from "node:net";
import { OPS, OP_NAMES, RequestSchema, decodeResult, type Op } from "../../src/supervisor/ops.ts";
import { controlProtocolJsonSchemaText } from "../../src/supervisor/ops-schema.ts";
import { startControlServer, type ControlHandlers } from "../../src/supervisor/server.ts";
import { SupervisorClient } from "../../src/supervisor/client.ts";
import { LineDecoder } from "../../src/supervisor/protocol.ts";
import { isMicroagentError } from "../../src/contract/errors.ts";

const docs = new URL("../../docs/", import.meta.url);

test("control protocol: docs/control-protocol.schema.json is what the op table generates (regenerate: npm run -s schema:control)", async () => {
  const published = await readFile(new URL("control-protocol.schema.json", docs), "utf8");
  const generated = controlProtocolJsonSchemaText();
  if (published !== generated) {
    const a = published.split("\n");
    const b = generated.split("\n");
    const at = a.findIndex((line, i) => line !== b[i]);
    assert.fail(`docs/control-protocol.schema.json drifted from src/supervisor/ops.ts at line ${at + 1}:\n  published: ${a[at]}\n  generated: ${b[at]}\nRun \`npm run -s schema:control\` and commit the file.`);
  }
  const doc = JSON.parse(published) as { "x-ops": Record<string, unknown>; $defs: Record<string, unknown> };
  assert.deepEqual(Object.keys(doc["x-ops"]), OP_NAMES);
  assert.ok(doc.$defs.ExecInput && doc.$defs.ConsoleInput && doc.$defs.Reply && doc.$defs.Request);
});

test("control protocol: docs/control-protocol.md has a section for every op and no other", async () => {
  const md = await readFile(new URL("control-protocol.md", docs), "utf8");
  const ops = md
    .slice(md.indexOf("## Ops"), md.indexOf("## Versioning"))
    .split("\n")
    .filter((l) => l.startsWith("### "))
    .map((l) => l.slice(4).trim());
  assert.deepEqual(ops, OP_NAMES);
});

test("control protocol: every op's minimal request line decodes, and unknown fields are refused", () => {
  const minimal: Record<Op, Record<string, unknown>> = {
    status: {}, ping: {}, wait_ready: {}, readiness: {}, exec: { exec: { argv: ["true"] } }, attach: {}, wait_result: {},
    console: {}, shutdown: { mode: "halt" }, kill: {}, quarantine: {}, pause: {}, resume: {}, snapshot: { stateFile: "/s", overlayPath: "/o" }, services: {},
  };
  for (const op of OP_NAMES) {
    const line = { v: 1, id: "i", op, ...minimal[op] };
    assert.equal(RequestSchema.safeParse(line).success, true, op);
    assert.equal(RequestSchema.safeParse({ ...line, bogus: 1 }).success, false, `${op} with an unknown field`);
    assert.equal(OPS[op].request.safeParse(minimal[op]).success, true, op);
  }
  assert.equal(RequestSchema.safeParse({ v: 1, id: "i", op: "shutdown", mode: "reboot" }).success, false);
});

test("control protocol: decodeResult names the field that does not match", () => {
  const bad = decodeResult("status", { workspace: "w", phase: "rebooting", supervisorPid: 1, bootId: "b", startedAt: "t" });
  assert.deepEqual(bad.ok ? undefined : bad.field, "phase");
  const nested = decodeResult("readiness", { guestReady: { ready: "yes", observedAt: "t" } });
  assert.equal(nested.ok ? undefined : nested.field, "guestReady.ready");
  const ok = decodeResult("kill", { state: "stopped", extra: 1 });
  assert.deepEqual(ok.ok ? ok.value : undefined, { state: "stopped" });
});

/** A fake supervisor of "another version": answers every request with the given result value. */
async function withRawServer(answer: (op: string) => unknown, fn: (client: SupervisorClient) => Promise<void>) {
  const dir = await mkdtemp(join(tmpdir(), "ma-ops-"));
  const sock = join(dir, "c.sock");
  const server = createServer((s: Socket) => {
    const d = new LineDecoder();
    s.on("data", (chunk) => {
      for (const line of d.push(chunk)) {
        const req = JSON.parse(line) as { id: string; op: string };
        s.end(`${JSON.stringify({ id: req.id, type: "result", value: answer(req.op) })}\n`);
      }
    });
  });
  await new Promise<void>((r) => server.listen(sock, r));
  try {
    await fn(new SupervisorClient(sock));
  } finally {
    await new Promise<void>((r) => server.close(() => r()));
    await rm(dir, { recursive: true, force: true });
  }
}

test("control protocol: a supervisor answering garbage is SUPERVISOR_PROTOCOL naming the op and the field", async () => {
  await withRawServer(
    (op) => (op === "status" ? { workspace: "w", phase: "running", supervisorPid: "12", bootId: "b", startedAt: "t" } : op === "ping" ? {} : { state: "exploded" }),
    async (c) => {
      const check = (op: string, field: string) => (e: unknown) => {
        assert.ok(isMicroagentError(e));
        assert.equal(e.code, "SUPERVISOR_PROTOCOL");
        assert.match(e.message, new RegExp(`\`${op}\` result .*${field.replace(".", "\\.")}`));
        assert.deepEqual({ op: e.details?.op, field: e.details?.field }, { op, field });
        return true;
      };
      await assert.rejects(c.status(), check("status", "supervisorPid"));
      await assert.rejects(c.ping(), check("ping", "guestMs"));
      await assert.rejects(c.kill(), check("kill", "state"));
      await assert.rejects(c.shutdown("stop"), check("shutdown", "state"));
      await assert.rejects(c.quarantine(), check("quarantine", "state"));
    },
  );
});

test("control protocol: results keep probes a service adds and drop fields this version does not know", async () => {
  const p = { ready: true, observedAt: "t" };
  await withRawServer(
    () => ({ guestReady: p, execReady: p, shellReady: p, resultReady: p, mediationReady: { ready: false, observedAt: "t", error: "MEDIATION_UNREACHABLE" } }),
    async (c) => {
      const r = await c.readiness();
      assert.equal(r.mediationReady?.error, "MEDIATION_UNREACHABLE");
    },
  );
  await withRawServer(
    () => ({ state: "stopped", fromTheFuture: true }),
    async (c) => assert.deepEqual(await c.kill(), { state: "stopped" }),
  );
});

function handlers(extra: Partial<ControlHandlers> = {}): ControlHandlers {
  const status = { workspace: "t", phase: "running" as const, supervisorPid: process.pid, bootId: "b", startedAt: "now" };
  const never = () => Promise.reject(new Error("not in this test"));
  return {
    status: () => status,
    ping: async () => ({ guestMs: 1 }),
    waitReady: async () => status,
    readiness: never,
    exec: never,
    attach: never,
    waitResult: never,
    console: never,
    shutdown: async (mode) => ({ state: mode === "halt" ? "halted" : "stopped" }),
    kill: async () => ({ state: "stopped" }),
    quarantine: async () => ({ state: "quarantined", frozen: true }),
    pause: async () => ({ state: "paused", changed: true, ms: 2.5 }),
    resume: async () => ({ state: "running", changed: false, ms: 0 }),
    ...extra,
  };
}

async function withServer(h: ControlHandlers, fn: (c: SupervisorClient) => Promise<void>) {
  const dir = await mkdtemp(join(tmpdir(), "ma-ops-"));
  const sock = join(dir, "c.sock");
  const server = await startControlServer(sock, h);
  try {
    await fn(new SupervisorClient(sock));
  } finally {
    await server.close();
    await rm(dir, { recursive: true, force: true });
  }
}

test("control protocol: services answers {} without a handler and each service's description with one", async () => {
  await withServer(handlers(), async (c) => assert.deepEqual(await c.services(), {}));
  const described = { network: { address: "10.0.2.15", connections: 3 }, egress: { mode: "deny" } };
  await withServer(handlers({ services: async () => described }), async (c) => assert.deepEqual(await c.services(), described));
});

test("control protocol: shutdown, kill and quarantine results arrive typed through the real server", async () => {
  await withServer(handlers(), async (c) => {
    assert.equal((await c.shutdown("halt")).state, "halted");
    assert.equal((await c.shutdown("stop", 100)).state, "stopped");
    assert.deepEqual(await c.quarantine(), { state: "quarantined", frozen: true });
    assert.deepEqual(await c.pause(), { state: "paused", changed: true, ms: 2.5 });
    assert.deepEqual(await c.resume(), { state: "running", changed: false, ms: 0 });
    assert.equal((await c.ping()).guestMs, 1);
    assert.equal((await c.waitReady(100)).workspace, "t");
  });
});
