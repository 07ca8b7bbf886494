import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { isMicroagentError } from "../../src/contract/errors.ts";
import { AuthFileSchema, lookupCredentials, readAuthFile } from "../../src/image/credentials.ts";
import { registryList, registryLogin, registryLogout } from "../../src/image/registry-auth.ts";

async function withDir(fn: (dir: string) => Promise<void>) {
  const dir = await mkdtemp(join(tmpdir(), "microagent-image-cred-"));
  try {
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

test("image-credentials: login writes docker-shaped auth.json with mode 0600, logout removes it", () =>
  withDir(async (stateDir) => {
    const env = {};
    const r = await registryLogin("ghcr.io", { stateDir, env, username: "me", password: "s3:cr:et", verify: false });
    assert.equal(r.authFile, join(stateDir, "auth.json"));
    const st = await stat(r.authFile);
    assert.equal(st.mode & 0o777, 0o600);
    const file = AuthFileSchema.parse(JSON.parse(await readFile(r.authFile, "utf8")));
    assert.equal(file.auths["ghcr.io"]?.auth, Buffer.from("me:s3:cr:et").toString("base64"));
    assert.deepEqual(lookupCredentials(file, "GHCR.IO"), { username: "me", password: "s3:cr:et" });
    await registryLogin("https://index.docker.io/v1/", { stateDir, env, username: "d", password: "p", verify: false });
    const list = await registryList({ stateDir, env });
    assert.deepEqual(
      list.map((e) => [e.registry, e.username]),
      [["docker.io", "d"], ["ghcr.io", "me"]],
    );
    assert.ok(!JSON.stringify(list).includes("s3:cr:et"), "list never shows passwords");
    await registryLogout("ghcr.io", { stateDir, env });
    assert.deepEqual((await registryList({ stateDir, env })).map((e) => e.registry), ["docker.io"]);
    await assert.rejects(registryLogout("ghcr.io", { stateDir, env }), (e: unknown) => isMicroagentError(e) && e.code === "REGISTRY_NOT_LOGGED_IN");
    assert.equal((await stat(r.authFile)).mode & 0o777, 0o600);
  }));

test("image-credentials: REGISTRY_AUTH_FILE overrides the state dir", () =>
  withDir(async (dir) => {
    const authFile = join(dir, "elsewhere.json");
    await registryLogin("127.0.0.1:5000", { stateDir: join(dir, "state"), env: { REGISTRY_AUTH_FILE: authFile }, username: "u", password: "p", verify: false });
    assert.ok(JSON.parse(await readFile(authFile, "utf8")).auths["127.0.0.1:5000"]);
  }));

test("image-credentials: a malformed file is a clear error, a missing one is empty", () =>
  withDir(async (dir) => {
    assert.deepEqual(await readAuthFile(join(dir, "none.json")), { auths: {} });
    const bad = join(dir, "bad.json");
    await writeFile(bad, "{not json");
    await assert.rejects(readAuthFile(bad), (e: unknown) => isMicroagentError(e) && e.code === "REGISTRY_AUTH_FILE_INVALID" && e.message.includes(bad));
    await writeFile(bad, JSON.stringify({ auths: { x: { auth: 5 } } }));
    await assert.rejects(readAuthFile(bad), (e: unknown) => isMicroagentError(e) && e.code === "REGISTRY_AUTH_FILE_INVALID");
  }));

test("image-credentials: empty passwords are refused", () =>
  withDir(async (stateDir) => {
    await assert.rejects(registryLogin("ghcr.io", { stateDir, env: {}, username: "u", password: "", verify: false }), /empty password/);
  }));
