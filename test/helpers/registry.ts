/**
 * Test fixture: a real OCI registry (Debian's `docker-registry`, distribution v2.8) on 127.0.0.1.
 *
 *   const reg = await startRegistry({ auth: "token" });
 *   try { ... push with pushImage(layoutDir, "app:1", reg) ...; pull from reg.host } finally { await reg.stop(); }
 *
 * - `auth: "none"` (default): anonymous pull and push.
 * - `auth: "basic"`: htpasswd (bcrypt, via `htpasswd` from apache2-utils); `reg.username`/`reg.password`.
 * - `auth: "token"`: the registry's `token` auth. This fixture runs a small token issuer (a real
 *   ES256 JWT signer with node:crypto and a self-signed certificate made by `openssl`) that grants
 *   pull to anyone and push only with `reg.username`/`reg.password` over basic auth (`anonymousPull:
 *   false` requires the credentials for pull too). `reg.tokenRequests` counts the tokens issued.
 *
 * Nothing here fakes the registry: pushes and pulls go through the real server. `blobPath(digest)`
 * points into its storage so a test can tamper with a blob on disk.
 */
import { spawn, execFile, type ChildProcess } from "node:child_process";
import { createPrivateKey, createSign, randomBytes, X509Certificate } from "node:crypto";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";

const execFileP = promisify(execFile);

export type RegistryAuth = "none" | "basic" | "token";

export interface StartRegistryOptions {
  auth?: RegistryAuth;
  /** Token auth only: issue pull tokens without credentials (default true). */
  anonymousPull?: boolean;
  /** Startup bound (default 20 s). */
  timeoutMs?: number;
}

export interface TestRegistry {
  /** `127.0.0.1:PORT`: use as the registry part of an image reference. */
  host: string;
  auth: RegistryAuth;
  /** Credentials for basic and token auth (undefined with auth "none"). */
  username: string | undefined;
  password: string | undefined;
  /** The registry's storage root (distribution filesystem driver layout). */
  storageDir: string;
  /** Where the registry keeps the blob with this digest (`sha256:<hex>`). */
  blobPath(digest: string): string;
  /** Token auth: how many tokens the issuer handed out so far. */
  readonly tokenRequests: number;
  /** The registry's stderr/stdout so far (for failure messages). */
  log(): string;
  stop(): Promise<void>;
}

export async function startRegistry(options: StartRegistryOptions = {}): Promise<TestRegistry> {
  const auth = options.auth ?? "none";
  const timeoutMs = options.timeoutMs ?? 20_000;
  const dir = await mkdtemp(join(tmpdir(), "microagent-registry-"));
  const storageDir = join(dir, "storage");
  const username = auth === "none" ? undefined : "tester";
  const password = auth === "none" ? undefined : randomBytes(9).toString("base64url");
  let issuer: TokenIssuer | undefined;
  let child: ChildProcess | undefined;
  let output = "";
  const cleanup = async () => {
    if (child && child.exitCode === null && child.signalCode === null) {
      const exited = new Promise<void>((resolve) => child?.once("exit", () => resolve()));
      child.kill("SIGTERM");
      const timer = setTimeout(() => child?.kill("SIGKILL"), 3000);
      await exited;
      clearTimeout(timer);
    }
    if (issuer) await new Promise<void>((resolve) => issuer?.server.close(() => resolve()));
    await rm(dir, { recursive: true, force: true });
  };
  try {
    let authYaml = "";
    if (auth === "basic") {
      const htpasswdFile = join(dir, "htpasswd");
      try {
        await execFileP("htpasswd", ["-Bbc", htpasswdFile, username as string, password as string]);
      } catch (e) {
        throw new Error(`test registry: htpasswd failed (install apache2-utils): ${(e as Error).message}`);
      }
      authYaml = `auth:\n  htpasswd:\n    realm: microagent-test\n    path: ${htpasswdFile}\n`;
    } else if (auth === "token") {
      issuer = await startTokenIssuer(dir, username as string, password as string, options.anonymousPull ?? true);
      authYaml =
        `auth:\n  token:\n    realm: http://127.0.0.1:${issuer.port}/token\n    service: microagent-test-registry\n` +
        `    issuer: microagent-test-issuer\n    rootcertbundle: ${issuer.certPath}\n`;
    }
    // Port 0 isn't reported back by the registry, so pick a free port and retry on a collision.
    for (let attempt = 0; ; attempt++) {
      const port = await freePort();
      const config =
        `version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: ${storageDir}\n` +
        `  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:${port}\n  secret: ${randomBytes(16).toString("hex")}\n${authYaml}`;
      const configPath = join(dir, "config.yml");
      await writeFile(configPath, config);
      output = "";
      child = spawn("/usr/bin/docker-registry", ["serve", configPath], { stdio: ["ignore", "pipe", "pipe"] });
      child.stdout?.on("data", (d: Buffer) => (output = (output + d.toString()).slice(-20_000)));
      child.stderr?.on("data", (d: Buffer) => (output = (output + d.toString()).slice(-20_000)));
      const spawnError = new Promise<Error>((resolve) => child?.once("error", resolve));
      const host = `127.0.0.1:${port}`;
      const ready = await waitReady(host, child, spawnError, timeoutMs);
      if (ready === true) {
        const reg: TestRegistry = {
          host,
          auth,
          username,
          password,
          storageDir,
          blobPath: (digest) => {
            const hex = digest.replace(/^sha256:/, "");
            return join(storageDir, "docker/registry/v2/blobs/sha256", hex.slice(0, 2), hex, "data");
          },
          get tokenRequests() {
            return issuer?.issued ?? 0;
          },
          log: () => output,
          stop: cleanup,
        };
        return reg;
      }
      if (attempt < 2 && /address already in use/i.test(output)) continue;
      throw new Error(`test registry did not start: ${ready}\n--- registry output ---\n${output.slice(-4000)}`);
    }
  } catch (e) {
    await cleanup();
    throw e;
  }
}

async function waitReady(host: string, child: ChildProcess, spawnError: Promise<Error>, timeoutMs: number): Promise<true | string> {
  const deadline = Date.now() + timeoutMs;
  let failed: string | undefined;
  void spawnError.then((e) => (failed = `could not run /usr/bin/docker-registry (install docker-registry): ${e.message}`));
  while (Date.now() < deadline) {
    if (failed) return failed;
    if (child.exitCode !== null || child.signalCode !== null) return `registry exited (${child.exitCode ?? child.signalCode})`;
    try {
      const res = await fetch(`http://${host}/v2/`, { signal: AbortSignal.timeout(1000) });
      await res.arrayBuffer();
      if (res.status === 200 || res.status === 401) return true;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  child.kill("SIGKILL");
  return `no answer on http://${host}/v2/ within ${timeoutMs} ms`;
}

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

// --- token issuer ---------------------------------------------------------------------------------

interface TokenIssuer {
  server: Server;
  port: number;
  certPath: string;
  issued: number;
}

async function startTokenIssuer(dir: string, username: string, password: string, anonymousPull: boolean): Promise<TokenIssuer> {
  const keyPath = join(dir, "token.key");
  const certPath = join(dir, "token.crt");
  try {
    await execFileP("openssl", [
      "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
      "-keyout", keyPath, "-out", certPath, "-days", "2", "-subj", "/CN=microagent-test-token-issuer",
    ]);
  } catch (e) {
    throw new Error(`test registry: openssl could not make the token certificate: ${(e as Error).message}`);
  }
  const key = createPrivateKey(await readFile(keyPath));
  const certDerB64 = new X509Certificate(await readFile(certPath)).raw.toString("base64");
  const state: TokenIssuer = { server: createServer(), port: 0, certPath, issued: 0 };
  state.server.on("request", (req, res) => {
    const url = new URL(req.url ?? "/", "http://localhost");
    if (url.pathname !== "/token") {
      res.writeHead(404).end();
      return;
    }
    const header = req.headers.authorization ?? "";
    let authenticated = false;
    if (header.startsWith("Basic ")) {
      const [u, p] = Buffer.from(header.slice(6), "base64").toString().split(/:(.*)/s);
      if (u !== username || p !== password) {
        res.writeHead(401, { "content-type": "application/json" }).end(JSON.stringify({ details: "bad credentials" }));
        return;
      }
      authenticated = true;
    }
    // scope=repository:NAME:pull,push (may repeat).
    const access: Array<{ type: string; name: string; actions: string[] }> = [];
    for (const scope of url.searchParams.getAll("scope")) {
      const m = /^([a-z]+):(.+):([a-z*,]+)$/.exec(scope);
      if (!m) continue;
      const wanted = (m[3] as string).split(",");
      const granted = wanted.filter((a) => authenticated || (anonymousPull && a === "pull"));
      access.push({ type: m[1] as string, name: m[2] as string, actions: granted });
    }
    if (!authenticated && !anonymousPull) {
      res.writeHead(401, { "content-type": "application/json", "www-authenticate": 'Basic realm="token"' }).end("{}");
      return;
    }
    const now = Math.floor(Date.now() / 1000);
    const claims = {
      iss: "microagent-test-issuer",
      sub: authenticated ? username : "",
      aud: url.searchParams.get("service") ?? "microagent-test-registry",
      exp: now + 300,
      nbf: now - 10,
      iat: now,
      jti: randomBytes(8).toString("hex"),
      access,
    };
    const jwtHeader = { typ: "JWT", alg: "ES256", x5c: [certDerB64] };
    const b64 = (v: unknown) => Buffer.from(JSON.stringify(v)).toString("base64url");
    const signingInput = `${b64(jwtHeader)}.${b64(claims)}`;
    // JWS ES256 wants the raw r||s signature, not DER.
    const signature = createSign("SHA256").update(signingInput).sign({ key, dsaEncoding: "ieee-p1363" }).toString("base64url");
    const token = `${signingInput}.${signature}`;
    state.issued++;
    res.writeHead(200, { "content-type": "application/json" }).end(
      JSON.stringify({ token, access_token: token, expires_in: 300, issued_at: new Date().toISOString() }),
    );
  });
  await new Promise<void>((resolve) => state.server.listen(0, "127.0.0.1", resolve));
  state.port = (state.server.address() as AddressInfo).port;
  return state;
}
