import { test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { PLACEHOLDER_LENGTH, PLACEHOLDER_PREFIX, isPlaceholder, makePlaceholder, swapHeaders, swapSecretsFor, type SwapSecret } from "../../src/secrets/placeholder.ts";
import { parseSecretRef, workspaceSecretRefs } from "../../src/secrets/ref.ts";
import { planSecretDelivery } from "../../src/secrets/delivery.ts";
import { SecretValue, resolveSecrets } from "../../src/secrets/resolve.ts";

const GH_VALUE = `ghp_${randomBytes(16).toString("hex")}`;
const OAI_VALUE = `sk-${randomBytes(16).toString("hex")}`;

function secret(name: string, value: string, hosts: string[]): SwapSecret {
  return { name, token: makePlaceholder(), hosts, value: new SecretValue(Buffer.from(value)) };
}

const b64 = (s: string) => Buffer.from(s, "latin1").toString("base64");
const unb64 = (s: string) => Buffer.from(s, "base64").toString("latin1");

test("secrets-placeholder: tokens are prefixed, 32 random bytes of base32, distinct", () => {
  const seen = new Set<string>();
  for (let i = 0; i < 200; i++) {
    const t = makePlaceholder();
    assert.equal(t.length, PLACEHOLDER_LENGTH);
    assert.equal(PLACEHOLDER_LENGTH, PLACEHOLDER_PREFIX.length + 52);
    assert.match(t, /^masecret_[a-z2-7]{52}$/);
    assert.ok(isPlaceholder(t));
    seen.add(t);
  }
  assert.equal(seen.size, 200);
  assert.equal(isPlaceholder(makePlaceholder().toUpperCase()), false);
  assert.equal(isPlaceholder(`${makePlaceholder()}a`), false);
});

test("secrets-placeholder: swapSecretsFor gives a token to each swap secret only", async () => {
  const refs = ["GH=env:GH@api.github.com", "F=env:F"].map((t) => parseSecretRef(t, { baseDir: "/" }));
  const swap = swapSecretsFor(await resolveSecrets(refs, { env: { GH: GH_VALUE, F: "f" } }));
  assert.deepEqual(swap.map((s) => [s.name, s.hosts]), [["GH", ["api.github.com"]]]);
  assert.ok(isPlaceholder(swap[0]!.token));
  assert.equal(swap[0]!.value.reveal().toString(), GH_VALUE);
});

test("secrets-placeholder: a bound host gets the value in Bearer, plain and custom headers; the audit holds no value", () => {
  const gh = secret("GH", GH_VALUE, ["api.github.com"]);
  const r = swapHeaders(
    [
      ["Host", "api.github.com"],
      ["Authorization", `Bearer ${gh.token}`],
      ["X-Api-Key", gh.token],
      ["Cookie", `a=1; tok=${gh.token}; b=2`],
      ["Accept", "*/*"],
    ],
    [gh],
    "API.GitHub.com.",
  );
  assert.deepEqual(r.headers, [
    ["Host", "api.github.com"],
    ["Authorization", `Bearer ${GH_VALUE}`],
    ["X-Api-Key", GH_VALUE],
    ["Cookie", `a=1; tok=${GH_VALUE}; b=2`],
    ["Accept", "*/*"],
  ]);
  assert.deepEqual(r.events, [
    { type: "secret_swap", name: "GH", host: "api.github.com", header: "authorization" },
    { type: "secret_swap", name: "GH", host: "api.github.com", header: "x-api-key" },
    { type: "secret_swap", name: "GH", host: "api.github.com", header: "cookie" },
  ]);
  assert.ok(!JSON.stringify(r.events).includes(GH_VALUE));
  assert.ok(!JSON.stringify(r.events).includes(gh.token));
});

test("secrets-placeholder: an unbound host never gets the value; each attempt is audited as denied", () => {
  const gh = secret("GH", GH_VALUE, ["api.github.com"]);
  const headers: Array<[string, string]> = [
    ["Authorization", `Bearer ${gh.token}`],
    ["X-Forward", `${gh.token},${gh.token}`],
  ];
  for (const host of ["evil.example", "github.com", "api.github.com.evil.example", "api.github.co", "", "api.github.com:443", "not a host"]) {
    const r = swapHeaders(headers, [gh], host);
    assert.deepEqual(r.headers, headers, host);
    assert.ok(!JSON.stringify(r).includes(GH_VALUE), host);
    assert.deepEqual(r.events.map((e) => [e.type, e.name, e.header]), [["secret_swap_denied", "GH", "authorization"], ["secret_swap_denied", "GH", "x-forward"]], host);
  }
  assert.equal(swapHeaders(headers, [gh], "Evil.Example.").events[0]!.host, "evil.example");
});

test("secrets-placeholder: Basic credentials are decoded, swapped (user or password) and re-encoded; scheme case is free", () => {
  const gh = secret("GH", GH_VALUE, ["api.github.com"]);
  for (const scheme of ["Basic", "basic", "BASIC", "bAsIc"]) {
    const pw = swapHeaders([["authorization", `${scheme} ${b64(`x-access-token:${gh.token}`)}`]], [gh], "api.github.com");
    const [, value] = pw.headers[0]!;
    assert.ok(value.startsWith(`${scheme} `), value);
    assert.equal(unb64(value.slice(scheme.length + 1)), `x-access-token:${GH_VALUE}`);
    assert.deepEqual(pw.events, [{ type: "secret_swap", name: "GH", host: "api.github.com", header: "authorization" }]);
  }
  const user = swapHeaders([["Proxy-Authorization", `Basic ${b64(`${gh.token}:`)}`]], [gh], "api.github.com");
  assert.equal(unb64(user.headers[0]![1].slice(6)), `${GH_VALUE}:`);
  // Unpadded base64 is read too.
  const unpadded = b64(`u:${gh.token}`).replace(/=+$/, "");
  assert.equal(unb64(swapHeaders([["Authorization", `Basic ${unpadded}`]], [gh], "api.github.com").headers[0]![1].slice(6)), `u:${GH_VALUE}`);
  // Unbound: the original header, byte for byte, and a denial.
  const original = `Basic ${b64(`u:${gh.token}`)}`;
  const denied = swapHeaders([["Authorization", original]], [gh], "evil.example");
  assert.deepEqual(denied.headers, [["Authorization", original]]);
  assert.deepEqual(denied.events.map((e) => e.type), ["secret_swap_denied"]);
  // Bearer, any case.
  for (const scheme of ["bearer", "BEARER", "Bearer"]) {
    assert.equal(swapHeaders([["Authorization", `${scheme} ${gh.token}`]], [gh], "api.github.com").headers[0]![1], `${scheme} ${GH_VALUE}`);
  }
  // Basic in a header that is not an authorization header is opaque text (no decoding).
  const other = `Basic ${b64(`u:${gh.token}`)}`;
  assert.deepEqual(swapHeaders([["X-Other", other]], [gh], "api.github.com").headers, [["X-Other", other]]);
});

test("secrets-placeholder: several secrets in one request: each swapped only where bound", () => {
  const gh = secret("GH", GH_VALUE, ["api.github.com"]);
  const oai = secret("OAI", OAI_VALUE, ["api.openai.com"]);
  const r = swapHeaders([["Authorization", `Bearer ${oai.token}`], ["X-GH", gh.token], ["X-Both", `${gh.token} ${oai.token}`]], [gh, oai], "api.openai.com");
  assert.deepEqual(r.headers, [["Authorization", `Bearer ${OAI_VALUE}`], ["X-GH", gh.token], ["X-Both", `${gh.token} ${OAI_VALUE}`]]);
  assert.deepEqual(r.events.map((e) => [e.type, e.name, e.header]), [
    ["secret_swap", "OAI", "authorization"],
    ["secret_swap_denied", "GH", "x-gh"],
    ["secret_swap_denied", "GH", "x-both"],
    ["secret_swap", "OAI", "x-both"],
  ]);
  // A secret bound to two hosts works on both.
  const two = secret("T", "tv", ["a.example", "b.example"]);
  assert.equal(swapHeaders([["X", two.token]], [two], "b.example").headers[0]![1], "tv");
});

test("secrets-placeholder: a split, mangled, extended or foreign token is left alone and not audited", () => {
  const gh = secret("GH", GH_VALUE, ["api.github.com"]);
  const t = gh.token;
  const cases: Array<[string, string]> = [
    ["X-Half-1", t.slice(0, 30)],
    ["X-Half-2", t.slice(30)],
    ["X-Upper", t.toUpperCase()],
    ["X-Cap", `M${t.slice(1)}`],
    ["X-Short", t.slice(0, -1)],
    ["X-Long", `${t}a`],
    ["X-Prefixed", `a${t}`],
    ["X-Glued", `${t}_x`],
    ["X-Changed", `${t.slice(0, -1)}${t.endsWith("a") ? "b" : "a"}`],
    ["X-Foreign", makePlaceholder()],
    ["X-Spaced", `${t.slice(0, 20)} ${t.slice(20)}`],
    ["Authorization", `Basic ${b64(`u:${t.slice(0, -2)}`)}`],
  ];
  const r = swapHeaders(cases, [gh], "api.github.com");
  assert.deepEqual(r.headers, cases);
  assert.deepEqual(r.events, []);
  // Punctuation around a token is a boundary: quoted, in a URL, after '='.
  const ok = swapHeaders([["X", `"${t}"`], ["Y", `https://x/?k=${t}&z=1`]], [gh], "api.github.com");
  assert.deepEqual(ok.headers, [["X", `"${GH_VALUE}"`], ["Y", `https://x/?k=${GH_VALUE}&z=1`]]);
});

test("secrets-placeholder: a value that contains a token is not swapped again; non-ASCII value bytes survive as latin1", () => {
  const a = secret("A", "x", ["h.example"]);
  const b: SwapSecret = { name: "B", token: makePlaceholder(), hosts: ["h.example"], value: new SecretValue(Buffer.from(`pre-${a.token}`)) };
  const r = swapHeaders([["X", b.token]], [a, b], "h.example");
  assert.equal(r.headers[0]![1], `pre-${a.token}`);
  assert.deepEqual(r.events.map((e) => e.name), ["B"]);
  const u: SwapSecret = { name: "U", token: makePlaceholder(), hosts: ["h.example"], value: new SecretValue(Buffer.from("clé", "utf8")) };
  const out = swapHeaders([["X", u.token]], [u], "h.example").headers[0]![1];
  assert.deepEqual(Buffer.from(out, "latin1"), Buffer.from("clé", "utf8"), "the bytes on the wire are the value's bytes");
});

test("secrets-placeholder: headers without tokens pass through unchanged (same strings, same order, duplicates kept)", () => {
  const gh = secret("GH", GH_VALUE, ["api.github.com"]);
  const headers: Array<[string, string]> = [["A", "1"], ["a", "2"], ["Authorization", "Basic dTpw"], ["Authorization", "Bearer abc"], ["X", "masecret_"]];
  const r = swapHeaders(headers, [gh], "api.github.com");
  assert.deepEqual(r.headers, headers);
  assert.deepEqual(r.events, []);
  assert.deepEqual(swapHeaders([], [], "x").headers, []);
});

test("secrets-placeholder: the delivery plan: file secrets carry the value, swap secrets a placeholder in the file and the variable", async () => {
  const refs = ["F=env:F", "GH=env:GH@api.github.com"].map((t) => parseSecretRef(t, { baseDir: "/" }));
  const plan = planSecretDelivery(await resolveSecrets(refs, { env: { F: "file-value", GH: GH_VALUE } }));
  assert.deepEqual(plan.files.map((f) => f.name), ["F", "GH"]);
  assert.equal(plan.files[0]!.content.reveal().toString(), "file-value");
  const token = plan.files[1]!.content.reveal().toString();
  assert.ok(isPlaceholder(token));
  assert.deepEqual(plan.env, { GH: token });
  assert.deepEqual(plan.swap.map((s) => [s.name, s.token, s.value.reveal().toString()]), [["GH", token, GH_VALUE]]);
  assert.ok(!JSON.stringify(plan).includes(GH_VALUE) && !JSON.stringify(plan).includes("file-value"));
  const again = planSecretDelivery(await resolveSecrets(refs, { env: { F: "f", GH: GH_VALUE } }));
  assert.notEqual(again.env.GH, token, "a new token per boot");
});

test("secrets-placeholder: a swap secret may not shadow a variable the workload sets", () => {
  const swap = [parseSecretRef("GH=env:GH@api.github.com", { baseDir: "/" })];
  assert.throws(() => workspaceSecretRefs([], swap, { mode: "user", egress: "guarded" }, ["GH"]), /swap secret GH would set the variable of the same name/);
  assert.equal(workspaceSecretRefs([], swap, { mode: "user", egress: "guarded" }, ["OTHER"]).length, 1);
  assert.equal(workspaceSecretRefs([], [parseSecretRef("GH=env:GH", { baseDir: "/" })], { mode: "isolated" }, ["GH"]).length, 1, "file delivery sets no variable");
});
