/**
 * The workload relay on its own: the ring for late attachers (bounded, oldest dropped, newest kept),
 * replay then live follow without gaps or duplicates, backpressure (a push waits for every attacher),
 * result waiters and the end of a session without a result.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { WorkloadRelay } from "../../src/supervisor/workload-relay.ts";
import { SupervisorErrors } from "../../src/supervisor/errors.ts";
import { setup } from "../helpers/supervisor-fakes.ts";

const signal = new AbortController().signal;
const died = () => SupervisorErrors.VM_DIED({ message: "ended (failed) before its workload reported a result" });

test("workload relay: with nobody attached a push never waits, and a late attach replays everything in order", async () => {
  const relay = new WorkloadRelay();
  assert.equal(relay.push("stdout", Buffer.from("a")), undefined);
  assert.equal(relay.push("stderr", Buffer.from("b")), undefined);
  const seen: string[] = [];
  const attached = relay.attach((s, d) => void seen.push(`${s}:${d}`), signal);
  await new Promise((r) => setImmediate(r));
  assert.equal(relay.attachers, 1);
  relay.push("stdout", Buffer.from("c"));
  relay.settle({ ran: true, exitCode: 0 });
  assert.deepEqual(await attached, { ran: true, exitCode: 0 });
  assert.deepEqual(seen, ["stdout:a", "stderr:b", "stdout:c"]);
  assert.equal(relay.attachedOnce, true);
  assert.equal(relay.attachers, 0);
});

test("workload relay: the ring drops the oldest past its cap, keeps the newest chunk whole, and copies frames", async () => {
  const relay = new WorkloadRelay({ bufferBytes: 10 });
  const big = Buffer.alloc(64, 0x61);
  const frame = Buffer.from("0123456");
  relay.push("stdout", frame);
  frame.fill(0x78); // the guest's read buffer is reused: the ring must hold its own copy
  relay.push("stdout", Buffer.from("789"));
  assert.equal(relay.truncated, false);
  assert.equal(relay.bufferedBytes, 10);
  relay.push("stdout", big);
  assert.equal(relay.truncated, true);
  assert.equal(relay.bufferedBytes, 64, "the newest chunk stays even when it alone exceeds the cap");
  relay.settle({ ran: true, exitCode: 0 });
  const seen: Buffer[] = [];
  await relay.attach((_s, d) => void seen.push(d), signal);
  assert.deepEqual(Buffer.concat(seen), big);
  const relay2 = new WorkloadRelay({ bufferBytes: 100 });
  relay2.push("stdout", frame.fill(0x30, 0, 7));
  frame.fill(0x78);
  relay2.settle({ ran: true, exitCode: 0 });
  const seen2: string[] = [];
  await relay2.attach((_s, d) => void seen2.push(d.toString()), signal);
  assert.deepEqual(seen2, ["0000000"]);
});

test("workload relay: a push waits until every attacher has room (backpressure), and a stalled one holds it", async () => {
  const relay = new WorkloadRelay();
  const releases: (() => void)[] = [];
  const slow = (_s: string, _d: Buffer) => new Promise<void>((r) => releases.push(r));
  const fast: string[] = [];
  void relay.attach(slow, signal);
  void relay.attach((_s, d) => void fast.push(d.toString()), signal);
  await new Promise((r) => setImmediate(r));
  const wait = relay.push("stdout", Buffer.from("x"));
  assert.ok(wait instanceof Promise, "the guest's credit waits");
  let credited = false;
  void wait.then(() => (credited = true));
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(credited, false, "held back while the slow attacher has no room");
  assert.deepEqual(fast, ["x"]);
  releases[0]!();
  await wait;
  assert.equal(credited, true);
});

test("workload relay: waiters get the result; a session that ends without one rejects them (and later callers) with its error", async () => {
  const relay = new WorkloadRelay();
  const w1 = relay.waitResult(signal);
  relay.settle({ ran: true, exitCode: 3 });
  assert.deepEqual(await w1, { ran: true, exitCode: 3 });
  assert.deepEqual(await relay.waitResult(signal), { ran: true, exitCode: 3 });

  const r2 = new WorkloadRelay();
  const w2 = r2.waitResult(signal);
  const a2 = r2.attach(() => {}, signal);
  r2.end(died());
  await assert.rejects(w2, (e: Error & { code?: string }) => e.code === "VM_DIED");
  await assert.rejects(a2, (e: Error & { code?: string }) => e.code === "VM_DIED");
  await assert.rejects(r2.waitResult(signal), (e: Error & { code?: string }) => e.code === "VM_DIED");
  await assert.rejects(r2.attach(() => {}, signal), (e: Error & { code?: string }) => e.code === "VM_DIED");

  // the result and the end race by a tick: the result wins
  const r3 = new WorkloadRelay();
  const w3 = r3.waitResult(signal);
  r3.end(died());
  r3.settle({ ran: true, exitCode: 0 });
  assert.deepEqual(await w3, { ran: true, exitCode: 0 });
});

test("workload relay: an aborted waiter or attacher is dropped with 'client went away'", async () => {
  const relay = new WorkloadRelay();
  const ac = new AbortController();
  const w = relay.waitResult(ac.signal);
  const a = relay.attach(() => {}, ac.signal);
  await new Promise((r) => setImmediate(r));
  ac.abort();
  await assert.rejects(w, /client went away/);
  await assert.rejects(a, /client went away/);
  assert.equal(relay.attachers, 0);
  relay.settle({ ran: true, exitCode: 0 });
});

test("supervisor relay through the real control server: a stalled attacher holds the workload back, is cut off with SUPERVISOR_CLIENT_STALLED, and the workload runs free again", async () => {
  const { mkdtemp, rm } = await import("node:fs/promises");
  const { tmpdir } = await import("node:os");
  const { join } = await import("node:path");
  const { connect } = await import("node:net");
  const { startControlServer } = await import("../../src/supervisor/server.ts");
  const { LineDecoder } = await import("../../src/supervisor/protocol.ts");
  const { sup, link } = setup();
  await sup.boot();
  const dir = await mkdtemp(join(tmpdir(), "ma-relay-"));
  const server = await startControlServer(join(dir, "c.sock"), sup, { stallMs: 300, stalledLingerMs: 5000 });
  try {
    const s = connect(join(dir, "c.sock"));
    await new Promise<void>((r) => s.once("connect", () => r()));
    s.pause();
    s.write(`${JSON.stringify({ v: 1, id: "a", op: "attach" })}\n`);
    await new Promise((r) => setTimeout(r, 50));
    const chunk = "y".repeat(32 * 1024);
    let produced = 0;
    let heldAt: number | undefined;
    const started = Date.now();
    while (produced < 64 * 1024 * 1024 && Date.now() - started < 5000) {
      const wait = link.emit(chunk);
      produced += chunk.length;
      if (wait) {
        const t = Date.now();
        await wait;
        if (Date.now() - t > 150) heldAt ??= produced;
      }
    }
    assert.ok(heldAt !== undefined && heldAt < 8 * 1024 * 1024, `the workload was held back (at ${heldAt} bytes)`);
    assert.ok(produced >= 64 * 1024 * 1024, "after the cut-off the workload runs free");
    const lines: string[] = [];
    const decoder = new LineDecoder(2 * 1024 * 1024);
    const closed = new Promise<void>((r) => s.on("close", () => r()));
    s.on("data", (d: Buffer) => lines.push(...decoder.push(d)));
    s.resume();
    await closed;
    const last = JSON.parse(lines.at(-1)!);
    assert.equal(last.type, "error");
    assert.equal(last.error.code, "SUPERVISOR_CLIENT_STALLED");
  } finally {
    await sup.kill();
    await server.close();
    await rm(dir, { recursive: true, force: true });
  }
});
