import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtemp, readFile, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { inspect } from "node:util";
import { isMicroagentError, type MicroagentError } from "../../src/contract/errors.ts";
import { parseSecretRef } from "../../src/secrets/ref.ts";
import { SecretValue, checkSecrets, resolveSecret, resolveSecrets } from "../../src/secrets/resolve.ts";
import { pidExists } from "../../src/util/process.ts";

const VALUE = `v-${randomBytes(12).toString("hex")}`;

async function withDir<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), "secrets-resolve-"));
  try {
    return await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Resolve `text`, expect a failure with `code`, and check that nothing about it holds VALUE. */
async function failure(text: string, code: string, opts: Parameters<typeof resolveSecret>[1] & { baseDir?: string } = {}): Promise<MicroagentError> {
  const ref = parseSecretRef(text, { baseDir: opts.baseDir ?? "/" });
  try {
    await resolveSecret(ref, { env: {}, ...opts });
  } catch (e) {
    assert.ok(isMicroagentError(e), String(e));
    assert.equal(e.code, code, e.message);
    const all = [e.message, e.remediation, JSON.stringify(e.toJSON()), inspect(e, { depth: 5 })].join("\n");
    assert.ok(!all.includes(VALUE), `the value leaked into ${all}`);
    assert.match(e.message, new RegExp(`^secret ${ref.name} \\(`), "names the secret and its source");
    return e;
  }
  assert.fail(`${text} should fail with ${code}`);
}

test("secrets-resolve: SecretValue redacts every implicit form; reveal() gives the bytes", () => {
  const v = new SecretValue(Buffer.from(VALUE));
  for (const s of [String(v), `${v}`, v.toString(), JSON.stringify({ v }), inspect(v), inspect({ nested: { v } }, { showHidden: true, depth: 9 }), JSON.stringify([v])]) {
    assert.ok(!s.includes(VALUE), s);
    assert.match(s, /\[redacted\]/);
  }
  assert.equal(inspect(v), `SecretValue([redacted], ${VALUE.length} bytes)`);
  assert.equal(v.byteLength, VALUE.length);
  assert.equal(v.reveal().toString(), VALUE);
  assert.deepEqual(Object.keys(v), [], "no enumerable field for a serialiser to find");
  v.wipe();
  assert.ok(v.reveal().every((b) => b === 0));
});

test("secrets-resolve: env: is verbatim; a missing or empty variable fails, naming the variable", async () => {
  const r = await resolveSecret(parseSecretRef("T=env:MY_T", { baseDir: "/" }), { env: { MY_T: `${VALUE}\n` } });
  assert.equal(r.value.reveal().toString(), `${VALUE}\n`, "env: keeps a trailing newline");
  const e = await failure("T=env:MY_T", "SECRET_SOURCE_MISSING");
  assert.equal(e.message, "secret T (env:MY_T): the environment variable MY_T is not set");
  assert.equal(e.kind, "not_found");
  assert.deepEqual(e.details, { secret: "T", source: "env:MY_T", kind: "env" });
  await failure("T=env:MY_T", "SECRET_INVALID", { env: { MY_T: "" } });
  await failure("T=env:MY_T", "SECRET_TOO_LARGE", { env: { MY_T: VALUE.repeat(10) }, maxBytes: 64 });
});

test("secrets-resolve: file: reads a regular file (one trailing newline dropped), follows symlinks, refuses the rest", async () => {
  await withDir(async (dir) => {
    await writeFile(join(dir, "k"), `${VALUE}\n`);
    await writeFile(join(dir, "k2"), `${VALUE}\r\n`);
    await writeFile(join(dir, "k3"), `${VALUE}\n\n`);
    await symlink(join(dir, "k"), join(dir, "link"));
    const get = async (p: string) => (await resolveSecret(parseSecretRef(`K=file:${p}`, { baseDir: dir }))).value.reveal().toString();
    assert.equal(await get("k"), VALUE);
    assert.equal(await get("k2"), VALUE, "CRLF counts as one newline");
    assert.equal(await get("k3"), `${VALUE}\n`, "only one newline is dropped");
    assert.equal(await get("link"), VALUE, "symlinks are followed");
    const missing = await failure("K=file:nope", "SECRET_SOURCE_MISSING", { baseDir: dir });
    assert.equal(missing.message, `secret K (file:${join(dir, "nope")}): the file does not exist`);
    assert.match((await failure(`K=file:${dir}`, "SECRET_SOURCE_FAILED")).message, /is a directory, not a regular file/);
    assert.match((await failure("K=file:/dev/null", "SECRET_SOURCE_FAILED")).message, /is a device, not a regular file/);
    execFileSync("mkfifo", [join(dir, "fifo")]);
    // No writer: a blocking open would hang here; O_NONBLOCK + fstat refuses it at once.
    assert.match((await failure("K=file:fifo", "SECRET_SOURCE_FAILED", { baseDir: dir })).message, /is a FIFO, not a regular file/);
    await writeFile(join(dir, "big"), VALUE.repeat(100));
    await failure("K=file:big", "SECRET_TOO_LARGE", { baseDir: dir, maxBytes: 1000 });
    await writeFile(join(dir, "empty"), "\n");
    await failure("K=file:empty", "SECRET_INVALID", { baseDir: dir });
    await symlink(join(dir, "gone"), join(dir, "dangling"));
    await failure("K=file:dangling", "SECRET_SOURCE_MISSING", { baseDir: dir });
  });
});

test("secrets-resolve: the 64 KiB default cap holds for a file exactly at and just over it", async () => {
  await withDir(async (dir) => {
    await writeFile(join(dir, "at"), Buffer.alloc(64 * 1024, 0x61));
    await writeFile(join(dir, "over"), Buffer.alloc(64 * 1024 + 1, 0x61));
    assert.equal((await resolveSecret(parseSecretRef("K=file:at", { baseDir: dir }))).value.byteLength, 64 * 1024);
    await failure("K=file:over", "SECRET_TOO_LARGE", { baseDir: dir });
  });
});

test("secrets-resolve: cmd: stdout is the value (one newline dropped), run in the reference's dir with the given env", async () => {
  await withDir(async (dir) => {
    await writeFile(join(dir, "v"), VALUE);
    const ref = parseSecretRef('K=cmd:cat v; printf "%s" "$EXTRA"; echo', { baseDir: dir });
    const r = await resolveSecret(ref, { env: { EXTRA: "-x", PATH: process.env.PATH ?? "/usr/bin:/bin" } });
    assert.equal(r.value.reveal().toString(), `${VALUE}-x`);
    const crlf = await resolveSecret(parseSecretRef("K=cmd:printf 'abc\\r\\n'", { baseDir: dir }));
    assert.equal(crlf.value.reveal().toString(), "abc");
  });
});

test("secrets-resolve: cmd: failure reports the exit code and stderr, never stdout (even echoed on stderr)", async () => {
  await withDir(async (dir) => {
    // The value comes from a file, so the command text (which errors do show) does not hold it.
    await writeFile(join(dir, "v"), VALUE);
    const e = await failure('K=cmd:cat v; echo "vault: permission denied for $(cat v)" >&2; exit 3', "SECRET_SOURCE_FAILED", { baseDir: dir, env: { PATH: "/usr/bin:/bin" } });
    assert.match(e.message, /^secret K \(cmd:cat v; .*\): the command exited with code 3: stderr: vault: permission denied for \[redacted\]$/s);
    assert.equal(e.details?.exitCode, 3);
  });
  const killed = await failure("K=cmd:kill -TERM $$", "SECRET_SOURCE_FAILED");
  assert.match(killed.message, /was killed by SIGTERM/);
  await failure("K=cmd:true", "SECRET_INVALID");
  await failure("K=cmd:head -c 70000 /dev/zero", "SECRET_TOO_LARGE", { env: { PATH: "/usr/bin:/bin" } });
  const badDir = await failure("K=cmd:true", "SECRET_SOURCE_FAILED", { baseDir: "/nonexistent-dir-for-secrets" });
  assert.match(badDir.message, /could not be started in \/nonexistent-dir-for-secrets/);
});

test("secrets-resolve: cmd: timeout kills the helper's whole process group and fails, retryable", async () => {
  await withDir(async (dir) => {
    await writeFile(join(dir, "v"), VALUE);
    const t0 = performance.now();
    // The grandchild keeps stdout open after writing its pid: only a group kill ends it.
    const e = await failure(`K=cmd:sleep 30 & echo $! > pid; cat v; wait`, "SECRET_SOURCE_TIMEOUT", { baseDir: dir, cmdTimeoutMs: 400, env: { PATH: "/usr/bin:/bin" } });
    const ms = performance.now() - t0;
    assert.ok(ms >= 390 && ms < 5000, `timed out after ${ms} ms`);
    assert.equal(e.retryable, true);
    assert.match(e.message, /did not finish within 400 ms \(killed\)/);
    const pid = Number(await readFile(join(dir, "pid"), "utf8"));
    const deadline = Date.now() + 3000;
    while (pidExists(pid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    assert.equal(pidExists(pid), false, `the helper's child ${pid} survived the timeout`);
  });
});

test("secrets-resolve: swap values must fit an HTTP header (no CR, LF, NUL)", async () => {
  const swap = (v: string) => resolveSecret(parseSecretRef("K=env:V@api.example.com", { baseDir: "/" }), { env: { V: v } });
  assert.equal((await swap(VALUE)).value.reveal().toString(), VALUE);
  for (const v of [`${VALUE}\r\nX-Evil: 1`, `${VALUE}\n`, `a\u0000b`]) {
    await assert.rejects(swap(v), (e: unknown) => isMicroagentError(e) && e.code === "SECRET_INVALID" && /line break or NUL/.test(e.message) && !e.message.includes(VALUE));
  }
  // File delivery takes any bytes.
  assert.equal((await resolveSecret(parseSecretRef("K=env:V", { baseDir: "/" }), { env: { V: "a\nb" } })).value.byteLength, 3);
});

test("secrets-resolve: resolveSecrets fails closed on the first failure; checkSecrets reports each", async () => {
  const refs = ["A=env:A", "B=env:B", "C=env:C"].map((t) => parseSecretRef(t, { baseDir: "/" }));
  const all = await resolveSecrets(refs, { env: { A: "1", B: "2", C: "3" } });
  assert.deepEqual(all.map((s) => s.value.reveal().toString()), ["1", "2", "3"]);
  await assert.rejects(resolveSecrets(refs, { env: { A: VALUE, C: "3" } }), (e: unknown) => isMicroagentError(e) && /secret B/.test(e.message));
  const checks = await checkSecrets(refs, { env: { A: VALUE, C: "3" } });
  assert.deepEqual(checks.map((c) => [c.ref.name, c.ok, c.bytes, c.error?.code]), [["A", true, VALUE.length, undefined], ["B", false, undefined, "SECRET_SOURCE_MISSING"], ["C", true, 1, undefined]]);
  assert.ok(!JSON.stringify(checks).includes(VALUE));
});
