/**
 * Hostile-guest cases of research (e) on real VMs (docs/egress-hostile-cases.md maps every case to
 * its tests): a strict and a guarded workspace, each running several cases per boot with curl,
 * python3, openssl and busybox in the guest. Upstreams are servers of this test on 127.0.0.1 (A,
 * HTTPS, names secure.test/dns.test) and 127.0.0.2 (B, HTTPS for evil.test, plus a plain HTTP
 * server), with their own CA handed to the mediator via --egress-upstream-ca; the guest dials
 * public-looking addresses and MICROAGENT_TEST_EGRESS_ROUTES makes the mediator dial them on
 * loopback. Every case asserts what the guest sees and the audit record read back with
 * `microagent egress`. Loopback only: every other address the guest tries is refused by policy
 * before anything is dialled.
 */
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { execFileSync } from "node:child_process";
import { createSocket, type Socket as UdpSocket } from "node:dgram";
import dnsPacket from "dns-packet";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer as createHttpsServer, type Server as HttpsServer } from "node:https";
import { createServer as createHttpServer } from "node:http";
import { createSecureServer, type Http2ServerRequest, type Http2ServerResponse } from "node:http2";
import { createServer, type AddressInfo, type Server, type Socket } from "node:net";
import { join } from "node:path";
import { tmpdir } from "node:os";
import { workspaceFixture, type WorkspaceFixture } from "../helpers/workspace.ts";
import { awaitRecord as awaitRecordIn, awaitCount as awaitCountIn, readAudit } from "../helpers/egress-audit.ts";
import { runCli } from "../helpers/cli.ts";
import { pushImage } from "../helpers/oci-image.ts";
import { buildToolsImage } from "../helpers/tools-image.ts";

const A_IP = "93.184.216.34";
const EVIL_IP = "93.184.216.66";

let fx: WorkspaceFixture;
let imageRef: string;
let toolsCleanup: () => Promise<void> = async () => {};
let certDir: string;
let caFile: string;
const servers: Array<Server | HttpsServer> = [];
const udpSockets: UdpSocket[] = [];
/** `host url` of each request per server; TCP connections accepted per server. */
const seen = { a: [] as string[], b: [] as string[], plain: [] as string[] };
const conns = { a: 0, b: 0, plain: 0 };
/** Sockets of /stream requests that closed (case 34). */
let streamsOpen = 0;
let streamsClosed = 0;
let portA = 0;
let portB = 0;
let plainPort = 0;
let dnsPort = 0;

async function cli(...args: string[]) {
  const r = await runCli(["--state-dir", fx.stateDir, ...args]);
  return { code: r.code, stdout: r.out, stderr: r.err };
}

async function sh(name: string, script: string) {
  return cli("exec", name, "--timeout", "300s", "--", "sh", "-c", script);
}

interface Rec {
  type: string;
  decision: string;
  dst: string | null;
  name: string | null;
  sni?: string | null;
  hostAsserted?: string | null;
  signal: string | null;
  reason: string;
  mitm?: boolean;
  bytesUp?: number;
  count?: number;
  answers?: string[];
}

const audit = (name: string) => readAudit<Rec>(fx.stateDir, name);
const awaitRecord = (name: string, want: (r: Rec) => boolean, what: string) => awaitRecordIn<Rec>(fx.stateDir, name, want, what);
const awaitCount = (name: string, want: (r: Rec) => boolean, n: number, what: string) => awaitCountIn<Rec>(fx.stateDir, name, want, n, what);

async function until(what: string, ok: () => boolean, ms = 20_000): Promise<void> {
  const end = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > end) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function openssl(args: string[]): void {
  execFileSync("openssl", args, { cwd: certDir, stdio: ["ignore", "ignore", "pipe"] });
}

function listenOn(s: Server | HttpsServer, host: string): Promise<number> {
  servers.push(s);
  return new Promise((r) => s.listen(0, host, () => r((s.address() as AddressInfo).port)));
}

before(async () => {
  certDir = mkdtempSync(join(tmpdir(), "egress-hostile-certs-"));
  openssl(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=Test Upstream CA"]);
  for (const [which, names] of [["a", "secure.test,DNS:dns.test"], ["b", "evil.test"]] as const) {
    openssl(["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", `${which}.key`, "-out", `${which}.csr`, "-subj", `/CN=server ${which}`]);
    writeFileSync(join(certDir, `${which}.cnf`), `subjectAltName=DNS:${names}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n`);
    openssl(["x509", "-req", "-in", `${which}.csr`, "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", `${which}.pem`, "-days", "2", "-extfile", `${which}.cnf`]);
  }
  caFile = join(certDir, "ca.pem");
  const tlsOf = (w: string) => ({ key: readFileSync(join(certDir, `${w}.key`)), cert: readFileSync(join(certDir, `${w}.pem`)) });
  // Server A speaks h2 and HTTP/1.1 (the mediator mirrors what the upstream negotiates to the guest).
  const A = createSecureServer({ ...tlsOf("a"), allowHTTP1: true }, (req: Http2ServerRequest, res: Http2ServerResponse) => {
    const host = req.headers.host ?? req.headers[":authority"];
    seen.a.push(`${host} ${req.url}`);
    if (req.url === "/stream") {
      streamsOpen++;
      res.writeHead(200, { "content-type": "text/plain" });
      const t = setInterval(() => res.write("tick\n"), 200);
      res.once("close", () => {
        clearInterval(t);
        streamsClosed++;
      });
      return;
    }
    let n = 0;
    const h = createHash("sha256");
    req.on("data", (d: Buffer) => {
      n += d.length;
      h.update(d);
    });
    req.on("end", () => res.end(`hello from a: ${host} ${req.url} got=${n} sha=${h.digest("hex")}\n`));
  });
  A.on("connection", () => conns.a++);
  portA = await listenOn(A as unknown as Server, "127.0.0.1");
  const B = createHttpsServer(tlsOf("b"), (req, res) => {
    seen.b.push(`${req.headers.host} ${req.url}`);
    res.end("hello from b\n");
  });
  B.on("connection", () => conns.b++);
  portB = await listenOn(B, "127.0.0.2");
  const P = createHttpServer((req, res) => {
    seen.plain.push(`${req.headers.host} ${req.url}`);
    res.end(`plain: ${req.headers.host} ${req.url}\n`);
  });
  P.on("connection", () => conns.plain++);
  plainPort = await listenOn(P, "127.0.0.2");
  const dns = createSocket("udp4");
  dns.on("message", (m, rinfo) => {
    const q = dnsPacket.decode(m);
    const question = q.questions?.[0];
    if (!question) return;
    const hit = question.name.toLowerCase() === "dns.test" && question.type === "A";
    dns.send(
      dnsPacket.encode({ id: q.id, type: "response", flags: dnsPacket.RECURSION_DESIRED | dnsPacket.RECURSION_AVAILABLE, questions: [question], answers: hit ? [{ name: question.name, type: "A", class: "IN", ttl: 60, data: A_IP }] : [] }),
      rinfo.port,
      rinfo.address,
    );
  });
  dnsPort = await new Promise<number>((r) => dns.bind(0, "127.0.0.1", () => r(dns.address().port)));
  udpSockets.push(dns);
  process.env.MICROAGENT_TEST_EGRESS_ROUTES = `${A_IP}=127.0.0.1,${EVIL_IP}=127.0.0.2`;
  fx = await workspaceFixture("egress-hostile");
  const tools = await buildToolsImage();
  toolsCleanup = () => tools.cleanup();
  imageRef = (await pushImage(tools, fx.registry, "egress-hostile/tools:1")).ref;
  process.env.MICROAGENT_INSECURE_REGISTRIES = fx.registry.host;
  process.env.MICROAGENT_KERNEL_CACHE ??= join(tmpdir(), "microagent-test-kernel-cache");
});

after(async () => {
  for (const s of servers) {
    (s as HttpsServer).closeAllConnections?.();
    s.close();
  }
  for (const u of udpSockets) u.close();
  await toolsCleanup();
  await fx?.cleanup();
  rmSync(certDir, { recursive: true, force: true });
});

test("egress-hostile strict: a forged SNI to another allowed name's address is reset after the ClientHello (case 1); a forged Host over plain HTTP is reset (case 3); nothing reaches the upstream", { timeout: 600_000 }, async () => {
  const name = "hs";
  const created = await cli(
    "create", name, "--image", imageRef, "--profile", "tiny", "--egress", "strict", "--egress-allow", "secure.test", "--egress-allow", "evil.test",
    "--add-host", `secure.test:${A_IP}`, "--add-host", `evil.test:${EVIL_IP}`, "--dns", `127.0.0.1:${dnsPort}`, "--egress-upstream-ca", caFile,
  );
  assert.equal(created.code, 0, created.stderr);
  try {
    const started = await cli("start", name);
    assert.equal(started.code, 0, started.stdout + started.stderr);
    const before = { ...conns };
    // Case 1: SNI secure.test (allowed) sent to EVIL_IP, which was resolved for evil.test only.
    const c1 = await sh(name, `curl -sS -m 20 --resolve secure.test:${portB}:${EVIL_IP} https://secure.test:${portB}/case1 2>&1; echo rc=$?`);
    assert.match(c1.stdout, /rc=(35|56)\n/, `a reset during the TLS handshake: ${c1.stdout}`);
    // Case 3 (strict): plain HTTP claiming Host: secure.test at EVIL_IP.
    const c3 = await sh(name, `curl -sS -m 20 -H 'Host: secure.test' http://${EVIL_IP}:${plainPort}/case3 2>&1; echo rc=$?`);
    assert.match(c3.stdout, /rc=(52|56)\n/, `reset before any response: ${c3.stdout}`);
    assert.doesNotMatch(c3.stdout, /plain:/);
    // The control: the allowed name at its own address works.
    const ok = await sh(name, `curl -sS --fail -m 60 https://evil.test:${portB}/ok`);
    assert.equal(ok.stdout, "hello from b\n", ok.stderr);
    assert.equal(conns.b - before.b, 1, "no upstream dial for the forged SNI (only the control connected)");
    assert.equal(conns.plain - before.plain, 0, "no upstream dial for the forged Host");
    assert.deepEqual(seen.b, ["evil.test:" + portB + " /ok"]);

    const d1 = await awaitRecord(name, (r) => r.type === "egress_deny" && r.dst === `${EVIL_IP}:${portB}` && r.hostAsserted === "secure.test", "the forged SNI");
    assert.equal(d1.signal, "name-destination-mismatch");
    assert.equal(d1.name, null, "never audited as secure.test");
    const d3 = await awaitRecord(name, (r) => r.type === "egress_deny" && r.dst === `${EVIL_IP}:${plainPort}` && r.hostAsserted === "secure.test", "the forged Host");
    assert.equal(d3.signal, "name-destination-mismatch");
    assert.equal(d3.name, null);
  } finally {
    await cli("kill", name);
    await cli("delete", name, "--force");
  }
});

const PY_RAW = String.raw`
import socket, ssl, sys
host, port = sys.argv[1], int(sys.argv[2])
ctx = ssl.create_default_context()
def send(raw):
    s = ctx.wrap_socket(socket.create_connection((host, port), timeout=30), server_hostname=host)
    s.sendall(raw)
    out = b""
    try:
        while len(out) < 200:
            d = s.recv(4096)
            if not d: break
            out += d
    except Exception as e:
        out += repr(e).encode()
    s.close()
    return out.split(b"\r\n")[0].decode(errors="replace")
H = "Host: " + host + ":" + str(port) + "\r\n"
cases = {
  "big-head": "GET /big HTTP/1.1\r\n" + H + "X-Big: " + "a" * 20000 + "\r\n\r\n",
  "many-headers": "GET /many HTTP/1.1\r\n" + H + "".join("X-H%d: v\r\n" % i for i in range(300)) + "\r\n",
  "cl-te": "POST /clte HTTP/1.1\r\n" + H + "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
  "te-obfuscated": "POST /teobf HTTP/1.1\r\n" + H + "Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
  "h2c": "GET /h2c HTTP/1.1\r\n" + H + "Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\nConnection: Upgrade, HTTP2-Settings\r\n\r\n",
  "connect": "CONNECT secure.test:443 HTTP/1.1\r\n" + H + "\r\n",
  "bad-chunk": "POST /badchunk HTTP/1.1\r\n" + H + "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
}
for k, v in cases.items():
    print(k, send(v.encode()))
`;

const PY_TCP_DNS = String.raw`
import socket, struct, sys
q = struct.pack(">HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0) + b"".join(bytes([len(p)]) + p.encode() for p in sys.argv[2].split(".")) + b"\x00" + struct.pack(">HH", 1, 1)
s = socket.create_connection((sys.argv[1], 53), timeout=10)
s.sendall(struct.pack(">H", len(q)) + q)
n = struct.unpack(">H", s.recv(2))[0]
r = b""
while len(r) < n: r += s.recv(n - len(r))
an = struct.unpack(">H", r[6:8])[0]
print("rcode", r[3] & 15, "answers", an, "addr", ".".join(str(b) for b in r[-4:]) if an else "-")
`;

test("egress-hostile guarded: forged Host (3), DoH (6), dig +tcp (8), literal spellings (12), QUIC ICMP (13), parser limits (27), 20 MB POST and parallel flows (28), a -12 h clock (29), then quarantine with open flows (34)", { timeout: 900_000 }, async () => {
  const name = "hg";
  const held = new Set<Socket>();
  let mediationClosed = 0;
  const listener = createServer((c) => {
    held.add(c);
    c.on("error", () => {});
    c.on("close", () => mediationClosed++);
    c.write("mediated\n");
  });
  const mediationPort = await listenOn(listener, "127.0.0.1");
  const created = await cli(
    "create", name, "--image", imageRef, "--profile", "tiny",
    "--add-host", `secure.test:${A_IP}`, "--add-host", `evil.test:${EVIL_IP}`, "--dns", `127.0.0.1:${dnsPort}`,
    "--egress-upstream-ca", caFile, "--mediation", `7000=127.0.0.1:${mediationPort}`,
  );
  assert.equal(created.code, 0, created.stderr);
  try {
    const started = await cli("start", name);
    assert.equal(started.code, 0, started.stdout + started.stderr);

    // Case 3 (guarded): the forged Host goes through as an unnamed flow, flagged.
    const c3 = await sh(name, `curl -sS --fail -m 30 -H 'Host: secure.test' http://${EVIL_IP}:${plainPort}/case3`);
    assert.equal(c3.stdout, `plain: secure.test /case3\n`, c3.stderr);
    const a3 = await awaitRecord(name, (r) => r.type === "egress_allow" && r.dst === `${EVIL_IP}:${plainPort}`, "the forged Host");
    assert.equal(a3.name, null, "never audited as secure.test");
    assert.equal(a3.hostAsserted, "secure.test");
    assert.equal(a3.signal, "name-destination-mismatch");

    // Case 6: DoH through the interception, by hand and by curl's own --doh-url.
    const doh = await sh(
      name,
      [
        `printf '\\x12\\x34\\x01\\x00\\x00\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x03dns\\x04test\\x00\\x00\\x01\\x00\\x01' > /tmp/q.bin`,
        `curl -sS -m 30 -o /dev/null -w 'post=%{http_code}\\n' -H 'content-type: application/dns-message' --data-binary @/tmp/q.bin https://secure.test:${portA}/dns-query`,
        `curl -sS -m 30 -o /dev/null -w 'get=%{http_code}\\n' -H 'accept: application/dns-message' "https://secure.test:${portA}/dns-query?dns=EjQBAAABAAAAAAAAA2RucwR0ZXN0AAABAAE"`,
        `curl -sS -m 30 --doh-url https://secure.test:${portA}/dns-query https://dns.test:${portA}/via-doh 2>&1; echo doh-url=$?`,
      ].join("; "),
    );
    assert.match(doh.stdout, /^post=403$/m, doh.stdout + doh.stderr);
    assert.match(doh.stdout, /^get=403$/m, doh.stdout);
    assert.doesNotMatch(doh.stdout, /doh-url=0\n|hello from/, "curl could not resolve through DoH");
    assert.ok(!seen.a.some((s) => s.includes("dns-query") || s.includes("/via-doh")), `no DoH request reached the upstream: ${seen.a.join(" ")}`);
    const dohRecs = await awaitCount(name, (r) => r.type === "egress_deny" && r.signal === "dns-over-https", 3, "DoH requests (POST, GET, curl --doh-url)");
    assert.ok(dohRecs.every((r) => r.name === "secure.test"));

    // Case 8: dig +tcp @192.0.2.53 (a foreign resolver, over TCP): answered by the mediator.
    const tcpDns = await sh(name, `cat > /tmp/tcpdns.py <<'EOF'\n${PY_TCP_DNS}\nEOF\npython3 /tmp/tcpdns.py 192.0.2.53 dns.test`);
    assert.equal(tcpDns.stdout, `rcode 0 answers 1 addr ${A_IP}\n`, tcpDns.stderr);
    const f8 = await awaitRecord(name, (r) => r.type === "egress_dns_allow" && r.name === "dns.test" && r.signal === "foreign-resolver" && r.dst === "192.0.2.53:53", "the TCP query to a foreign resolver");
    assert.deepEqual(f8.answers, [A_IP]);

    // Case 12: the metadata address in the spellings libc accepts, inside ranges, and the gateway's unpublished ports.
    const inside = await sh(
      name,
      ["http://2852039166/", "http://0251.0376.0251.0376/", "http://0xa9.0xfe.0xa9.0xfe/", "http://169.254.43518/", "http://10.0.0.5/", "http://100.64.0.1/", `http://10.200.0.1:${portA}/`]
        .map((u) => `curl -sS -m 10 -o /dev/null ${u} 2>/dev/null; echo "${u} rc=$?"`)
        .join("; "),
    );
    const rcs = inside.stdout.trim().split("\n");
    assert.equal(rcs.length, 7, inside.stdout);
    for (const l of rcs) assert.match(l, / rc=7$/, `refused at once (RST): ${l}`);
    const meta = await awaitCount(name, (r) => r.type === "egress_deny" && r.dst === "169.254.169.254:80", 4, "refusals of four spellings of 169.254.169.254");
    assert.ok(meta.every((r) => r.signal === "inside-destination" && r.name === null));
    for (const dst of ["10.0.0.5:80", "100.64.0.1:80", `10.200.0.1:${portA}`]) await awaitRecord(name, (r) => r.type === "egress_deny" && r.dst === dst, dst);

    // Case 13: a QUIC datagram gets an ICMP unreachable the guest's connected socket sees as a refusal.
    const quic = await sh(name, `python3 -c "
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(5); s.connect(('192.0.2.1', 443)); s.send(b'junk quic initial')
try:
    s.recv(100); print('answered')
except ConnectionRefusedError: print('icmp-refused')
except socket.timeout: print('timeout')
"`);
    assert.equal(quic.stdout, "icmp-refused\n", quic.stderr);
    await awaitRecord(name, (r) => r.type === "egress_udp_deny" && r.dst === "192.0.2.1:443" && r.signal === "quic-udp443", "QUIC");

    // Case 27: parser limits under interception.
    const raw = await sh(name, `cat > /tmp/raw.py <<'EOF'\n${PY_RAW}\nEOF\npython3 /tmp/raw.py secure.test ${portA}`);
    assert.equal(raw.code, 0, raw.stderr);
    const status = Object.fromEntries(raw.stdout.trim().split("\n").map((l) => [l.split(" ")[0], l.slice(l.indexOf(" ") + 1)]));
    assert.match(status["big-head"]!, /^HTTP\/1\.1 431/, raw.stdout);
    assert.match(status["many-headers"]!, /^HTTP\/1\.1 (431|400)/, raw.stdout);
    assert.match(status["cl-te"]!, /^HTTP\/1\.1 400/, raw.stdout);
    assert.match(status["te-obfuscated"]!, /^HTTP\/1\.1 501/, raw.stdout);
    assert.match(status["h2c"]!, /^HTTP\/1\.1 400/, raw.stdout);
    assert.match(status["connect"]!, /^HTTP\/1\.1 (400|405)/, raw.stdout);
    assert.match(status["bad-chunk"]!, /^HTTP\/1\.1 400/, raw.stdout);
    assert.ok(!seen.a.some((s) => /\/(big|many|clte|teobf|h2c)$/.test(s)), `no refused request reached the upstream: ${seen.a.join(" ")}`);
    await awaitCount(name, (r) => r.type === "egress_deny" && r.signal === "malformed" && r.dst === `${A_IP}:${portA}`, 5, "parser refusals");
    // h2 under interception: the mediator offers the guest http/1.1 only (the protocol it inspects),
    // even though server A speaks h2, so curl --http2 falls back and :authority fronting cannot be
    // sent; the Host fronting is refused as over HTTP/1.1 (case 4).
    const h2 = await sh(name, `curl -sS -m 30 --http2 -o /dev/null -w '%{http_code} %{http_version}' -H 'Host: evil.test' https://secure.test:${portA}/h2front; echo; curl -sS -m 30 --http2 -w ' %{http_version}' https://secure.test:${portA}/h2ok`);
    assert.match(h2.stdout, /^421 1\.1\n/, h2.stdout + h2.stderr);
    assert.match(h2.stdout, /\/h2ok got=0 sha=\w+\n 1\.1$/, "an ordinary request goes through, as HTTP/1.1");
    await awaitRecord(name, (r) => r.type === "egress_deny" && r.signal === "domain-fronting" && r.hostAsserted === "evil.test", "the Host fronting under --http2");

    // Case 28: a 20 MiB POST byte-exact, and 8 parallel intercepted connections.
    const big = await sh(name, `head -c 20971520 /dev/urandom > /tmp/big && sha256sum /tmp/big | cut -d' ' -f1 && curl -sS --fail -m 240 --data-binary @/tmp/big https://secure.test:${portA}/big-post`);
    assert.equal(big.code, 0, big.stderr);
    const [sha, reply] = big.stdout.split("\n");
    assert.equal(reply, `hello from a: secure.test:${portA} /big-post got=20971520 sha=${sha}`);
    const par = await sh(name, `for i in 1 2 3 4 5 6 7 8; do curl -sS --fail -m 120 https://secure.test:${portA}/par$i > /tmp/par$i & done; wait; cat /tmp/par1 /tmp/par2 /tmp/par3 /tmp/par4 /tmp/par5 /tmp/par6 /tmp/par7 /tmp/par8`);
    for (let i = 1; i <= 8; i++) assert.match(par.stdout, new RegExp(`/par${i} got=0`), par.stdout + par.stderr);
    const closeBig = await awaitRecord(name, (r) => r.type === "egress_close" && r.name === "secure.test" && (r.bytesUp ?? 0) >= 20971520, "the 20 MiB flow's close");
    assert.equal(closeBig.mitm, true);

    // Case 29: the guest's clock 12 h behind: the leaf (backdated) still verifies.
    const skew = await sh(name, `python3 -c "import time; time.clock_settime(time.CLOCK_REALTIME, time.time() - 43200)" && date -u +%s && curl -sS --fail -m 60 https://secure.test:${portA}/skewed && openssl s_client -connect secure.test:${portA} -servername secure.test -verify_return_error </dev/null 2>&1 | grep 'Verify return code'; python3 -c "import time; time.clock_settime(time.CLOCK_REALTIME, time.time() + 43200)"`);
    assert.equal(skew.code, 0, skew.stdout + skew.stderr);
    const guestNow = Number(skew.stdout.split("\n")[0]);
    assert.ok(Date.now() / 1000 - guestNow > 11 * 3600, `the guest clock was set back: ${guestNow}`);
    assert.match(skew.stdout, /hello from a: secure\.test:\d+ \/skewed/);
    assert.match(skew.stdout, /Verify return code: 0 \(ok\)/);

    // Case 34: quarantine with a mediation-channel flow and an intercepted download open.
    const bg = await sh(name, `setsid sh -c 'sleep 600 | nc mediation.microagent.internal 7000 > /tmp/med.out' </dev/null >/dev/null 2>&1 & setsid sh -c 'curl -sS -N -m 600 https://secure.test:${portA}/stream > /tmp/stream.out' </dev/null >/dev/null 2>&1 & echo started`);
    assert.equal(bg.stdout, "started\n", bg.stderr);
    await until("both long flows open on the host", () => held.size >= 1 && streamsOpen >= 1);
    const mediationBefore = mediationClosed;
    const t0 = Date.now();
    const q = await cli("quarantine", name);
    assert.equal(q.code, 0, q.stdout + q.stderr);
    await until("the flows cut on the host side", () => mediationClosed > mediationBefore && streamsClosed >= 1, 5000);
    const cutMs = Date.now() - t0;
    const after = await sh(name, "echo hi");
    assert.notEqual(after.code, 0, "the guest is cut off");
    assert.match(after.stdout + after.stderr, /quarantin/i);
    const recs = await audit(name);
    const closes = recs.filter((r) => r.type === "egress_close" && /severed/.test(r.reason));
    assert.ok(closes.some((r) => r.name === "mediation.microagent.internal"), JSON.stringify(recs.slice(-6)));
    assert.ok(closes.some((r) => r.name === "secure.test"), JSON.stringify(recs.slice(-6)));
    console.log(`# egress-hostile: quarantine cut both flows within ${cutMs} ms (incl. the CLI)`);
  } finally {
    for (const c of held) c.destroy();
    await cli("kill", name);
    await cli("delete", name, "--force");
  }
});
