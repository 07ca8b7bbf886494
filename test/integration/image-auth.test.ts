/**
 * Registry authentication against real registries: basic auth (htpasswd) after `registry login`,
 * the Bearer token flow (registry `token` auth with a real JWT issuer), refusals with the login
 * hint, and the CLI's `registry login --password-stdin`.
 */
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtemp, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startRegistry, type TestRegistry } from "../helpers/registry.ts";
import { buildBusyboxImage, pushImage, type OciImage } from "../helpers/oci-image.ts";
import { pullImage } from "../../src/image/pull.ts";
import { registryLogin } from "../../src/image/registry-auth.ts";
import { isMicroagentError } from "../../src/contract/errors.ts";

let image: OciImage;
const dirs: string[] = [];
const newDir = async () => {
  const d = await mkdtemp(join(tmpdir(), "microagent-image-auth-"));
  dirs.push(d);
  return d;
};

before(async () => {
  image = await buildBusyboxImage({ files: { "/etc/motd": "auth\n" } });
});
after(async () => {
  await image?.cleanup();
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

/** The CLI from source (main.ts), as a child process with `input` on stdin. */
function runCli(args: string[], input: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const main = new URL("../../src/cli/main.ts", import.meta.url).pathname;
  const child = spawn(process.execPath, ["--input-type=module", "-e", `import { main } from ${JSON.stringify(main)}; process.exitCode = await main(process.argv.slice(1));`, "--", ...args], {
    stdio: ["pipe", "pipe", "pipe"],
    env: { ...process.env, REGISTRY_AUTH_FILE: "" },
  });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (d: Buffer) => (stdout += d));
  child.stderr.on("data", (d: Buffer) => (stderr += d));
  child.stdin.end(input);
  const timer = setTimeout(() => child.kill("SIGKILL"), 60_000);
  return new Promise((resolve) => child.on("close", (code) => (clearTimeout(timer), resolve({ code, stdout, stderr }))));
}

const denied = (code: string) => (e: unknown) => isMicroagentError(e) && e.code === code && e.kind === "policy_denied";

test("image-auth: basic auth: anonymous pull is refused with a login hint; pull works after registry login", async () => {
  const reg: TestRegistry = await startRegistry({ auth: "basic" });
  try {
    const pushed = await pushImage(image, reg, "private/app:1");
    const stateDir = await newDir();
    await assert.rejects(pullImage(pushed.ref, { stateDir, arch: "amd64", env: {} }), (e: unknown) =>
      denied("REGISTRY_UNAUTHORIZED")(e) && /registry login 127\.0\.0\.1:\d+/.test((e as { remediation: string }).remediation),
    );
    await assert.rejects(
      registryLogin(reg.host, { stateDir, env: {}, username: reg.username as string, password: "wrong" }),
      denied("REGISTRY_UNAUTHORIZED"),
    );
    await registryLogin(reg.host, { stateDir, env: {}, username: reg.username as string, password: reg.password as string });
    assert.equal((await stat(join(stateDir, "auth.json"))).mode & 0o777, 0o600);
    const img = await pullImage(pushed.ref, { stateDir, arch: "amd64", env: {} });
    assert.equal(img.manifestDigest, pushed.digest);
  } finally {
    await reg.stop();
  }
});

test("image-auth: bearer token flow: anonymous pull tokens, and credentials when the issuer demands them", async () => {
  const open = await startRegistry({ auth: "token" });
  try {
    const pushed = await pushImage(image, open, "tok/app:1");
    const before = open.tokenRequests;
    const img = await pullImage(pushed.ref, { stateDir: await newDir(), arch: "amd64", env: {} });
    assert.equal(img.manifestDigest, pushed.digest);
    assert.equal(open.tokenRequests - before, 1, "one token for the repository scope, reused for every blob");
  } finally {
    await open.stop();
  }
  const closed = await startRegistry({ auth: "token", anonymousPull: false });
  try {
    const pushed = await pushImage(image, closed, "tok/app:1");
    const stateDir = await newDir();
    await assert.rejects(pullImage(pushed.ref, { stateDir, arch: "amd64", env: {} }), denied("REGISTRY_UNAUTHORIZED"));
    // Login through the CLI, password on stdin, then pull through the same credentials.
    const login = await runCli(["--state-dir", stateDir, "--json", "registry", "login", closed.host, "-u", closed.username as string, "--password-stdin"], `${closed.password}\n`);
    assert.equal(login.code, 0, login.stdout + login.stderr);
    assert.equal((JSON.parse(login.stdout) as { registry: string }).registry, closed.host);
    const img = await pullImage(pushed.ref, { stateDir, arch: "amd64", env: {} });
    assert.equal(img.manifestDigest, pushed.digest);
    const auth = JSON.parse(await readFile(join(stateDir, "auth.json"), "utf8")) as { auths: Record<string, unknown> };
    assert.deepEqual(Object.keys(auth.auths), [closed.host]);
  } finally {
    await closed.stop();
  }
});
