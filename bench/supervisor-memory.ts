/**
 * The supervisor's memory budget with the network stack and TLS mediation that will live in it, run
 * under the supervisor's own Node flags (SUPERVISOR_NODE_FLAGS) unless `--old-space N` overrides the
 * heap cap. No VM: the real NetworkStack (src/net) is driven by the test guest endpoint, with every
 * flow's buffers filled both ways (the host side does not drain, the guest app does not read), the
 * worst case its caps allow; then the workspace CA issues leaf certificates as the egress mediator
 * would. Prints heap used, external (Buffers, outside the V8 heap) and RSS after each step.
 * Used for docs/architecture.md ("Memory").
 *
 *   node bench/supervisor-memory.ts [--flows 256] [--leaves 2000] [--old-space 24]
 */
import { spawnSync } from "node:child_process";
import type { TLSSocket } from "node:tls";
import { SUPERVISOR_NODE_FLAGS } from "../src/supervisor/spawn.ts";

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(name);
  return i >= 0 && process.argv[i + 1] ? (process.argv[i + 1] as string) : fallback;
}

if (process.env.BENCH_CHILD !== "1") {
  const oldSpace = process.argv.includes("--old-space") ? arg("--old-space", "24") : undefined;
  const flags = SUPERVISOR_NODE_FLAGS.map((f) => (oldSpace && f.startsWith("--max-old-space-size=") ? `--max-old-space-size=${oldSpace}` : f));
  process.stdout.write(`flags: ${flags.join(" ")}\n`);
  const r = spawnSync(process.execPath, [...flags, "--expose-gc", import.meta.filename, ...process.argv.slice(2)], { stdio: "inherit", env: { ...process.env, BENCH_CHILD: "1" } });
  process.exit(r.status ?? 1);
}

const flows = Number(arg("--flows", "256"));
const leaves = Number(arg("--leaves", "2000"));
const mib = (n: number) => `${(n / 1048576).toFixed(1)} MiB`;
function report(label: string): void {
  globalThis.gc?.();
  const m = process.memoryUsage();
  process.stdout.write(`${label.padEnd(46)} rss ${mib(m.rss)}  heapUsed ${mib(m.heapUsed)}  heapTotal ${mib(m.heapTotal)}  external ${mib(m.external)}\n`);
}

// What a supervisor with a network service loads.
await import("../src/supervisor/session.ts");
await import("../src/supervisor/server.ts");
const { GuestTcp, harness, ip, pump } = await import("../test/helpers/net-guest.ts");
const { LeafIssuer, caFromPem, generateCa } = await import("../src/egress/ca.ts");
report("modules loaded (supervisor + net + egress)");

const h = harness();
report("one idle network stack");
const SERVER = ip("93.184.216.34");
const guests: InstanceType<typeof GuestTcp>[] = [];
for (let i = 0; i < flows; i++) {
  const g = new GuestTcp(h, { localPort: 20000 + i, remote: SERVER, remotePort: 443, mss: 65480, wscale: 7, rcvWindow: 1 << 20 });
  g.appPaused = true; // the guest app reads nothing: host -> guest data stays in the stack
  g.connect();
  guests.push(g);
  pump(h, guests);
  // Let the stack's half-open table drain as the handshakes complete.
}
report(`${flows} flows established`);
const chunk = Buffer.alloc(64 * 1024, 0x41);
for (const s of h.connector.streams) {
  s.blocked = true; // the host side drains nothing: guest -> host stays too
  s.keepData = false; // (the fake host socket would otherwise keep its own copy)
}
for (let round = 0; round < 16; round++) {
  for (const g of guests) g.pushData((n) => chunk.subarray(0, Math.min(n, chunk.length)), 256 * 1024);
  for (const s of h.connector.streams) if (!s.paused) s.h.onData(Buffer.from(chunk));
  pump(h, guests);
}
const st = h.stack.stats() as unknown as Record<string, unknown>;
report(`${flows} flows, buffers full both ways`);
process.stdout.write(`  stack stats: ${JSON.stringify(st).slice(0, 400)}\n`);

const g = generateCa({ workspace: "bench" });
const ca = caFromPem(g.keyPem, g.certPem);
const issuer = new LeafIssuer(ca, { newNamesPerSecond: Infinity, cacheSize: leaves + 1 });
for (let i = 0; i < leaves; i++) issuer.issue(`host-${i}.bench.test`);
report(`+ ${leaves} TLS leaves issued and cached`);

// TLS sessions as the mediator holds them: one server-side TLSSocket per flow, terminated with a
// leaf of the workspace CA, its client over loopback (both in this process, so the figure counts
// twice the sockets a mediator holds per flow on one side).
const tls = await import("node:tls");
const leaf = issuer.issue("api.bench.test");
if (!leaf) throw new Error("leaf refused");
const server = tls.createServer({ key: leaf.keyPem, cert: leaf.chainPem });
await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
const port = (server.address() as { port: number }).port;
const clients: TLSSocket[] = [];
const tlsCount = Number(arg("--tls", "64"));
for (let i = 0; i < tlsCount; i++) {
  const c = tls.connect({ host: "127.0.0.1", port, servername: "api.bench.test", ca: g.certPem });
  await new Promise<void>((res, rej) => c.once("secureConnect", () => res()).once("error", rej));
  clients.push(c);
}
report(`+ ${tlsCount} TLS connections (both ends here)`);
for (const c of clients) c.destroy();
server.close();
