/**
 * The supervisor's memory under hostile clients, without a VM: the real control server, run under
 * the supervisor's own Node flags, serves N clients that never read while handlers flood them
 * (32 KiB chunks awaiting the output sink, as the guest relay does), plus one client that reads a
 * large stream normally. Prints heap, external and RSS idle, under the flood, and after the stalled
 * clients were cut off. Used to size SUPERVISOR_NODE_FLAGS (docs/architecture.md, "Memory").
 *
 *   node bench/supervisor-backpressure.ts [stalled clients, default 3]
 */
import { spawnSync } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect } from "node:net";
import { SUPERVISOR_NODE_FLAGS } from "../src/supervisor/spawn.ts";

if (process.env.BENCH_CHILD !== "1") {
  const r = spawnSync(process.execPath, [...SUPERVISOR_NODE_FLAGS, "--expose-gc", import.meta.filename, ...process.argv.slice(2)], {
    stdio: "inherit",
    env: { ...process.env, BENCH_CHILD: "1" },
  });
  process.exit(r.status ?? 1);
}

const { startControlServer } = await import("../src/supervisor/server.ts");
const { SupervisorClient } = await import("../src/supervisor/client.ts");
type Handlers = Parameters<typeof startControlServer>[1];

const stalledCount = Number(process.argv[2] ?? 3);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const mib = (n: number) => `${(n / 1048576).toFixed(1)} MiB`;
function report(label: string): void {
  globalThis.gc?.();
  const m = process.memoryUsage();
  process.stdout.write(`${label.padEnd(34)} rss ${mib(m.rss)}  heapUsed ${mib(m.heapUsed)}  heapTotal ${mib(m.heapTotal)}  external ${mib(m.external)}\n`);
}

const never = () => new Promise<never>(() => {});
const chunk = Buffer.alloc(32 * 1024, 0x79);
const handlers: Handlers = {
  status: () => ({ workspace: "b", phase: "running", supervisorPid: process.pid, bootId: "b", startedAt: "now" }),
  ping: never,
  waitReady: never,
  readiness: never,
  exec: async (req, onOutput, signal) => {
    const limit = Number(req.argv[1] ?? Infinity);
    for (let n = 0; n < limit && !signal.aborted; n += chunk.length) {
      await new Promise((r) => setImmediate(r));
      await onOutput?.("stdout", Buffer.from(chunk));
    }
    return { status: "exited", exitCode: 0, stdout: "", stderr: "", stdoutTruncated: false, stderrTruncated: false, startedAt: "a", completedAt: "b" };
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

const dir = await mkdtemp(join(tmpdir(), "ma-bench-bp-"));
const sock = join(dir, "c.sock");
const server = await startControlServer(sock, handlers, { stallMs: 4000, stalledLingerMs: 60_000 });
await sleep(200);
report("idle");
const stalled = [];
for (let i = 0; i < stalledCount; i++) {
  const s = connect(sock);
  await new Promise<void>((r) => s.once("connect", () => r()));
  s.pause();
  s.write(`${JSON.stringify({ v: 1, id: String(i), op: "exec", exec: { argv: ["flood"], stream: true } })}\n`);
  stalled.push(s);
}
let got = 0;
const reader = new SupervisorClient(sock).exec({ argv: ["flood", String(256 * 1024 * 1024)] }, (_s, d) => void (got += d.length));
let peak = 0;
const t0 = Date.now();
while (Date.now() - t0 < 3500) {
  await sleep(250);
  peak = Math.max(peak, process.memoryUsage().rss);
}
report(`${stalledCount} stalled + 1 reading flood`);
await reader;
report(`after 256 MiB to the reader (${mib(got)})`);
process.stdout.write(`peak rss during the flood          ${mib(peak)}\n`);
for (const s of stalled) s.destroy();
await server.close();
await rm(dir, { recursive: true, force: true });
