import { test } from "node:test";
import assert from "node:assert/strict";
import { isMicroagentError } from "../../src/contract/errors.ts";
import {
  SecretRefSchema,
  assertSecretDelivery,
  formatSecretRef,
  mergeSecretRefs,
  normalizeHost,
  parseSecretRef,
  tryParseSecretRef,
  workspaceSecretRefs,
  type SecretRef,
} from "../../src/secrets/ref.ts";

const base = { baseDir: "/home/me/proj" };

function reason(text: string): string {
  const r = tryParseSecretRef(text, base);
  assert.equal(r.ok, false, `${text} should not parse`);
  return r.ok ? "" : r.reason;
}

test("secrets-ref: each source kind parses into the stored form; file paths and cmd directories become absolute", () => {
  assert.deepEqual(parseSecretRef("TOKEN=env:GITHUB_TOKEN", base), { name: "TOKEN", source: { kind: "env", var: "GITHUB_TOKEN" }, delivery: "file", hosts: [] });
  assert.deepEqual(parseSecretRef("KEY=file:keys/api.txt", base).source, { kind: "file", path: "/home/me/proj/keys/api.txt" });
  assert.deepEqual(parseSecretRef("KEY=file:/etc/key", base).source, { kind: "file", path: "/etc/key" });
  assert.deepEqual(parseSecretRef("PW=cmd:pass show web/x | head -1", base).source, { kind: "cmd", command: "pass show web/x | head -1", cwd: "/home/me/proj" });
  // '=' after the first one belongs to the source.
  assert.deepEqual(parseSecretRef("A=cmd:echo a=b", base).source, { kind: "cmd", command: "echo a=b", cwd: "/home/me/proj" });
  for (const t of ["TOKEN=env:X", "_a1=file:/x", "K=cmd:true"]) assert.ok(SecretRefSchema.safeParse(parseSecretRef(t, base)).success, t);
});

test("secrets-ref: @HOST,... marks swap delivery with normalised hosts (case, trailing dot, IDNA, duplicates)", () => {
  const r = parseSecretRef("GH=env:GH_TOKEN@API.GitHub.com.,uploads.github.com,api.github.com", base);
  assert.equal(r.delivery, "swap");
  assert.deepEqual(r.hosts, ["api.github.com", "uploads.github.com"]);
  assert.deepEqual(parseSecretRef("X=env:X@bücher.de", base).hosts, ["xn--bcher-kva.de"]);
  assert.deepEqual(parseSecretRef("X=env:X@127.0.0.1,localhost,[::1]", base).hosts, ["127.0.0.1", "localhost", "[::1]"]);
  assert.deepEqual(parseSecretRef("X=env:X@::1", base).hosts, ["[::1]"]);
  // The LAST '@' starts the hosts: '@' inside a command is fine before it.
  const c = parseSecretRef("X=cmd:op read op://a@b@api.example.com", base);
  assert.equal(c.source.kind === "cmd" && c.source.command, "op read op://a@b");
  assert.deepEqual(c.hosts, ["api.example.com"]);
  // A trailing '@' means "no hosts": the way to write a source containing '@' with file delivery.
  const f = parseSecretRef("X=file:./a@b@", base);
  assert.deepEqual(f, { name: "X", source: { kind: "file", path: "/home/me/proj/a@b" }, delivery: "file", hosts: [] });
  assert.equal(formatSecretRef(f), "X=file:/home/me/proj/a@b@");
  assert.deepEqual(parseSecretRef(formatSecretRef(f), base), f);
  assert.deepEqual(parseSecretRef(formatSecretRef(r), base), r);
});

test("secrets-ref: host normalisation refuses what is not plainly a host", () => {
  for (const bad of ["", ".", "a..b", "x.com:443", "a/b", "%41.com", "*.example.com", "a_b.com", "-a.com", "a-.com", "ex ample.com", "a\u0000b", `${"a".repeat(64)}.com`, "[::1", "[1.2.3.4]", "user@host"]) {
    assert.equal(normalizeHost(bad), undefined, JSON.stringify(bad));
  }
  assert.equal(normalizeHost("Example.COM."), "example.com");
  assert.equal(normalizeHost("0x7f.1"), "127.0.0.1", "numeric forms as the URL parser canonicalises them");
});

test("secrets-ref: every malformed form is a clear usage error (exit 2) that never echoes an unrecognised source", () => {
  assert.match(reason("TOKEN"), /expected NAME=SOURCE/);
  assert.match(reason("=env:X"), /no name/);
  assert.match(reason("1TOKEN=env:X"), /'1TOKEN' is not a valid secret name/);
  assert.match(reason("MY-TOKEN=env:X"), /not a valid secret name/);
  assert.match(reason(`${"A".repeat(65)}=env:X`), /longer than 64/);
  assert.match(reason("T=env:"), /env: must name an environment variable/);
  assert.match(reason("T=env:A-B"), /env:'A-B' must name/);
  assert.match(reason("T=file:"), /file: needs a path/);
  assert.match(reason("T=cmd:   "), /cmd: needs a command/);
  assert.match(reason(`T=cmd:${"x".repeat(5000)}`), /longer than 4096/);
  assert.match(reason("T=env:X@a.com,,b.com"), /empty host/);
  assert.match(reason("T=env:X@a.com:443"), /'a\.com:443' after '@' is not a host/);
  assert.match(reason("T=env:X@*.a.com"), /not a host/);
  assert.match(reason("T=env:X@\u001b[2J"), /\\u001b/, "control characters are escaped");
  // A value typed where a source belongs: refused without echoing it.
  const leaked = "sk-live-4f9a2b7c1d";
  for (const t of [`TOKEN=${leaked}`, `TOKEN=ENV:${leaked}`, `TOKEN=Bearer ${leaked}`, `TOKEN=${leaked}@api.x.com`]) {
    const m = reason(t);
    assert.match(m, /must start with env:, file: or cmd:/);
    assert.ok(!m.includes(leaked), m);
  }
  try {
    parseSecretRef(`TOKEN=${leaked}`, { ...base, what: "--secret" });
    assert.fail("should throw");
  } catch (e) {
    assert.ok(isMicroagentError(e));
    assert.equal(e.code, "USAGE");
    assert.match(e.message, /^--secret: secret TOKEN:/);
    assert.ok(!JSON.stringify(e.toJSON()).includes(leaked));
  }
});

test("secrets-ref: a trailing '@' with no hosts is file delivery", () => {
  const r = tryParseSecretRef("T=env:X@", base);
  assert.ok(r.ok);
  assert.equal(r.ok && r.ref.delivery, "file");
});

test("secrets-ref: the stored schema holds no value and refuses inconsistent records", () => {
  const ok: SecretRef = { name: "A", source: { kind: "env", var: "A" }, delivery: "swap", hosts: ["a.com"] };
  assert.ok(SecretRefSchema.safeParse(ok).success);
  assert.equal(SecretRefSchema.safeParse({ ...ok, value: "x" }).success, false, "strict: no value field");
  assert.equal(SecretRefSchema.safeParse({ ...ok, hosts: [] }).success, false, "swap needs hosts");
  assert.equal(SecretRefSchema.safeParse({ ...ok, delivery: "file" }).success, false, "file has none");
  assert.equal(SecretRefSchema.safeParse({ ...ok, hosts: ["A.com"] }).success, false, "hosts normalised");
  assert.equal(SecretRefSchema.safeParse({ ...ok, source: { kind: "file", path: "rel" } }).success, false, "absolute paths");
  assert.equal(SecretRefSchema.safeParse({ ...ok, source: { kind: "cmd", command: "x" } }).success, false, "cmd has a cwd");
});

test("secrets-ref: flags replace spec secrets by name; swap needs user network with guarded/strict egress", () => {
  const spec = [parseSecretRef("A=env:A", base), parseSecretRef("B=env:B", base)];
  const flags = [parseSecretRef("B=file:/b", base), parseSecretRef("C=env:C", base)];
  assert.deepEqual(
    mergeSecretRefs(spec, flags).map(formatSecretRef),
    ["A=env:A", "B=file:/b", "C=env:C"],
  );
  const swap = [parseSecretRef("GH=env:GH@api.github.com", base)];
  assertSecretDelivery(spec, { mode: "isolated" });
  assertSecretDelivery(swap, { mode: "user", egress: "guarded" });
  assertSecretDelivery(swap, { mode: "user", egress: "strict" });
  for (const network of [{ mode: "isolated" }, { mode: "user" }, { mode: "user", egress: "off" }]) {
    assert.throws(
      () => assertSecretDelivery(swap, network),
      (e: unknown) => isMicroagentError(e) && e.code === "USAGE" && /swap delivery of secret GH \(@api\.github\.com\) needs --network user with guarded or strict egress/.test(e.message),
    );
  }
  assert.throws(() => workspaceSecretRefs([], swap, { mode: "isolated" }), /has no network for the mediator/);
  assert.throws(() => workspaceSecretRefs([], [{ name: "A", source: { kind: "env", var: "A" }, delivery: "file", hosts: [], value: "x" }], { mode: "isolated" }), /invalid secret reference/);
  assert.deepEqual(workspaceSecretRefs(spec, undefined, { mode: "isolated" }), spec);
});
