/**
 * `user` networking on real VMs, in one run: start cost of `user` over `isolated` (p50 of N starts
 * each), bulk TCP host->guest and guest->host (64 MiB through busybox wget/nc against loopback servers
 * reached as host.microagent.internal / the gateway), TCP connect (20 `nc` to a server that closes at once, per
 * connect; process spawn included, equal for both datapaths), all through our userspace stack and the same
 * through passt (2023_03_09, `MICROAGENT_NET_DATAPATH=passt` bench seam: the same NIC and guest config, frames to
 * passt instead), and the exec round trip p99 idle against while the guest floods the network.
 * Records, does not assert.
 *
 *   node bench/net-user.ts [--boots 3]
 */
import { createServer as createHttpServer } from "node:http";
import { createServer, type AddressInfo, type Server } from "node:net";
import { join } from "node:path";
import { tmpdir } from "node:os";
import { parseArgs } from "node:util";
import { workspaceFixture } from "../test/helpers/workspace.ts";
import { runCli } from "../test/helpers/cli.ts";

const { values } = parseArgs({ options: { boots: { type: "string", default: "3" } } });
const boots = Number(values.boots);
const q = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(p * s.length))]!;
};
const BIG = 64 << 20;

const fx = await workspaceFixture("bench-net");
process.env.MICROAGENT_INSECURE_REGISTRIES = fx.registry.host;
process.env.MICROAGENT_KERNEL_CACHE ??= join(tmpdir(), "microagent-test-kernel-cache");
const servers: Server[] = [];
const listen = (s: Server) => {
  servers.push(s);
  return new Promise<number>((r) => s.listen(0, "127.0.0.1", () => r((s.address() as AddressInfo).port)));
};
const cli = async (...args: string[]) => {
  const r = await runCli(["--state-dir", fx.stateDir, ...args]);
  if (r.code !== 0) throw new Error(`${args.join(" ")}: exit ${r.code}: ${r.err}`);
  return r.out;
};
const timed = async (f: () => Promise<unknown>) => {
  const t = performance.now();
  await f();
  return performance.now() - t;
};

try {
  const image = await fx.image("bench/busybox:1");
  const chunk = Buffer.alloc(1 << 20, 7);
  const http = createHttpServer((_req, res) => {
    res.writeHead(200, { "content-length": BIG });
    let n = 0;
    const pump = () => {
      while (n < BIG) {
        n += chunk.length;
        if (!res.write(chunk)) return void res.once("drain", pump);
      }
      res.end();
    };
    pump();
  });
  const httpPort = await listen(http as unknown as Server);
  const sink = createServer((s) => {
    let n = 0;
    s.on("data", (d: Buffer) => {
      n += d.length;
      if (n >= BIG) s.end();
    });
    s.on("error", () => {});
  });
  const sinkPort = await listen(sink);
  const echo = createServer((s) => s.end());
  const connectPort = await listen(echo);
  const allow = [httpPort, sinkPort, connectPort].flatMap((p) => ["--egress-allow", `host.microagent.internal:${p}`]);
  await cli("create", "iso", "--image", image, "--profile", "tiny", "--network", "isolated");
  await cli("create", "usr", "--image", image, "--profile", "tiny", ...allow);
  await cli("create", "pst", "--image", image, "--profile", "tiny", ...allow);

  // Start cost: alternate so drift hits both.
  const start: Record<string, number[]> = { iso: [], usr: [] };
  for (let i = 0; i < boots; i++) {
    for (const w of ["iso", "usr"] as const) {
      start[w]!.push(await timed(() => cli("start", w)));
      await cli("kill", w);
    }
  }

  console.log(`start p50: isolated ${q(start.iso!, 0.5).toFixed(0)} ms, user ${q(start.usr!, 0.5).toFixed(0)} ms`);
  const sh = (w: string, script: string) => cli("exec", w, "--timeout", "600s", "--", "sh", "-c", script);
  const measure = async (w: string, host: string) => {
    const base = await timed(() => sh(w, "true"));
    const down = (await timed(() => sh(w, `wget -q -O /tmp/big http://${host}:${httpPort}/`))) - base;
    const up = (await timed(() => sh(w, `nc ${host} ${sinkPort} < /tmp/big; rm /tmp/big`))) - base;
    const loop = (n: number) => sh(w, `i=0; while [ $i -lt ${n} ]; do nc ${host} ${connectPort} </dev/null || exit 1; i=$((i+1)); done`);
    const one = await timed(() => loop(1));
    const many = await timed(() => loop(21));
    return { downMiBps: 64 / (down / 1000), upMiBps: 64 / (up / 1000), connectMs: (many - one) / 20 };
  };

  await cli("start", "usr");
  const ours = await measure("usr", "host.microagent.internal");
  console.log(`ours: ${JSON.stringify(ours)}`);
  // Exec round trip idle, then while the guest pulls 64 MiB downloads in a loop.
  const rtt = async (w = "usr") => {
    const xs: number[] = [];
    for (let i = 0; i < 30; i++) xs.push(await timed(() => cli("exec", w, "--", "true")));
    return xs;
  };
  const idle = await rtt();
  await sh("usr", `(while true; do wget -q -O /dev/null http://host.microagent.internal:${httpPort}/; done) >/dev/null 2>&1 &`);
  const flood = await rtt();
  const stats = JSON.parse(await cli("--json", "network", "usr"));
  await cli("kill", "usr");

  process.env.MICROAGENT_NET_DATAPATH = "passt";
  await cli("start", "pst");
  const passt = await measure("pst", "10.200.0.1");
  // The same flood through passt: separates the guest's own CPU contention from the stack's share.
  await sh("pst", `(while true; do wget -q -O /dev/null http://10.200.0.1:${httpPort}/; done) >/dev/null 2>&1 &`);
  const passtFlood = await rtt("pst");
  await cli("kill", "pst");
  delete process.env.MICROAGENT_NET_DATAPATH;

  const r = {
    startIsolatedP50Ms: q(start.iso!, 0.5),
    startUserP50Ms: q(start.usr!, 0.5),
    startUserOverIsolatedMs: q(start.usr!, 0.5) - q(start.iso!, 0.5),
    ours,
    passt,
    ratioDown: ours.downMiBps / passt.downMiBps,
    ratioUp: ours.upMiBps / passt.upMiBps,
    connectDeltaMs: ours.connectMs - passt.connectMs,
    execP99IdleMs: q(idle, 0.99),
    execP99FloodMs: q(flood, 0.99),
    execP50IdleMs: q(idle, 0.5),
    execP50FloodMs: q(flood, 0.5),
    passtExecP50FloodMs: q(passtFlood, 0.5),
    passtExecP99FloodMs: q(passtFlood, 0.99),
    framesIn: stats.counters?.framesIn,
  };
  const f = (x: number) => x.toFixed(1);
  console.log(`start p50: isolated ${f(r.startIsolatedP50Ms)} ms, user ${f(r.startUserP50Ms)} ms (+${f(r.startUserOverIsolatedMs)} ms; ${boots} boots each)`);
  console.log(`bulk host->guest: ours ${f(ours.downMiBps)} MiB/s, passt ${f(passt.downMiBps)} MiB/s (ratio ${r.ratioDown.toFixed(2)})`);
  console.log(`bulk guest->host: ours ${f(ours.upMiBps)} MiB/s, passt ${f(passt.upMiBps)} MiB/s (ratio ${r.ratioUp.toFixed(2)})`);
  console.log(`tcp connect (nc, spawn included): ours ${f(ours.connectMs)} ms, passt ${f(passt.connectMs)} ms (delta ${f(r.connectDeltaMs)} ms)`);
  console.log(`exec round trip (CLI): p50/p99 idle ${f(r.execP50IdleMs)}/${f(r.execP99IdleMs)} ms, flooding ${f(r.execP50FloodMs)}/${f(r.execP99FloodMs)} ms (through passt: ${f(r.passtExecP50FloodMs)}/${f(r.passtExecP99FloodMs)} ms)`);
  console.log(JSON.stringify(r));
} finally {
  for (const w of ["iso", "usr", "pst"]) await runCli(["--state-dir", fx.stateDir, "kill", w]).catch(() => {});
  for (const s of servers) s.close();
  await fx.cleanup();
}
