/**
 * Egress mediation on real VMs, in one run: single-stream bulk transfer and the time to first byte
 * of a new HTTPS connection, measured by curl inside the guest (its own `%{speed_*}` and
 * `%{time_starttransfer}`, so exec and process spawn are not counted) against servers on 127.0.0.1:
 *
 *   passt      `MICROAGENT_NET_DATAPATH=passt` (bench seam): plain HTTP and TLS to the gateway
 *   off        our stack, `--egress off`: plain HTTP and TLS straight through (NAT, no mediation)
 *   mitm       `--egress guarded` as it comes: TLS intercepted with the workspace CA, HTTP/1 inspected;
 *              the guest's trust is the workspace CA alone
 *   passthru   `--egress guarded` with the host in `--egress-passthrough`: TLS sniffed, then spliced;
 *              a passthrough entry puts the host's roots in the guest's bundle too (trust.ts)
 *
 * The goals: passthrough bulk at least 0.5x passt, MITM at least 0.4x, and a new MITM'd
 * HTTPS connection's TTFB at most 2.5x direct TLS (`off`) to the same server. Ratios are printed
 * against passt plain TCP (the goal as written) and against passt carrying the same TLS (what the
 * mediator itself costs: the guest decrypts in both). TTFB is shown with curl trusting one CA file
 * and with a root store of the usual size (the image's, or the merged bundle of a workspace with
 * passthrough entries): curl parses its whole CA file in every process, which under TCG costs more
 * than the interception. The guarded workspaces dial a public-looking address named with --add-host;
 * MICROAGENT_TEST_EGRESS_ROUTES makes the mediator dial 127.0.0.1 instead (the integration test's
 * setup), so nothing but loopback is reached. Records, does not assert.
 *
 * How to run (builds dist/ first; needs qemu, passt, openssl and the host curl/python3 for the
 * tools image; one VM at a time; about 3 minutes under TCG; --ttfb-only skips the transfers):
 *
 *   npm run -s build && node bench/egress-bulk.ts [--mib 64] [--conns 20] [--rounds 1]
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from "node:http";
import { createServer as createHttpsServer } from "node:https";
import type { AddressInfo, Server } from "node:net";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { workspaceFixture } from "../test/helpers/workspace.ts";
import { runCli } from "../test/helpers/cli.ts";
import { pushImage } from "../test/helpers/oci-image.ts";
import { buildToolsImage } from "../test/helpers/tools-image.ts";

const { values } = parseArgs({ options: { mib: { type: "string", default: "64" }, conns: { type: "string", default: "20" }, rounds: { type: "string", default: "1" }, "ttfb-only": { type: "boolean", default: false } } });
const TTFB_ONLY = values["ttfb-only"];
const MIB = Number(values.mib);
const CONNS = Number(values.conns);
const ROUNDS = Number(values.rounds);
const BIG = MIB << 20;
const PUBLIC_IP = "93.184.216.34";
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

// An upstream CA of the bench's own and one server certificate for both names.
const certDir = mkdtempSync(join(tmpdir(), "egress-bulk-certs-"));
const openssl = (args: string[]) => execFileSync("openssl", args, { cwd: certDir, stdio: ["ignore", "ignore", "pipe"] });
openssl(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=Bench Upstream CA"]);
openssl(["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "srv.key", "-out", "srv.csr", "-subj", "/CN=bench server"]);
writeFileSync(join(certDir, "srv.cnf"), "subjectAltName=DNS:bulk.test,DNS:pass.test\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n");
openssl(["x509", "-req", "-in", "srv.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", "srv.pem", "-days", "2", "-extfile", "srv.cnf"]);
const caFile = join(certDir, "ca.pem");
const caPem = readFileSync(caFile, "utf8");

/** GET /big: MIB MiB; PUT/POST: the body is counted and the count returned; anything else: "ok". */
const chunk = Buffer.alloc(1 << 20, 0x61);
const handler = (req: IncomingMessage, res: ServerResponse) => {
  if (req.method === "PUT" || req.method === "POST") {
    let n = 0;
    req.on("data", (d: Buffer) => (n += d.length));
    req.on("end", () => res.end(`${n}\n`));
    return;
  }
  if (req.url !== "/big") return void res.end("ok\n");
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
};
const servers: Server[] = [];
const listen = (s: Server) => {
  servers.push(s);
  return new Promise<number>((r) => s.listen(0, "127.0.0.1", () => r((s.address() as AddressInfo).port)));
};
const httpPort = await listen(createHttpServer(handler) as unknown as Server);
const httpsPort = await listen(createHttpsServer({ key: readFileSync(join(certDir, "srv.key")), cert: readFileSync(join(certDir, "srv.pem")) }, handler) as unknown as Server);

process.env.MICROAGENT_TEST_EGRESS_ROUTES = `${PUBLIC_IP}=127.0.0.1`;
const fx = await workspaceFixture("bench-egress-bulk");
process.env.MICROAGENT_INSECURE_REGISTRIES = fx.registry.host;
process.env.MICROAGENT_KERNEL_CACHE ??= join(tmpdir(), "microagent-test-kernel-cache");
const cli = async (...args: string[]) => {
  const r = await runCli(["--state-dir", fx.stateDir, ...args]);
  if (r.code !== 0) throw new Error(`${args.join(" ")}: exit ${r.code}: ${r.out}${r.err}`);
  return r.out;
};
const sh = (w: string, script: string) => cli("exec", w, "--timeout", "600s", "--", "sh", "-c", script);

interface Result {
  downMbps: number;
  upMbps: number;
  tlsDownMbps: number;
  tlsUpMbps: number;
}
const mbps = (bytesPerSec: number) => (bytesPerSec * 8) / 1e6;
const UP = `head -c ${BIG} /dev/zero | curl -sS --fail -o /dev/null -H 'Content-Length: ${BIG}' -H 'Transfer-Encoding:' -H 'Expect:' -T -`;

async function bulk(w: string, url: string, tlsArgs = ""): Promise<{ down: number; up: number }> {
  if (TTFB_ONLY) return { down: NaN, up: NaN };
  const down = await sh(w, `curl -sS --fail ${tlsArgs} -o /dev/null -w '%{size_download} %{speed_download}' ${url}/big`);
  const [dn, dspeed] = down.trim().split(" ").map(Number);
  if (dn !== BIG) throw new Error(`${w}: downloaded ${dn} bytes of ${BIG}`);
  const up = await sh(w, `${UP} ${tlsArgs} -w '%{size_upload} %{speed_upload}' ${url}/up`);
  const [un, uspeed] = up.trim().split(" ").map(Number);
  if (un !== BIG) throw new Error(`${w}: uploaded ${un} bytes of ${BIG}`);
  return { down: mbps(dspeed!), up: mbps(uspeed!) };
}

/**
 * `CONNS` new HTTPS connections, one curl each: `time_starttransfer` (DNS from /etc/hosts, TCP, TLS,
 * request, first byte), with `time_connect` and `time_appconnect` kept for the breakdown. In ms.
 */
interface Ttfb {
  lookup: number[];
  connect: number[];
  tls: number[];
  first: number[];
}
async function ttfb(w: string, url: string, tlsArgs: string): Promise<Ttfb> {
  const out = await sh(w, `i=0; while [ $i -lt ${CONNS + 1} ]; do curl -sS --fail ${tlsArgs} -o /dev/null -w '%{time_namelookup} %{time_connect} %{time_appconnect} %{time_starttransfer}\\n' ${url}/ttfb || exit 1; i=$((i+1)); done`);
  // The first connection pays the leaf issuance and the guest's cold caches: dropped.
  const rows = out.trim().split("\n").slice(1).map((l) => l.split(" ").map((v) => Number(v) * 1000));
  return { lookup: rows.map((r) => r[0]!), connect: rows.map((r) => r[1]!), tls: rows.map((r) => r[2]!), first: rows.map((r) => r[3]!) };
}

let toolsCleanup = async () => {};
try {
  // The image's own store: this host's system roots plus the bench's upstream CA (a Debian image with
  // a private CA added), so `off` can verify with a store of the usual size as well as with one CA.
  const tools = await buildToolsImage({ files: { "/etc/ssl/certs/ca-certificates.crt": `${readFileSync("/etc/ssl/certs/ca-certificates.crt", "utf8")}${caPem}` } });
  toolsCleanup = () => tools.cleanup();
  const image = (await pushImage(tools, fx.registry, "bench/tools:1")).ref;
  const hostAllow = [httpPort, httpsPort].flatMap((p) => ["--egress-allow", `host.microagent.internal:${p}`]);
  const names = ["--add-host", `bulk.test:${PUBLIC_IP}`, "--add-host", `pass.test:${PUBLIC_IP}`, "--egress-upstream-ca", caFile];
  await cli("create", "pst", "--image", image, "--profile", "tiny", "--egress", "off", ...hostAllow);
  await cli("create", "off", "--image", image, "--profile", "tiny", "--egress", "off", ...hostAllow);
  // guarded as it comes (no passthrough entry): the guest's trust is the workspace CA alone.
  await cli("create", "mit", "--image", image, "--profile", "tiny", ...names);
  // guarded with a passthrough entry: the guest's bundle also carries the host's roots (trust.ts).
  await cli("create", "pth", "--image", image, "--profile", "tiny", ...names, "--egress-passthrough", "pass.test");

  // The gateway is the host's loopback for passt and for `off`; the server's certificate names bulk.test.
  const resolve = `--resolve bulk.test:${httpsPort}:10.200.0.1`;
  const direct = `--cacert /tmp/up.pem ${resolve}`;
  const putCa = (w: string) => sh(w, `cat > /tmp/up.pem <<'EOF'\n${caPem}EOF`);
  const runs: Record<string, Result[]> = { passt: [], off: [], passthru: [], mitm: [] };
  const ttfbs: Record<string, Ttfb> = {};
  const addTtfb = (k: string, t: Ttfb) => {
    const acc = (ttfbs[k] ??= { lookup: [], connect: [], tls: [], first: [] });
    acc.lookup.push(...t.lookup);
    acc.connect.push(...t.connect);
    acc.tls.push(...t.tls);
    acc.first.push(...t.first);
  };
  const load: number[] = [];
  const session = async (w: string, body: () => Promise<void>) => {
    if (w === "pst") process.env.MICROAGENT_NET_DATAPATH = "passt";
    try {
      await cli("start", w);
    } finally {
      delete process.env.MICROAGENT_NET_DATAPATH;
    }
    try {
      await putCa(w);
      await body();
    } catch (e) {
      // What the mediator said about the failed flow (guarded workspaces): the audit's non-allow records.
      const a = await runCli(["--state-dir", fx.stateDir, "--json", "egress", w]);
      const recs = a.code === 0 ? ((JSON.parse(a.out) as { egress: Array<{ type: string }> }).egress ?? []) : [];
      for (const x of recs.filter((x) => !["egress_allow", "egress_close", "egress_dns_allow"].includes(x.type)).slice(-10)) console.error(JSON.stringify(x));
      throw e;
    } finally {
      await cli("kill", w);
    }
    load.push(loadavg()[0]!);
  };
  const https = `https://bulk.test:${httpsPort}`;
  for (let round = 0; round < ROUNDS; round++) {
    await session("pst", async () => {
      const plain = await bulk("pst", `http://10.200.0.1:${httpPort}`);
      const tls = await bulk("pst", https, direct);
      runs.passt!.push({ downMbps: plain.down, upMbps: plain.up, tlsDownMbps: tls.down, tlsUpMbps: tls.up });
    });
    await session("off", async () => {
      const plain = await bulk("off", `http://host.microagent.internal:${httpPort}`);
      const tls = await bulk("off", https, direct);
      runs.off!.push({ downMbps: plain.down, upMbps: plain.up, tlsDownMbps: tls.down, tlsUpMbps: tls.up });
      addTtfb("direct", await ttfb("off", https, direct));
      addTtfb("directStore", await ttfb("off", https, resolve));
    });
    await session("mit", async () => {
      // curl trusts the workspace CA through CURL_CA_BUNDLE.
      const mitm = await bulk("mit", https);
      runs.mitm!.push({ downMbps: NaN, upMbps: NaN, tlsDownMbps: mitm.down, tlsUpMbps: mitm.up });
      addTtfb("mitm", await ttfb("mit", https, ""));
    });
    await session("pth", async () => {
      // Passthrough: the guest sees the server's own certificate, so it checks it against the upstream CA.
      const pass = await bulk("pth", `https://pass.test:${httpsPort}`, "--cacert /tmp/up.pem");
      runs.passthru!.push({ downMbps: NaN, upMbps: NaN, tlsDownMbps: pass.down, tlsUpMbps: pass.up });
      addTtfb("passthru", await ttfb("pth", `https://pass.test:${httpsPort}`, "--cacert /tmp/up.pem"));
      // MITM where curl reads the merged bundle (host roots + workspace CA) in every process.
      addTtfb("mitmBundle", await ttfb("pth", https, ""));
    });
  }

  const med = (k: string, f: keyof Result) => median(runs[k]!.map((r) => r[f]));
  const r = {
    mib: MIB,
    rounds: ROUNDS,
    conns: CONNS,
    passt: { downMbps: med("passt", "downMbps"), upMbps: med("passt", "upMbps"), tlsDownMbps: med("passt", "tlsDownMbps"), tlsUpMbps: med("passt", "tlsUpMbps") },
    off: { downMbps: med("off", "downMbps"), upMbps: med("off", "upMbps"), tlsDownMbps: med("off", "tlsDownMbps"), tlsUpMbps: med("off", "tlsUpMbps") },
    passthru: { tlsDownMbps: med("passthru", "tlsDownMbps"), tlsUpMbps: med("passthru", "tlsUpMbps") },
    mitm: { tlsDownMbps: med("mitm", "tlsDownMbps"), tlsUpMbps: med("mitm", "tlsUpMbps") },
    ttfbP50Ms: Object.fromEntries(Object.entries(ttfbs).map(([k, t]) => [k, { lookup: median(t.lookup), connect: median(t.connect), tls: median(t.tls), first: median(t.first) }])) as Record<"direct" | "directStore" | "passthru" | "mitm" | "mitmBundle", { lookup: number; connect: number; tls: number; first: number }>,
    loadavg1: load,
  };
  const ratios = {
    offOverPasstDown: r.off.downMbps / r.passt.downMbps,
    offOverPasstUp: r.off.upMbps / r.passt.upMbps,
    passthruOverPasstTcpDown: r.passthru.tlsDownMbps / r.passt.downMbps,
    passthruOverPasstTcpUp: r.passthru.tlsUpMbps / r.passt.upMbps,
    mitmOverPasstTcpDown: r.mitm.tlsDownMbps / r.passt.downMbps,
    mitmOverPasstTcpUp: r.mitm.tlsUpMbps / r.passt.upMbps,
    passthruOverPasstTlsDown: r.passthru.tlsDownMbps / r.passt.tlsDownMbps,
    passthruOverPasstTlsUp: r.passthru.tlsUpMbps / r.passt.tlsUpMbps,
    mitmOverPasstTlsDown: r.mitm.tlsDownMbps / r.passt.tlsDownMbps,
    mitmOverPasstTlsUp: r.mitm.tlsUpMbps / r.passt.tlsUpMbps,
    ttfbMitmOverDirect: r.ttfbP50Ms.mitm.first / r.ttfbP50Ms.direct.first,
    ttfbPassthruOverDirect: r.ttfbP50Ms.passthru.first / r.ttfbP50Ms.direct.first,
    ttfbMitmBundleOverDirectStore: r.ttfbP50Ms.mitmBundle.first / r.ttfbP50Ms.directStore.first,
  };
  const f = (x: number) => x.toFixed(0);
  const x = (v: number) => `${v.toFixed(2)}x`;
  console.log(`bulk ${MIB} MiB, single stream, Mbit/s (down / up), median of ${ROUNDS} round(s):`);
  console.log(`  passt     tcp ${f(r.passt.downMbps)} / ${f(r.passt.upMbps)}   tls ${f(r.passt.tlsDownMbps)} / ${f(r.passt.tlsUpMbps)}`);
  console.log(`  off       tcp ${f(r.off.downMbps)} / ${f(r.off.upMbps)}   tls ${f(r.off.tlsDownMbps)} / ${f(r.off.tlsUpMbps)}   (tcp ${x(ratios.offOverPasstDown)} / ${x(ratios.offOverPasstUp)} passt)`);
  console.log(`  passthru  tls ${f(r.passthru.tlsDownMbps)} / ${f(r.passthru.tlsUpMbps)}   ${x(ratios.passthruOverPasstTcpDown)} / ${x(ratios.passthruOverPasstTcpUp)} passt tcp (goal >= 0.5x), ${x(ratios.passthruOverPasstTlsDown)} / ${x(ratios.passthruOverPasstTlsUp)} passt tls`);
  console.log(`  mitm      tls ${f(r.mitm.tlsDownMbps)} / ${f(r.mitm.tlsUpMbps)}   ${x(ratios.mitmOverPasstTcpDown)} / ${x(ratios.mitmOverPasstTcpUp)} passt tcp (goal >= 0.4x), ${x(ratios.mitmOverPasstTlsDown)} / ${x(ratios.mitmOverPasstTlsUp)} passt tls`);
  console.log(`new HTTPS connection, p50 of ${CONNS} curls in the guest, ms (name looked up / tcp connected / tls done / first byte):`);
  const t = (k: keyof typeof r.ttfbP50Ms) => `${r.ttfbP50Ms[k].lookup.toFixed(1)} / ${r.ttfbP50Ms[k].connect.toFixed(1)} / ${r.ttfbP50Ms[k].tls.toFixed(1)} / ${r.ttfbP50Ms[k].first.toFixed(1)}`;
  console.log(`  direct (off), one CA file          ${t("direct")}`);
  console.log(`  direct (off), the image's store     ${t("directStore")}`);
  console.log(`  mitm (guarded), workspace CA only   ${t("mitm")}   ${x(ratios.ttfbMitmOverDirect)} direct one CA (goal <= 2.5x)`);
  console.log(`  mitm, merged bundle (passthrough)   ${t("mitmBundle")}   ${x(ratios.ttfbMitmBundleOverDirectStore)} direct image store`);
  console.log(`  passthrough                         ${t("passthru")}   ${x(ratios.ttfbPassthruOverDirect)} direct one CA`);
  console.log(`load average (1 min) after each workspace: ${load.map((l) => l.toFixed(2)).join(" ")}`);
  console.log(JSON.stringify({ ...r, ratios }));
} finally {
  delete process.env.MICROAGENT_NET_DATAPATH;
  for (const w of ["pst", "off", "mit", "pth"]) await runCli(["--state-dir", fx.stateDir, "kill", w]).catch(() => {});
  for (const s of servers) s.close();
  await toolsCleanup();
  await fx.cleanup();
  rmSync(certDir, { recursive: true, force: true });
}
