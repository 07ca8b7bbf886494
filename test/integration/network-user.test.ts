/**
 * `user` networking end to end on real VMs: curl, python3 urllib and busybox nc/httpd/wget in the guest against servers
 * this test runs on 127.0.0.1, reached through host.microagent.internal (allowed port by port with
 * --egress-allow), and a host client against a port the guest publishes. One `user` workspace carries
 * most checks; one `isolated` boot shows there is no NIC. Loopback only: the inside addresses the guest
 * dials are denied by the policy before anything is dialled.
 */
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { createServer as createHttpServer, get as httpGet } from "node:http";
import { createServer, connect, type AddressInfo, type Server } from "node:net";
import { join } from "node:path";
import { tmpdir } from "node:os";
import { workspaceFixture, type WorkspaceFixture } from "../helpers/workspace.ts";
import { runCli } from "../helpers/cli.ts";
import { pushImage } from "../helpers/oci-image.ts";
import { buildToolsImage } from "../helpers/tools-image.ts";

let fx: WorkspaceFixture;
let imageRef: string;
let toolsCleanup: () => Promise<void> = async () => {};
const servers: Server[] = [];

async function cli(...args: string[]) {
  const r = await runCli(["--state-dir", fx.stateDir, ...args]);
  return { code: r.code, stdout: r.out, stderr: r.err };
}

async function sh(name: string, script: string) {
  return cli("exec", name, "--timeout", "300s", "--", "sh", "-c", script);
}

function listen(server: Server): Promise<number> {
  servers.push(server);
  return new Promise((r) => server.listen(0, "127.0.0.1", () => r((server.address() as AddressInfo).port)));
}

/** A free loopback port (listened on and closed again). */
async function freePort(): Promise<number> {
  const s = createServer();
  const p = await new Promise<number>((r) => s.listen(0, "127.0.0.1", () => r((s.address() as AddressInfo).port)));
  await new Promise((r) => s.close(r));
  return p;
}

const BIG = 64 << 20;
/** The 64 MiB download: a position-dependent pattern, so reordering or loss changes the hash. */
function bigChunk(offset: number, len: number): Buffer {
  const b = Buffer.alloc(len);
  for (let i = 0; i < len; i += 4) b.writeUInt32LE(((offset + i) * 2654435761) >>> 0, i);
  return b;
}

before(async () => {
  fx = await workspaceFixture("network");
  const tools = await buildToolsImage({ files: { "/www/index.html": "published from the guest\n" } });
  toolsCleanup = () => tools.cleanup();
  imageRef = (await pushImage(tools, fx.registry, "network/tools:1")).ref;
  process.env.MICROAGENT_INSECURE_REGISTRIES = fx.registry.host;
  process.env.MICROAGENT_KERNEL_CACHE ??= join(tmpdir(), "microagent-test-kernel-cache");
});

after(async () => {
  for (const s of servers) s.close();
  await toolsCleanup();
  await fx.cleanup();
});

test("network user: addressing, 64 MiB each way byte-exact, 50 parallel connections, published port, denied destinations, quarantine", { timeout: 900_000 }, async () => {
  let bigHash = "";
  {
    const h = createHash("sha256");
    for (let off = 0; off < BIG; off += 1 << 20) h.update(bigChunk(off, 1 << 20));
    bigHash = h.digest("hex");
  }
  let concurrent = 0;
  let maxConcurrent = 0;
  const held: (() => void)[] = [];
  const http = createHttpServer((req, res) => {
    concurrent++;
    maxConcurrent = Math.max(maxConcurrent, concurrent);
    res.on("close", () => concurrent--);
    if (req.url === "/big") {
      res.writeHead(200, { "content-length": BIG });
      let off = 0;
      const pump = () => {
        while (off < BIG) {
          const ok = res.write(bigChunk(off, 1 << 20));
          off += 1 << 20;
          if (!ok) return void res.once("drain", pump);
        }
        res.end();
      };
      pump();
      return;
    }
    // Held until all 50 are open at once (or 60 s), so the test proves 50 concurrent flows.
    held.push(() => res.end(`small ${req.url}\n`));
    if (held.length >= 50) for (const r of held.splice(0)) r();
    else setTimeout(() => held.splice(0).forEach((r) => r()), 60_000).unref();
  });
  const httpPort = await listen(http as unknown as Server);
  // The upload sink: hashes what the guest sends and closes once it has it all (busybox nc does not half-close).
  const uploads: { bytes: number; hash: string }[] = [];
  const expectUploadBytes = BIG;
  const sink = createServer((s) => {
    const h = createHash("sha256");
    let n = 0;
    s.on("data", (d: Buffer) => {
      h.update(d);
      n += d.length;
      if (n >= expectUploadBytes) {
        uploads.push({ bytes: n, hash: h.digest("hex") });
        s.end();
      }
    });
    s.on("error", () => {});
  });
  const sinkPort = await listen(sink);
  // A host port nobody allowed: the guest must never reach it.
  let forbiddenHits = 0;
  const forbidden = createServer((s) => {
    forbiddenHits++;
    s.destroy();
  });
  const forbiddenPort = await listen(forbidden);
  const publishPort = await freePort();

  const name = "net";
  const created = await cli(
    "create", name, "--image", imageRef, "--profile", "tiny",
    "--egress-allow", `host.microagent.internal:${httpPort}`,
    "--egress-allow", `host.microagent.internal:${sinkPort}`,
    "--add-host", "db.test:10.99.0.7",
    "-p", `${publishPort}:8080`,
  );
  assert.equal(created.code, 0, created.stderr);
  try {
    const started = await cli("start", name);
    assert.equal(started.code, 0, started.stdout + started.stderr);

    // Addressing and the per-boot files (bind mounts over the image's).
    const ip = await sh(name, "ip -4 addr show eth0; ip route; cat /sys/class/net/eth0/mtu; cat /etc/resolv.conf; cat /etc/hosts; grep -c ' /etc/hosts ' /proc/self/mountinfo");
    assert.equal(ip.code, 0, ip.stderr);
    assert.match(ip.stdout, /inet 10\.200\.0\.2\/24/);
    assert.match(ip.stdout, /default via 10\.200\.0\.1 dev eth0/);
    assert.match(ip.stdout, /^65520$/m);
    assert.match(ip.stdout, /^nameserver 10\.200\.0\.1$/m);
    assert.match(ip.stdout, /^10\.200\.0\.1\thost\.microagent\.internal$/m);
    assert.match(ip.stdout, /^10\.99\.0\.7\tdb\.test$/m);
    assert.match(ip.stdout, /^1$/m, "/etc/hosts is a bind mount");
    // The stack's DNS answers host.microagent.internal (nslookup asks the server, not /etc/hosts).
    const ns = await sh(name, "nslookup host.microagent.internal 10.200.0.1");
    assert.match(ns.stdout, /10\.200\.0\.1/, ns.stdout + ns.stderr);

    // 64 MiB host -> guest, hashed in the guest.
    let t0 = performance.now();
    const down = await sh(name, `curl -sS --fail -o /tmp/big http://host.microagent.internal:${httpPort}/big && sha256sum /tmp/big`);
    const downMs = performance.now() - t0;
    assert.equal(down.code, 0, down.stderr);
    assert.equal(down.stdout.split(/\s/)[0], bigHash, "download byte-exact");
    // The same 64 MiB guest -> host, hashed on the host.
    t0 = performance.now();
    const up = await cli("exec", name, "--timeout", "180s", "--", "sh", "-c", `nc host.microagent.internal ${sinkPort} < /tmp/big; rm /tmp/big`);
    const upMs = performance.now() - t0;
    assert.equal(uploads.length, 1, `the sink got the upload (nc: ${up.code} ${up.stderr})`);
    assert.equal(uploads[0]!.bytes, expectUploadBytes);
    assert.equal(uploads[0]!.hash, bigHash, "upload byte-exact");
    console.log(`# download 64 MiB in ${downMs.toFixed(0)} ms, upload ${(expectUploadBytes / 1048576).toFixed(0)} MiB in ${upMs.toFixed(0)} ms`);

    // python3's urllib (a second real client) through the stack's DNS: the same 64 MiB, hashed in the guest.
    const py = await sh(name, `python3 -c "import hashlib,urllib.request as u; r=u.urlopen('http://host.microagent.internal:${httpPort}/big', timeout=120); h=hashlib.sha256(); [h.update(b) for b in iter(lambda: r.read(1<<20), b'')]; print(h.hexdigest())"`);
    assert.equal(py.code, 0, py.stderr);
    assert.equal(py.stdout.trim(), bigHash, "python urllib download byte-exact");

    // 50 parallel connections.
    const par = await sh(name, `for i in $(seq 1 50); do wget -q -O /tmp/p$i http://host.microagent.internal:${httpPort}/s$i & done; wait; cat /tmp/p* | sort | uniq | wc -l`);
    assert.equal(par.code, 0, par.stderr);
    assert.equal(par.stdout.trim(), "50");
    assert.equal(maxConcurrent, 50, "all 50 connections were open at once");

    // Denied: an inside address (RFC 1918) fails fast, and a host port nobody allowed is never reached.
    t0 = performance.now();
    const inside = await sh(name, "nc -w 10 192.168.77.1 80 </dev/null 2>&1; echo rc=$?");
    const insideMs = performance.now() - t0;
    assert.match(inside.stdout, /rc=1/);
    assert.match(inside.stdout, /refused/i, inside.stdout);
    assert.ok(insideMs < 5000, `an inside destination fails fast (${insideMs.toFixed(0)} ms, exec included)`);
    const denied = await sh(name, `nc -w 10 host.microagent.internal ${forbiddenPort} </dev/null 2>&1; echo rc=$?`);
    assert.match(denied.stdout, /refused/i, denied.stdout);
    assert.match(denied.stdout, /rc=1/);
    assert.equal(forbiddenHits, 0, "a host port not allowed is never dialled");

    // A published port: busybox httpd in the guest, a host client on 127.0.0.1.
    const httpd = await sh(name, "httpd -p 8080 -h /www && echo started");
    assert.match(httpd.stdout, /started/, httpd.stderr);
    const body = await new Promise<string>((resolve, reject) => {
      httpGet({ host: "127.0.0.1", port: publishPort, path: "/index.html", timeout: 20_000 }, (res) => {
        let b = "";
        res.on("data", (d) => (b += d));
        res.on("end", () => resolve(b));
      }).on("error", reject);
    });
    assert.equal(body, "published from the guest\n");

    // microagent network: live facts and counters.
    const net = await cli("--json", "network", name);
    assert.equal(net.code, 0, net.stderr);
    const n = JSON.parse(net.stdout);
    assert.equal(n.mode, "user");
    assert.equal(n.datapath, "userspace-stack");
    assert.equal(n.address, "10.200.0.2");
    assert.equal(n.prefix, 24);
    assert.equal(n.gateway, "10.200.0.1");
    assert.deepEqual(n.dns, ["10.200.0.1"]);
    assert.equal(n.egress.mode, "guarded", "user networking is mediated by default");
    assert.equal(n.forwards[0].hostPort, publishPort);
    assert.equal(n.forwards[0].guestPort, 8080);
    assert.ok(n.counters.framesIn > 1000 && n.counters.tcp.accepted >= 52, JSON.stringify(n.counters));
    assert.ok(Object.values(n.counters.tcp.refused as Record<string, number>).reduce((a, b) => a + b, 0) >= 2, "the denied flows are counted");
    const text = await cli("network", name);
    assert.match(text.stdout, /userspace-stack/);
    assert.match(text.stdout, /egress:\s+guarded; \d+ flows/);
    // Host-service flows are audited under host.microagent.internal (never intercepted: no TLS to sniff there).
    const audit = JSON.parse((await cli("--json", "egress", name)).stdout) as { egress: Array<{ type: string; name: string | null; dst: string }> };
    assert.ok(audit.egress.some((r) => r.type === "egress_allow" && r.name === "host.microagent.internal" && r.dst === `10.200.0.1:${httpPort}`), "the download is in the audit");
    assert.match(text.stdout, new RegExp(`127\\.0\\.0\\.1:${publishPort} -> 8080/tcp`));

    // Quarantine closes the published port at once.
    assert.equal((await cli("quarantine", name)).code, 0);
    const refused = await new Promise<string>((resolve) => {
      const c = connect({ host: "127.0.0.1", port: publishPort });
      c.on("connect", () => {
        c.destroy();
        resolve("connected");
      });
      c.on("error", (e: NodeJS.ErrnoException) => resolve(e.code ?? "error"));
    });
    assert.equal(refused, "ECONNREFUSED");
  } finally {
    await cli("kill", name);
    await cli("delete", name, "--force");
  }
});

test("network: isolated has no eth0; a taken published port fails the start naming it", { timeout: 600_000 }, async () => {
  const iso = "iso";
  assert.equal((await cli("create", iso, "--image", imageRef, "--profile", "tiny", "--network", "isolated")).code, 0);
  const taken = createServer();
  const takenPort = await listen(taken);
  assert.equal((await cli("create", "busy", "--image", imageRef, "--profile", "tiny", "-p", `${takenPort}:80`)).code, 0);
  try {
    assert.equal((await cli("start", iso)).code, 0);
    const ls = await sh(iso, "ls /sys/class/net");
    assert.equal(ls.stdout.trim(), "lo");
    const n = await cli("--json", "network", iso);
    assert.equal(JSON.parse(n.stdout).mode, "isolated");
    const busy = await cli("--json", "start", "busy");
    assert.notEqual(busy.code, 0);
    assert.match(busy.stdout + busy.stderr, new RegExp(`host port 127\\.0\\.0\\.1:${takenPort} is already in use`));
    assert.match(busy.stdout + busy.stderr, /NETWORK_PORT_IN_USE/);
  } finally {
    await cli("kill", iso);
    await cli("delete", iso, "--force");
    await cli("delete", "busy", "--force");
  }
});
