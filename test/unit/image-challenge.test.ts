import { test } from "node:test";
import assert from "node:assert/strict";
import { parseWwwAuthenticate } from "../../src/image/challenge.ts";
import { isLoopbackHost, plainHttpAllowed, insecureRegistriesFromEnv, RegistryClient } from "../../src/image/client.ts";
import { statusError, transportError } from "../../src/image/http-errors.ts";

test("image-challenge: Bearer challenge with quoted params", () => {
  const c = parseWwwAuthenticate('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull"');
  assert.deepEqual(c, [
    { scheme: "bearer", params: { realm: "https://auth.docker.io/token", service: "registry.docker.io", scope: "repository:library/alpine:pull" } },
  ]);
});

test("image-challenge: commas and escaped quotes inside values, odd spacing, case", () => {
  const c = parseWwwAuthenticate('BEARER  Realm = "https://a/t?x=1,2" , Scope="repository:a/b:pull,push", error="x\\"y"');
  assert.equal(c.length, 1);
  assert.equal(c[0]?.scheme, "bearer");
  assert.equal(c[0]?.params.realm, "https://a/t?x=1,2");
  assert.equal(c[0]?.params.scope, "repository:a/b:pull,push");
  assert.equal(c[0]?.params.error, 'x"y');
});

test("image-challenge: several challenges, unquoted values, Basic", () => {
  const c = parseWwwAuthenticate('Basic realm="r1", Bearer realm=https://x/token,service=reg');
  assert.deepEqual(
    c.map((x) => x.scheme),
    ["basic", "bearer"],
  );
  assert.equal(c[0]?.params.realm, "r1");
  assert.equal(c[1]?.params.realm, "https://x/token");
  assert.equal(c[1]?.params.service, "reg");
});

test("image-challenge: garbage never throws", () => {
  for (const h of ["", "   ", "=", '"', "Bearer realm=\"unterminated", ",,,", "Bearer ,realm=x", "\u0000\u0001"]) {
    assert.doesNotThrow(() => parseWwwAuthenticate(h), h);
  }
  assert.deepEqual(parseWwwAuthenticate(""), []);
});

test("image-challenge: plain HTTP only for loopback or listed registries", () => {
  for (const h of ["127.0.0.1:5000", "127.1.2.3", "localhost", "localhost:8080", "[::1]:5000", "::1"]) assert.ok(isLoopbackHost(h), h);
  for (const h of ["10.0.0.1:5000", "example.com", "128.0.0.1", "localhost.example.com"]) assert.ok(!isLoopbackHost(h), h);
  assert.ok(plainHttpAllowed("reg.lan:5000", ["reg.lan:5000"]));
  assert.ok(!plainHttpAllowed("reg.lan:5000", ["reg.lan"]));
  assert.deepEqual(insecureRegistriesFromEnv({ MICROAGENT_INSECURE_REGISTRIES: " A.lan:5000, ,b:1" }), ["a.lan:5000", "b:1"]);
});

test("image-challenge: registry statuses map to kinds at one place", () => {
  const table: Array<[number, string, string, boolean]> = [
    [401, "REGISTRY_UNAUTHORIZED", "policy_denied", false],
    [403, "REGISTRY_DENIED", "policy_denied", false],
    [404, "IMAGE_NOT_FOUND", "not_found", false],
    [429, "REGISTRY_RATE_LIMITED", "transient", true],
    [500, "REGISTRY_UNAVAILABLE", "transient", true],
    [503, "REGISTRY_UNAVAILABLE", "transient", true],
    [408, "REGISTRY_UNAVAILABLE", "transient", true],
    [418, "REGISTRY_PROTOCOL", "permanent", false],
  ];
  for (const [status, code, kind, retryable] of table) {
    const e = statusError(status, { what: "manifest x", registry: "r", body: '{"errors":[{"code":"DENIED","message":"nope"}]}' });
    assert.equal(e.code, code, String(status));
    assert.equal(e.kind, kind);
    assert.equal(e.retryable, retryable);
    assert.match(e.message, /DENIED: nope/);
  }
  assert.match(statusError(401, { what: "m", registry: "ghcr.io" }).remediation, /registry login ghcr\.io/);
  assert.equal(statusError(404, { what: "blob", registry: "r", blob: true }).code, "IMAGE_BLOB_MISSING");
  const refused = transportError(Object.assign(new Error("connect ECONNREFUSED"), { code: "ECONNREFUSED" }), "r", "m");
  assert.equal(refused.code, "REGISTRY_UNAVAILABLE");
  assert.equal(refused.retryable, true);
  assert.equal(transportError(Object.assign(new Error("self-signed certificate"), { code: "DEPTH_ZERO_SELF_SIGNED_CERT" }), "r", "m").code, "REGISTRY_PROTOCOL");
});

test("image-challenge: the client speaks HTTPS except to loopback and listed registries", () => {
  assert.equal(new RegistryClient("ghcr.io", { insecureRegistries: [] }).baseUrl, "https://ghcr.io");
  assert.equal(new RegistryClient("docker.io", { insecureRegistries: [] }).baseUrl, "https://registry-1.docker.io");
  assert.equal(new RegistryClient("127.0.0.1:5000", { insecureRegistries: [] }).baseUrl, "http://127.0.0.1:5000");
  assert.equal(new RegistryClient("reg.lan:5000", { insecureRegistries: ["reg.lan:5000"] }).baseUrl, "http://reg.lan:5000");
});
