/**
 * Output backpressure through the control server: a client that stops reading holds its producer
 * back (so the guest gets no credit) instead of filling the supervisor's memory, a total cap holds
 * across clients, a stalled client is disconnected with SUPERVISOR_CLIENT_STALLED while others keep
 * working, and streamed stdin reaches the handler in order with EOF.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect, type Socket } from "node:net";
import { createHash } from "node:crypto";
import { startControlServer, type ControlHandlers, type ControlServerOptions } from "../../src/supervisor/server.ts";
import { SupervisorClient } from "../../src/supervisor/client.ts";
import { LineDecoder } from "../../src/supervisor/protocol.ts";
import { ExecHandle } from "../../src/api/exec.ts";

const CHUNK = 32 * 1024;

interface Producer {
  produced: number;
  aborted: boolean;
}

/** exec: `flood` writes 32 KiB chunks until aborted (or `bytes`), awaiting the sink like the guest relay does. */
function floodHandlers(producers: Producer[], stdinSeen: { hash?: string; bytes?: number } = {}): ControlHandlers {
  const never = () => new Promise<never>(() => {});
  const result = { status: "exited" as const, exitCode: 0, stdout: "", stderr: "", stdoutTruncated: false, stderrTruncated: false, startedAt: "a", completedAt: "b" };
  return {
    status: () => ({ workspace: "t", phase: "running", supervisorPid: process.pid, bootId: "b", startedAt: "now" }),
    ping: async () => ({ guestMs: 0 }),
    waitReady: never,
    readiness: never,
    exec: async (req, onOutput, signal, io) => {
      if (req.argv[0] === "wait-signal") {
        const sig = await new Promise<string>((r) => io?.onSignal(r));
        return { ...result, status: "signaled" as const, signal: sig };
      }
      if (req.argv[0] === "sha256") {
        const h = createHash("sha256");
        let n = 0;
        for await (const c of io?.stdin ?? []) {
          h.update(c);
          n += c.length;
        }
        stdinSeen.hash = h.digest("hex");
        stdinSeen.bytes = n;
        return result;
      }
      const limit = Number(req.argv[1] ?? Infinity);
      const p: Producer = { produced: 0, aborted: false };
      producers.push(p);
      signal.addEventListener("abort", () => (p.aborted = true));
      const chunk = Buffer.alloc(CHUNK, 0x79);
      while (!signal.aborted && p.produced < limit) {
        // The guest relay is event-driven: each chunk arrives in its own turn of the loop.
        await new Promise((r) => setImmediate(r));
        p.produced += CHUNK;
        await onOutput?.("stdout", chunk);
      }
      return result;
    },
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
}

async function withServer(handlers: ControlHandlers, opts: ControlServerOptions, fn: (sock: string) => Promise<void>) {
  const dir = await mkdtemp(join(tmpdir(), "ma-bp-"));
  const sock = join(dir, "c.sock");
  const server = await startControlServer(sock, handlers, opts);
  try {
    await fn(sock);
  } finally {
    await server.close();
    await rm(dir, { recursive: true, force: true });
  }
}

/** A raw client that sends an exec request and then reads nothing until `resume()`. */
async function stalledClient(sock: string, argv: string[] = ["flood"]) {
  const s: Socket = connect(sock);
  await new Promise<void>((r) => s.once("connect", () => r()));
  s.pause();
  s.write(`${JSON.stringify({ v: 1, id: "x", op: "exec", exec: { argv, stream: true } })}\n`);
  const lines: string[] = [];
  const decoder = new LineDecoder(2 * 1024 * 1024);
  const closed = new Promise<void>((r) => s.on("close", () => r()));
  s.on("data", (d: Buffer) => lines.push(...decoder.push(d)));
  return { socket: s, lines, closed, resume: () => s.resume() };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test("backpressure: a client that stops reading holds its producer back, then is cut off with SUPERVISOR_CLIENT_STALLED", async () => {
  const producers: Producer[] = [];
  await withServer(floodHandlers(producers), { stallMs: 600, stalledLingerMs: 5000 }, async (sock) => {
    const c = await stalledClient(sock);
    await sleep(400);
    const p = producers[0]!;
    // What the producer got rid of is bounded by the per-client queue plus the kernel's socket buffer.
    assert.ok(p.produced < 4 * 1024 * 1024, `produced ${p.produced} bytes for a client that reads nothing`);
    assert.equal(p.aborted, false, "not yet stalled long enough");
    await sleep(700);
    assert.equal(p.aborted, true, "the stalled request was aborted");
    const frozenAt = p.produced;
    c.resume();
    await c.closed;
    const last = JSON.parse(c.lines.at(-1)!);
    assert.equal(last.type, "error");
    assert.equal(last.error.code, "SUPERVISOR_CLIENT_STALLED");
    assert.equal(last.error.kind, "resource_exhausted");
    assert.match(last.error.message, /read none of its output for 600 ms/);
    // Everything produced before the cut was delivered, in order, then the error.
    const delivered = c.lines.slice(0, -1).reduce((n, l) => n + Buffer.from(JSON.parse(l).data, "base64").length, 0);
    assert.equal(delivered, frozenAt);
  });
});

test("backpressure: a total cap holds across clients, and a reading client still completes while others stall", async () => {
  const producers: Producer[] = [];
  const total = 1024 * 1024;
  await withServer(floodHandlers(producers), { clientQueueBytes: 8 * 1024 * 1024, totalQueueBytes: total, stallMs: 1500 }, async (sock) => {
    const stalled = [await stalledClient(sock), await stalledClient(sock), await stalledClient(sock)];
    await sleep(500);
    const sum = producers.reduce((n, p) => n + p.produced, 0);
    // Each socket's kernel buffer takes some; beyond it the supervisor queues at most ~the total cap.
    assert.ok(sum < total + 3 * 1024 * 1024, `3 stalled clients made the supervisor take ${sum} bytes`);
    // A well-behaved client is held back by the cap only until the stalled ones are cut off.
    const client = new SupervisorClient(sock);
    let got = 0;
    const r = await client.exec({ argv: ["flood", String(64 * CHUNK)] }, (_s, d) => void (got += d.length));
    assert.equal(r.status, "exited");
    assert.equal(got, 64 * CHUNK);
    for (const c of stalled) c.socket.destroy();
  });
});

test("backpressure: the client pauses the supervisor while its consumer lags (the library's iterator)", async () => {
  const producers: Producer[] = [];
  await withServer(floodHandlers(producers), { stallMs: 60_000 }, async (sock) => {
    const client = new SupervisorClient(sock);
    const h = new ExecHandle(client, ["flood", String(2000 * CHUNK)]);
    const it = h[Symbol.asyncIterator]();
    await it.next();
    await sleep(400);
    // The consumer took one chunk: the rest waits in bounded queues, not in this process's memory.
    assert.ok(producers[0]!.produced < 6 * 1024 * 1024, `produced ${producers[0]!.produced}`);
    let n = CHUNK;
    for (;;) {
      const x = await it.next();
      if (x.done) break;
      n += x.value.data.length;
    }
    assert.equal(n, 2000 * CHUNK);
    const outcome = await h;
    assert.equal(outcome.stdout.length, 0, "iterated output is not retained");
  });
});

test("stdin: streamed in chunks of any size, in order, ended by EOF", async () => {
  const seen: { hash?: string; bytes?: number } = {};
  await withServer(floodHandlers([], seen), {}, async (sock) => {
    const data = Buffer.alloc(3 * 1024 * 1024 + 17);
    for (let i = 0; i < data.length; i++) data[i] = (i * 7919) & 0xff;
    const client = new SupervisorClient(sock);
    async function* chunks() {
      for (let off = 0; off < data.length; off += 100_000) yield data.subarray(off, off + 100_000);
    }
    const r = await client.exec({ argv: ["sha256"] }, () => {}, undefined, { stdin: chunks() });
    assert.equal(r.status, "exited");
    assert.equal(seen.bytes, data.length);
    assert.equal(seen.hash, createHash("sha256").update(data).digest("hex"));
  });
});

test("signal: a signal line reaches the running exec (library kill())", async () => {
  await withServer(floodHandlers([]), {}, async (sock) => {
    const h = new ExecHandle(new SupervisorClient(sock), ["wait-signal"]);
    await sleep(100);
    h.kill("SIGTERM");
    const r = await h;
    assert.equal(r.status, "signaled");
    assert.equal(r.signal, "SIGTERM");
  });
});

test("an oversize control line is refused with a fix that points at streamed stdin", async () => {
  await withServer(floodHandlers([]), {}, async (sock) => {
    const s = connect(sock);
    await new Promise<void>((r) => s.once("connect", () => r()));
    const lines: string[] = [];
    const decoder = new LineDecoder();
    s.on("data", (d: Buffer) => lines.push(...decoder.push(d)));
    s.on("error", () => {});
    const closed = new Promise<void>((r) => s.on("close", () => r()));
    s.write(`${JSON.stringify({ v: 1, id: "x", op: "exec", exec: { argv: ["cat"], stdin: "A".repeat(1100 * 1024) } })}\n`);
    await closed;
    const reply = JSON.parse(lines[0]!);
    assert.equal(reply.error.code, "SUPERVISOR_PROTOCOL");
    assert.match(reply.error.message, /exceeds 1048576 bytes/);
    assert.match(reply.error.remediation, /stdin/);
    assert.doesNotMatch(reply.error.remediation, /halt the workspace/);
  });
});

test("a non-streamed exec (output inline in the result line) is capped at MAX_INLINE_OUTPUT_BYTES per stream", async () => {
  await withServer(floodHandlers([]), {}, async (sock) => {
    const client = new SupervisorClient(sock);
    await assert.rejects(client.exec({ argv: ["flood", "1"], stdoutLimitBytes: 10 * 1024 * 1024 }), (e: Error & { code?: string }) => {
      assert.equal(e.code, "INVALID_ARGUMENT");
      assert.match(e.message, /stdoutLimitBytes 10485760 is over 262144 for a non-streamed exec/);
      return true;
    });
  });
});
