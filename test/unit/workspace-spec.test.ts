import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { isMicroagentError } from "../../src/contract/errors.ts";
import { loadSpec } from "../../src/workspace/spec.ts";
import { resolveCreateInputs } from "../../src/workspace/create.ts";
import { mergeBootSpec } from "../../src/workspace/boot-spec.ts";
import { egressOptionsOf, parseAddHost, parseDnsUpstream, parseEgressAllow, parseEgressPassthrough, parsePublish } from "../../src/workspace/network.ts";

async function specDir(yaml: string, files: Record<string, string> = {}) {
  const dir = await mkdtemp(join(tmpdir(), "ws-spec-"));
  await mkdir(join(dir, "conf"), { recursive: true });
  for (const [p, c] of Object.entries(files)) await writeFile(join(dir, p), c, { mode: 0o640 });
  const path = join(dir, "microagent.yaml");
  await writeFile(path, yaml);
  return { dir, path };
}

const FULL = `image: registry.local/busybox:1
files:
  - source: conf/app.ini
    target: /etc/app.ini
  - source: ./run.sh
    target: /usr/local/bin/run.sh
    mode: "0755"
setup:
  - mkdir -p /data
entrypoint: /usr/local/bin/run.sh --serve
env:
  MODE: prod
  WORKERS: 4
resources:
  profile: medium
  cpus: 4
network: isolated
hostname: agent-1
`;

test("workspace: a full spec loads, sources resolve relative to the spec's directory", async () => {
  const { dir, path } = await specDir(FULL, { "conf/app.ini": "[a]\n", "run.sh": "#!/bin/sh\n" });
  try {
    const spec = await loadSpec(path);
    assert.equal(spec.image, "registry.local/busybox:1");
    assert.equal(spec.files.length, 2);
    assert.deepEqual(spec.files[0]?.source, join(dir, "conf/app.ini"));
    assert.equal(spec.files[0]?.mode, 0o640, "mode defaults to the host file's");
    assert.equal(spec.files[1]?.mode, 0o755);
    assert.match(spec.files[0]?.sha256 ?? "", /^[a-f0-9]{64}$/);
    assert.deepEqual(spec.env, { MODE: "prod", WORKERS: "4" });
    assert.equal(spec.network, "isolated");
    assert.match(spec.sha256, /^[a-f0-9]{64}$/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("workspace: an unknown key is an error naming it (top level and nested)", async () => {
  for (const [yaml, key] of [
    ["image: x\nimgae: y\n", "'imgae'"],
    ["image: x\nresources:\n  memory: 512\n", "'resources.memory'"],
    ["image: x\nfiles:\n  - source: a\n    target: /a\n    owner: root\n", "'files[0].owner'"],
  ] as const) {
    const { dir, path } = await specDir(yaml, { a: "" });
    try {
      await assert.rejects(loadSpec(path), (e: unknown) => {
        assert.ok(isMicroagentError(e));
        assert.equal(e.code, "SPEC_INVALID");
        assert.ok(e.message.includes(`unknown key ${key}`), e.message);
        return true;
      });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }
});

test("workspace: a missing files source says 'source missing' with the resolved path", async () => {
  const { dir, path } = await specDir("image: x\nfiles:\n  - source: conf/typo.ini\n    target: /etc/app.ini\n");
  try {
    await assert.rejects(loadSpec(path), (e: unknown) => {
      assert.ok(isMicroagentError(e));
      assert.equal(e.code, "SPEC_FILE_SOURCE_MISSING");
      assert.equal(e.kind, "not_found");
      assert.match(e.message, /files\[0\]: source missing: conf\/typo.ini/);
      assert.ok(e.message.includes(join(dir, "conf/typo.ini")));
      return true;
    });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("workspace: bad values name the key; YAML errors and non-mappings are clear", async () => {
  for (const [yaml, pattern] of [
    ["image: x\nfiles:\n  - source: a\n    target: relative\n", /files\[0\]\.target: target must be an absolute guest path/],
    ["image: x\nfiles:\n  - source: a\n    target: /a\n    mode: 644\n", /files\[0\]\.mode/],
    ["image: x\nresources:\n  profile: huge\n", /resources\.profile/],
    ["image: x\nenv:\n  1BAD: v\n", /env/],
    ["image: [unclosed\n", /not valid YAML/],
    ["- a\n- b\n", /top level must be a mapping/],
    ["image: x\nimage: y\n", /not valid YAML/],
  ] as const) {
    const { dir, path } = await specDir(yaml, { a: "" });
    try {
      await assert.rejects(loadSpec(path), pattern, yaml);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }
});

test("workspace: flags override the spec field by field (env key by key)", async () => {
  const { dir, path } = await specDir(FULL, { "conf/app.ini": "", "run.sh": "" });
  try {
    const spec = await loadSpec(path);
    const r = resolveCreateInputs({ name: "w", image: "other:2", memoryMib: 1024, env: { MODE: "dev" }, setup: ["true"] }, spec);
    assert.equal(r.image, "other:2");
    assert.deepEqual(r.resources, { profile: "medium", memoryMib: 1024, cpus: 4, sizeMib: 8192 });
    assert.deepEqual(r.env, { MODE: "dev", WORKERS: "4" });
    assert.deepEqual(r.setup, ["true"]);
    assert.equal(r.entrypoint, "/usr/local/bin/run.sh --serve");
    assert.equal(r.hostname, "agent-1");
    const noFlags = resolveCreateInputs({ name: "w" }, spec);
    assert.equal(noFlags.image, "registry.local/busybox:1");
    assert.deepEqual(noFlags.setup, ["mkdir -p /data"]);
    assert.deepEqual(resolveCreateInputs({ name: "w", image: "x" }).resources, { profile: "small", memoryMib: 512, cpus: 2, sizeMib: 1024 });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("workspace: network user is the default (egress guarded); settings need a NIC; no image is an error", () => {
  assert.deepEqual(resolveCreateInputs({ name: "w", image: "x" }).network, { mode: "user", egress: { mode: "guarded" } });
  assert.deepEqual(resolveCreateInputs({ name: "w", image: "x", network: "isolated" }).network, { mode: "isolated" });
  const full = resolveCreateInputs({
    name: "w",
    image: "x",
    addHosts: [parseAddHost("DB.internal:192.168.1.20")],
    dns: parseDnsUpstream("127.0.0.1:5353"),
    egressAllow: [parseEgressAllow("host.microagent.internal:8080"), parseEgressAllow("10.0.0.0/8")],
    forwards: [parsePublish("8080:80"), parsePublish("0.0.0.0:2222:22/tcp")],
  });
  assert.deepEqual(full.network, {
    mode: "user",
    addHosts: [{ name: "db.internal", ip: "192.168.1.20" }],
    dns: { ip: "127.0.0.1", port: 5353 },
    egressAllow: ["host.microagent.internal:8080", "10.0.0.0/8"],
    forwards: [
      { hostIp: "127.0.0.1", hostPort: 8080, guestPort: 80, proto: "tcp" },
      { hostIp: "0.0.0.0", hostPort: 2222, guestPort: 22, proto: "tcp" },
    ],
    egress: { mode: "guarded" },
  });
  assert.throws(
    () => resolveCreateInputs({ name: "w", image: "x", network: "isolated", forwards: [parsePublish("8080:80")] }),
    (e: unknown) => isMicroagentError(e) && e.code === "INVALID_ARGUMENT" && /--publish need a network interface/.test(e.message),
  );
  assert.throws(() => resolveCreateInputs({ name: "w", image: "x", forwards: [parsePublish("8080:80"), parsePublish("8080:81")] }), /published twice/);
  for (const [f, v, re] of [
    [parseAddHost, "nocolon", /not NAME:IP/],
    [parseAddHost, "a:::1", /not a dotted IPv4/],
    [parseAddHost, "host.microagent.internal:1.2.3.4", /cannot redefine/],
    [parseDnsUpstream, "dns.google", /not IPV4/],
    [parseDnsUpstream, "1.1.1.1:70000", /out of range/],
    [parseEgressAllow, "http://api.example.com/", /--egress-allow/],
    [parseEgressPassthrough, "10.0.0.1", /--egress-passthrough/],
    [parsePublish, "80", /not \[HOST_IP:\]HOST_PORT:GUEST_PORT/],
    [parsePublish, "8080:80/udp", /only TCP/],
    [parsePublish, "0:80", /out of range/],
  ] as const) {
    assert.throws(() => (f as (s: string) => unknown)(v), (e: unknown) => isMicroagentError(e) && e.code === "INVALID_ARGUMENT" && re.test(e.message), v);
  }
  assert.throws(() => resolveCreateInputs({ name: "w" }), /no image/);
});

test("workspace: egress settings: flags over the spec field by field, usage errors at create, old manifests read as off", async () => {
  const strict = resolveCreateInputs({
    name: "w",
    image: "x",
    egressAllow: ["api.example.com", ".example.org", "10.0.0.5:5432"],
    egress: { mode: "strict", passthrough: ["pinned.example.com"], upstreamCa: ["rel/ca.pem"], maxConns: 10, maxTotalBytes: 1000, mediation: ["7000=127.0.0.1:9000"], mediationOptional: true },
  }).network;
  assert.deepEqual(strict.egress, {
    mode: "strict",
    passthrough: ["pinned.example.com"],
    upstreamCa: [join(process.cwd(), "rel/ca.pem")],
    maxConns: 10,
    maxTotalBytes: 1000,
    mediation: ["7000=127.0.0.1:9000"],
    mediationOptional: true,
  });
  const o = egressOptionsOf(strict);
  assert.equal(o.mode, "strict");
  assert.deepEqual(o.allow, ["api.example.com", ".example.org", "10.0.0.5:5432"]);
  assert.deepEqual(o.mediation.map((m) => [m.guestPort, m.host, m.port]), [[7000, "127.0.0.1", 9000]]);
  assert.equal(o.mediationRequired, false);
  assert.equal(o.maxConns, 10);
  // A manifest written before mediation existed: user networking, no egress field -> off (never a silent upgrade).
  assert.equal(egressOptionsOf({ mode: "user", egressAllow: ["10.0.0.0/8"] }).mode, "off");
  // off keeps address entries (inside destinations), refuses names and passthrough.
  assert.deepEqual(resolveCreateInputs({ name: "w", image: "x", egress: { mode: "off" }, egressAllow: ["10.0.0.0/8"] }).network.egress, { mode: "off" });
  assert.throws(() => resolveCreateInputs({ name: "w", image: "x", egress: { mode: "off" }, egressAllow: ["api.example.com"] }), (e: unknown) => isMicroagentError(e) && e.code === "EGRESS_ALLOW_CONFLICT");
  assert.throws(() => resolveCreateInputs({ name: "w", image: "x", egress: { mode: "off", passthrough: ["a.test"] } }), (e: unknown) => isMicroagentError(e) && e.code === "EGRESS_ALLOW_CONFLICT");
  assert.throws(() => resolveCreateInputs({ name: "w", image: "x", network: "isolated", egress: { mode: "strict" } }), (e: unknown) => isMicroagentError(e) && e.code === "EGRESS_ALLOW_CONFLICT");
  assert.deepEqual(resolveCreateInputs({ name: "w", image: "x", network: "isolated", egress: { mode: "off" } }).network, { mode: "isolated" });
  assert.throws(() => resolveCreateInputs({ name: "w", image: "x", egress: { mediation: ["7000:1.2.3.4:5"] } }), (e: unknown) => isMicroagentError(e) && e.code === "EGRESS_FLAG_INVALID");

  const dir = await mkdtemp(join(tmpdir(), "spec-egress-"));
  try {
    await writeFile(
      join(dir, "microagent.yaml"),
      "image: x\negress:\n  mode: strict\n  allow: [api.example.com]\n  passthrough: [pinned.example.com]\n  upstreamCa: [ca.pem]\n  maxTotalBytes: 1M\nmediation:\n  targets: [\"7000=127.0.0.1:9000\"]\n  optional: true\n",
    );
    const spec = await loadSpec(join(dir, "microagent.yaml"));
    const n = resolveCreateInputs({ name: "w", egress: { maxConns: 3 } }, spec).network;
    assert.deepEqual(n.egressAllow, ["api.example.com"]);
    assert.deepEqual(n.egress, { mode: "strict", passthrough: ["pinned.example.com"], upstreamCa: [join(dir, "ca.pem")], maxConns: 3, maxTotalBytes: 1_000_000, mediation: ["7000=127.0.0.1:9000"], mediationOptional: true });
    // The flag's mode wins over the spec's; the spec's lists stay.
    assert.equal(resolveCreateInputs({ name: "w", egress: { mode: "guarded" } }, spec).network.egress?.mode, "guarded");
    await writeFile(join(dir, "bad.yaml"), "image: x\negress:\n  mode: strict\n  allow: [a.test]\nnetwork:\n  egressAllow: [b.test]\n");
    await assert.rejects(loadSpec(join(dir, "bad.yaml")), /give it once/);
    await writeFile(join(dir, "typo.yaml"), "image: x\negress:\n  mod: strict\n");
    await assert.rejects(loadSpec(join(dir, "typo.yaml")), /unknown key 'egress.mod'/);
    await writeFile(join(dir, "short.yaml"), "image: x\negress: off\n");
    assert.equal(resolveCreateInputs({ name: "w" }, await loadSpec(join(dir, "short.yaml"))).network.egress?.mode, "off");
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("workspace: boot spec merges image config with overrides like an OCI runtime", () => {
  const image = { Entrypoint: ["/entry"], Cmd: ["--flag"], Env: ["PATH=/bin", "A=1"], WorkingDir: "/app", User: "1000", StopSignal: "15" };
  const plain = mergeBootSpec("my_box", image, { imageCommand: true });
  assert.deepEqual(plain.argv, ["/entry", "--flag"]);
  assert.deepEqual(mergeBootSpec("my_box", image, {}).argv, [], "without a command or imageCommand the workspace boots idle");
  assert.deepEqual(plain.env, { PATH: "/bin", A: "1" });
  assert.equal(plain.cwd, "/app");
  assert.equal(plain.user, "1000");
  assert.equal(plain.stopSignal, "SIGTERM");
  // Numbers are the guest's (Linux) numbers; the first name wins over aliases (6 is SIGABRT, not SIGIOT).
  for (const [given, want] of [["10", "SIGUSR1"], ["6", "SIGABRT"], ["28", "SIGWINCH"], ["quit", "SIGQUIT"], ["SIGRTMIN", "SIGRTMIN"]] as const)
    assert.equal(mergeBootSpec("w", { ...image, StopSignal: given }, {}).stopSignal, want, given);
  assert.equal(plain.hostname, "my-box");
  assert.deepEqual(mergeBootSpec("w", image, { cmd: ["x"] }).argv, ["/entry", "x"]);
  assert.deepEqual(mergeBootSpec("w", image, { entrypoint: "echo hi" }).argv, ["/bin/sh", "-c", "echo hi"], "shell form drops Cmd");
  assert.deepEqual(mergeBootSpec("w", image, { entrypoint: ["/bin/true"] }).argv, ["/bin/true"]);
  assert.equal(mergeBootSpec("w", {}, { env: { A: "2" } }).env.PATH?.includes("/usr/bin"), true, "a default PATH");
});

test("workspace: a YAML alias bomb (and any other parser error) is SPEC_INVALID, not INTERNAL", async () => {
  // 8 levels of ten aliases each: 10^8 nodes once expanded; the parser stops it early.
  let bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n";
  for (let i = 1; i <= 8; i++) {
    const p = String.fromCharCode(96 + i);
    const n = String.fromCharCode(97 + i);
    bomb += `${n}: &${n} [${Array(10).fill(`*${p}`).join(", ")}]\n`;
  }
  for (const yaml of [`image: x\n${bomb}`, "image: x\n  bad: indent\n", "image: *undefined_alias\n"]) {
    const { dir, path } = await specDir(yaml);
    try {
      await assert.rejects(loadSpec(path), (e: unknown) => {
        assert.ok(isMicroagentError(e), String(e));
        assert.equal(e.code, "SPEC_INVALID", `${yaml.slice(0, 40)}: ${e.message}`);
        assert.match(e.message, /not valid YAML/);
        return true;
      });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }
});
