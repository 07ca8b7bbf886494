/**
 * Seeded, deterministic fuzzing of the control protocol's parsers: the line decoder under random
 * chunking and random bytes, and the live control server fed garbage (it must answer with protocol
 * errors or close, never crash, and keep serving well-formed requests afterwards).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { connect } from "node:net";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { LineDecoder, LineTooLongError, ConsoleInputSchema } from "../../src/supervisor/protocol.ts";
import { RequestSchema } from "../../src/supervisor/ops.ts";
import { startControlServer, type ControlHandlers } from "../../src/supervisor/server.ts";
import { SupervisorClient } from "../../src/supervisor/client.ts";
import { prng } from "../helpers/prng.ts";

test("supervisor: line decoder reassembles lines under any chunking (seeded)", () => {
  const r = prng(1234);
  for (let round = 0; round < 200; round++) {
    const lines = Array.from({ length: 1 + Math.floor(r() * 20) }, () =>
      JSON.stringify({ v: 1, id: String(Math.floor(r() * 1e6)), pad: "x".repeat(Math.floor(r() * 300)) }),
    );
    const bytes = Buffer.from(lines.map((l) => `${l}\n`).join(""));
    const d = new LineDecoder(4096);
    const got: string[] = [];
    for (let off = 0; off < bytes.length; ) {
      const n = 1 + Math.floor(r() * 64);
      got.push(...d.push(bytes.subarray(off, off + n)));
      off += n;
    }
    assert.deepEqual(got, lines);
  }
});

test("supervisor: random bytes never crash the decoder or the schemas (seeded)", () => {
  const r = prng(99);
  for (let round = 0; round < 500; round++) {
    const len = Math.floor(r() * 2048);
    const buf = Buffer.alloc(len);
    for (let i = 0; i < len; i++) buf[i] = r() < 0.05 ? 0x0a : Math.floor(r() * 256);
    const d = new LineDecoder(512);
    try {
      for (const line of d.push(buf)) {
        let json: unknown;
        try {
          json = JSON.parse(line);
        } catch {
          continue;
        }
        RequestSchema.safeParse(json);
        ConsoleInputSchema.safeParse(json);
      }
    } catch (e) {
      assert.ok(e instanceof LineTooLongError, String(e));
    }
  }
});

test("supervisor: the control server survives garbage and keeps serving (seeded)", async () => {
  const dir = await mkdtemp(join(tmpdir(), "ma-fuzz-"));
  const sock = join(dir, "c.sock");
  const status = { workspace: "f", phase: "running" as const, supervisorPid: process.pid, bootId: "b", startedAt: "t" };
  const never = () => Promise.reject(new Error("not in this test"));
  const handlers: ControlHandlers = {
    status: () => status,
    ping: async () => ({ guestMs: 1 }),
    waitReady: async () => status,
    readiness: never,
    exec: never,
    attach: never,
    waitResult: never,
    console: never,
    shutdown: never,
    kill: never,
    quarantine: never,
    pause: never,
    resume: never,
    services: () => ({}),
  };
  const server = await startControlServer(sock, handlers);
  const r = prng(7);
  try {
    const samples = [
      "\n",
      "{}\n",
      "null\n",
      '{"v":2,"id":"x","op":"status"}\n',
      '{"v":1,"id":"x","op":"exec","exec":{"argv":[]}}\n',
      '{"v":1,"id":"x","op":"console","cols":-1}\n',
      '{"v":1,"id":"x","op":"status","extra":true}\n',
      '{"v":1,"id":"x","op":"status"}\n{"type":"input","data":"!!"}\n',
      `${"[".repeat(5000)}\n`,
    ];
    for (let i = 0; i < 40; i++) {
      const bytes = Buffer.alloc(Math.floor(r() * 256));
      for (let j = 0; j < bytes.length; j++) bytes[j] = Math.floor(r() * 256);
      samples.push(bytes.toString("latin1") + "\n");
    }
    for (const sample of samples) {
      const reply = await new Promise<string>((resolve) => {
        const s = connect(sock, () => s.write(sample));
        let buf = "";
        s.on("data", (d) => (buf += d.toString()));
        s.on("error", () => resolve(buf));
        s.on("close", () => resolve(buf));
        setTimeout(() => s.destroy(), 500);
      });
      for (const line of reply.split("\n").filter(Boolean)) {
        const parsed = JSON.parse(line);
        assert.ok(parsed.type === "error" || parsed.type === "result", line);
        if (parsed.type === "error") assert.ok(["SUPERVISOR_PROTOCOL", "INTERNAL"].includes(parsed.error.code), line);
      }
    }
    assert.equal((await new SupervisorClient(sock).status()).workspace, "f");
  } finally {
    await server.close();
    await rm(dir, { recursive: true, force: true });
  }
});
