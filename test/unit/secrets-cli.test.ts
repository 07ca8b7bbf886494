import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, readdir, rm, truncate, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { runCli } from "../helpers/cli.ts";
import { isMicroagentError } from "../../src/contract/errors.ts";
import { createWorkspace, type CreateProviders } from "../../src/workspace/create.ts";
import { readManifest } from "../../src/workspace/manifest.ts";
import { workspacePaths } from "../../src/workspace/paths.ts";
import { loadSpec } from "../../src/workspace/spec.ts";
import { createText } from "../../src/cli/commands/create.ts";
import { createJson } from "../../src/api/results.ts";
import { formatSecretRef, parseSecretRef } from "../../src/secrets/ref.ts";
import { SECRET_CMD_TIMEOUT_MS } from "../../src/secrets/resolve.ts";

const VALUE = `val-${randomBytes(16).toString("hex")}`;

async function withDir<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), "secrets-cli-"));
  try {
    return await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

function noValue(...texts: string[]): void {
  for (const t of texts) assert.ok(!t.includes(VALUE), `the value leaked: ${t}`);
}

test("secrets-cli: secret check reports name, ok, source and size per secret, never the value; exit 1 when any fails", async () => {
  await withDir(async (dir) => {
    await writeFile(join(dir, "key"), `${VALUE}\n`);
    const args = ["secret", "check", "A=env:SECRETS_CLI_A", `B=file:${join(dir, "key")}`, `C=cmd:cat ${join(dir, "key")}`, "D=env:SECRETS_CLI_UNSET", `E=cmd:cat ${join(dir, "key")}; cat ${join(dir, "key")} >&2; exit 4`, "F=env:SECRETS_CLI_A@API.Example.com"];
    const env = { SECRETS_CLI_A: VALUE };
    const json = await runCli(["--json", ...args], env);
    assert.equal(json.code, 1, json.err);
    noValue(json.out, json.err);
    const doc = JSON.parse(json.out);
    assert.deepEqual(
      doc.secrets.map((s: Record<string, unknown>) => [s.name, s.ok, s.source, s.delivery, s.bytes, (s.error as { code?: string } | undefined)?.code]),
      [
        ["A", true, "env:SECRETS_CLI_A", "file", VALUE.length, undefined],
        ["B", true, `file:${join(dir, "key")}`, "file", VALUE.length, undefined],
        ["C", true, `cmd:cat ${join(dir, "key")}`, "file", VALUE.length, undefined],
        ["D", false, "env:SECRETS_CLI_UNSET", "file", undefined, "SECRET_SOURCE_MISSING"],
        ["E", false, `cmd:cat ${join(dir, "key")}; cat ${join(dir, "key")} >&2; exit 4`, "file", undefined, "SECRET_SOURCE_FAILED"],
        ["F", true, "env:SECRETS_CLI_A", "swap", VALUE.length, undefined],
      ],
    );
    assert.deepEqual(doc.secrets[5].hosts, ["api.example.com"]);
    assert.match(doc.secrets[4].error.message, /exited with code 4: stderr: \[redacted\]$/);
    const text = await runCli(args, env);
    assert.equal(text.code, 1);
    noValue(text.out, text.err);
    assert.match(text.out, /^NAME +STATUS +BYTES +DELIVERY +SOURCE\nA +ok +\d+ +file +env:SECRETS_CLI_A\n/);
    assert.match(text.out, /^D +FAILED +- +file +env:SECRETS_CLI_UNSET$/m);
    assert.match(text.out, /^F +ok +\d+ +swap @api\.example\.com +env:SECRETS_CLI_A$/m);
    assert.match(text.out, /^error: secret D \(env:SECRETS_CLI_UNSET\): the environment variable SECRETS_CLI_UNSET is not set\n {2}fix: Export SECRETS_CLI_UNSET/m);
    // AX mode: the failure envelope, still no value.
    const ax = await runCli(args, { ...env, MICROAGENT_MODE: "ax" });
    assert.equal(ax.code, 1);
    noValue(ax.out, ax.err);
    const env2 = JSON.parse(ax.out);
    assert.equal(env2.ok, false);
    assert.equal(env2.error.code, "SECRET_SOURCE_FAILED");
    assert.match(env2.error.message, /2 of 6 secrets did not resolve: D, E/);
    const good = await runCli(["--json", "secret", "check", "A=env:SECRETS_CLI_A"], env);
    assert.equal(good.code, 0);
    noValue(good.out, good.err);
  });
});

test("secrets-cli: secret check times out a hanging helper (exit 1, SECRET_SOURCE_TIMEOUT); --timeout sets the limit", async () => {
  assert.equal(SECRET_CMD_TIMEOUT_MS, 10_000);
  const t0 = performance.now();
  const r = await runCli(["--json", "secret", "check", "--timeout", "700ms", "H=cmd:sleep 60", "OK=cmd:echo fine"]);
  const ms = performance.now() - t0;
  assert.equal(r.code, 1);
  const rows = JSON.parse(r.out).secrets;
  assert.equal(rows[0].error.code, "SECRET_SOURCE_TIMEOUT");
  assert.match(rows[0].error.message, /did not finish within 700 ms/);
  assert.equal(rows[1].ok, true, "a timeout of one does not stop the others");
  assert.ok(ms >= 690 && ms < 8_000, `took ${ms} ms`);
  assert.equal((await runCli(["secret", "check", "--timeout", "0", "A=env:A"])).code, 2);
});

test("secrets-cli: malformed references are usage errors (exit 2) that do not echo a value typed as a source", async () => {
  for (const args of [["secret", "check", `TOKEN=${VALUE}`], ["secret", "check", "1X=env:A"], ["secret", "check", "X=env:A@a.com:443"], ["secret", "check"]]) {
    for (const json of [false, true]) {
      const r = await runCli(json ? ["--json", ...args] : args);
      assert.equal(r.code, 2, `${args.join(" ")}: ${r.out}${r.err}`);
      noValue(r.out, r.err);
      if (json) assert.equal(JSON.parse(r.out).error.code, "USAGE");
    }
  }
  const r = await runCli(["secret", "check", `TOKEN=${VALUE}`]);
  assert.match(r.err, /^error: secret check: secret TOKEN: the source must start with env:, file: or cmd:/);
  // --secret on create: refused while parsing, without commander's echo of the argument.
  await withDir(async (dir) => {
    const c = await runCli(["--state-dir", dir, "create", "w", "--image", "x", "--secret", `TOKEN=${VALUE}`]);
    assert.equal(c.code, 2);
    noValue(c.out, c.err);
    assert.match(c.err, /^error: --secret: secret TOKEN: the source must start with/);
    assert.deepEqual(await readdir(dir), [], "nothing was created");
    const run = await runCli(["--state-dir", dir, "run", "--secret", `TOKEN=${VALUE}`, "busybox", "true"]);
    assert.equal(run.code, 2);
    noValue(run.out, run.err);
    assert.match(run.err, /^error: --secret: secret TOKEN:/);
  });
});

test("secrets-cli: secret check --file checks a spec's secrets: (map and list forms, paths against the spec's dir)", async () => {
  await withDir(async (dir) => {
    await writeFile(join(dir, "key"), VALUE);
    await writeFile(join(dir, "map.yaml"), "secrets:\n  KEY: file:key\n  GH: env:SECRETS_CLI_GH@api.github.com\n");
    await writeFile(join(dir, "list.yaml"), "secrets:\n  - KEY=file:./key\n  - MISSING=file:nope\n");
    const m = await runCli(["--json", "secret", "check", "--file", join(dir, "map.yaml")], { SECRETS_CLI_GH: VALUE });
    assert.equal(m.code, 0, m.out);
    noValue(m.out, m.err);
    assert.deepEqual(JSON.parse(m.out).secrets.map((s: { name: string; source: string; delivery: string }) => [s.name, s.source, s.delivery]), [
      ["KEY", `file:${join(dir, "key")}`, "file"],
      ["GH", "env:SECRETS_CLI_GH", "swap"],
    ]);
    const l = await runCli(["--json", "secret", "check", "--file", join(dir, "list.yaml"), "EXTRA=env:SECRETS_CLI_GH"], { SECRETS_CLI_GH: VALUE });
    assert.equal(l.code, 1);
    noValue(l.out, l.err);
    assert.deepEqual(JSON.parse(l.out).secrets.map((s: { name: string; ok: boolean }) => [s.name, s.ok]), [["KEY", true], ["MISSING", false], ["EXTRA", true]]);
    await writeFile(join(dir, "none.yaml"), "image: x\n");
    assert.equal((await runCli(["secret", "check", "--file", join(dir, "none.yaml")])).code, 2);
  });
});

test("secrets-cli: the spec's secrets: are validated like --secret, with the key in the message", async () => {
  await withDir(async (dir) => {
    const bad: Array<[string, RegExp]> = [
      ["secrets:\n  1X: env:A\n", /secrets\.1X: '1X' is not a valid secret name/],
      [`secrets:\n  T: ${VALUE}\n`, /secrets\.T: secret T: the source must start with env:, file: or cmd:/],
      ["secrets:\n  - T=env:A@bad host\n", /secrets\[0\]: secret T: 'bad host' after '@' is not a host/],
      ["secrets:\n  - T=env:A\n  - T=env:B\n", /secrets\[1\]: secret T is listed twice/],
      ["secrets: env:A\n", /secrets: secrets must be a list/],
      ["secrets:\n  T: 3\n", /secrets/],
    ];
    for (const [text, re] of bad) {
      await writeFile(join(dir, "s.yaml"), text);
      await assert.rejects(loadSpec(join(dir, "s.yaml")), (e: unknown) => {
        assert.ok(isMicroagentError(e));
        assert.equal(e.code, "SPEC_INVALID", text);
        assert.match(e.message, re, text);
        noValue(e.message, JSON.stringify(e.toJSON()));
        return true;
      });
    }
    await writeFile(join(dir, "ok.yaml"), "secrets:\n  A: cmd:./get-token\n  B: file:sub/b@api.example.com,UPLOADS.example.com.\n");
    const spec = await loadSpec(join(dir, "ok.yaml"));
    assert.deepEqual(spec.secrets?.map(formatSecretRef), ["A=cmd:./get-token", `B=file:${join(dir, "sub/b")}@api.example.com,uploads.example.com`]);
    assert.deepEqual(spec.secrets?.[0]?.source, { kind: "cmd", command: "./get-token", cwd: dir });
  });
});

const sha = (s: string) => createHash("sha256").update(s).digest("hex");

async function fakeProviders(dir: string): Promise<CreateProviders> {
  await writeFile(join(dir, "vmlinuz"), "kernel");
  await writeFile(join(dir, "initramfs"), "initramfs");
  const base = join(dir, "base.ext4");
  await writeFile(base, "");
  await truncate(base, 8 * 1024 * 1024);
  const digest = `sha256:${"b".repeat(64)}`;
  return {
    async resolveImage(ref) {
      return { image: { ref }, info: { ref, resolvedRef: `${ref.split(":")[0]}@${digest}`, manifestDigest: digest, config: { Cmd: ["/bin/true"] } } };
    },
    async ensureKernel() {
      return { kernel: { path: join(dir, "vmlinuz"), sha256: sha("kernel") }, initramfs: { path: join(dir, "initramfs"), sha256: sha("initramfs") } };
    },
    async ensureBaseRootfs() {
      return { path: base, sha256: createHash("sha256").update(Buffer.alloc(8 * 1024 * 1024)).digest("hex"), sizeMib: 8, cacheHit: true };
    },
  };
}

test("secrets-cli: create keeps the references (spec merged with flags) in the manifest, never a value; swap with isolated network is a usage error", async () => {
  await withDir(async (dir) => {
    const stateDir = join(dir, "state");
    const providers = await fakeProviders(dir);
    await writeFile(join(dir, "key"), VALUE);
    await writeFile(join(dir, "microagent.yaml"), "image: reg/img:1\nsecrets:\n  KEY: file:key\n  GH: env:SECRETS_CLI_GH\n");
    process.env.SECRETS_CLI_GH = VALUE;
    try {
      const r = await createWorkspace({
        name: "sec",
        stateDir,
        specFile: join(dir, "microagent.yaml"),
        secrets: [parseSecretRef("GH=cmd:echo from-flag", { baseDir: dir }), parseSecretRef("NEW=env:SECRETS_CLI_GH", { baseDir: dir })],
        providers,
        profile: "tiny",
      });
      const m = await readManifest(workspacePaths(stateDir, "sec"));
      assert.deepEqual(m.secrets?.map(formatSecretRef), [`KEY=file:${join(dir, "key")}`, "GH=cmd:echo from-flag", "NEW=env:SECRETS_CLI_GH"]);
      assert.deepEqual(r.manifest.secrets, m.secrets);
      assert.match(createText(r), /^ {2}secrets: {3}KEY \(file, file\), GH \(file, cmd\), NEW \(file, env\)$/m);
      assert.deepEqual(createJson(r).secrets[0], { name: "KEY", source: `file:${join(dir, "key")}`, delivery: "file", hosts: [] });
      noValue(createText(r), JSON.stringify(createJson(r)));
      // Nothing under the state dir holds the value (create resolves nothing).
      for (const f of await readdir(join(stateDir, "workspaces", "sec"))) {
        const p = join(stateDir, "workspaces", "sec", f);
        noValue((await readFile(p)).toString("latin1"));
      }
      // A swap secret needs the user network with guarded/strict egress: usage error, nothing created.
      await assert.rejects(
        createWorkspace({ name: "swap", stateDir, image: "reg/img:1", egress: { mode: "off" }, secrets: [parseSecretRef("GH=env:SECRETS_CLI_GH@api.github.com", { baseDir: dir })], providers }),
        (e: unknown) => isMicroagentError(e) && e.code === "USAGE" && /swap delivery of secret GH \(@api\.github\.com\) needs --network user with guarded or strict egress: egress 'off' does not intercept/.test(e.message),
      );
      assert.equal(existsSync(join(stateDir, "workspaces", "swap")), false);
    } finally {
      delete process.env.SECRETS_CLI_GH;
    }
    // The same through the CLI: exit 2, the reason named.
    const c = await runCli(["--state-dir", stateDir, "create", "swap2", "--image", "reg/img:1", "--network", "isolated", "--secret", "GH=env:X@api.github.com"]);
    assert.equal(c.code, 2, c.err);
    assert.match(c.err, /needs --network user with guarded or strict egress: network mode 'isolated'/);
    assert.equal(existsSync(join(stateDir, "workspaces", "swap2")), false);
    // With the default (user network, guarded egress) a swap secret is accepted.
    const ok = await runCli(["--state-dir", stateDir, "--json", "create", "swap3", "--image", "reg/img:1", "--secret", "GH=env:X@api.github.com"]);
    assert.doesNotMatch(ok.err + ok.out, /needs --network user/);
  });
});
