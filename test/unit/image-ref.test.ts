import { test } from "node:test";
import assert from "node:assert/strict";
import { formatImageRef, normalizeRegistryName, parseImageRef, apiHost } from "../../src/image/ref.ts";
import { isMicroagentError } from "../../src/contract/errors.ts";

const D = `sha256:${"a".repeat(64)}`;

const valid: Array<[string, { registry: string; repository: string; tag?: string; digest?: string }, string]> = [
  ["alpine", { registry: "docker.io", repository: "library/alpine", tag: "latest" }, "docker.io/library/alpine:latest"],
  ["alpine:3.20", { registry: "docker.io", repository: "library/alpine", tag: "3.20" }, "docker.io/library/alpine:3.20"],
  ["library/alpine", { registry: "docker.io", repository: "library/alpine", tag: "latest" }, "docker.io/library/alpine:latest"],
  ["user/app:v1", { registry: "docker.io", repository: "user/app", tag: "v1" }, "docker.io/user/app:v1"],
  ["docker.io/alpine", { registry: "docker.io", repository: "library/alpine", tag: "latest" }, "docker.io/library/alpine:latest"],
  ["index.docker.io/library/alpine", { registry: "docker.io", repository: "library/alpine", tag: "latest" }, "docker.io/library/alpine:latest"],
  ["ghcr.io/org/team/app:1.2.3", { registry: "ghcr.io", repository: "org/team/app", tag: "1.2.3" }, "ghcr.io/org/team/app:1.2.3"],
  ["localhost/app", { registry: "localhost", repository: "app", tag: "latest" }, "localhost/app:latest"],
  ["localhost:5000/app:x", { registry: "localhost:5000", repository: "app", tag: "x" }, "localhost:5000/app:x"],
  ["127.0.0.1:5000/a/b", { registry: "127.0.0.1:5000", repository: "a/b", tag: "latest" }, "127.0.0.1:5000/a/b:latest"],
  ["[::1]:5000/a", { registry: "[::1]:5000", repository: "a", tag: "latest" }, "[::1]:5000/a:latest"],
  [`alpine@${D}`, { registry: "docker.io", repository: "library/alpine", digest: D }, `docker.io/library/alpine@${D}`],
  [`ghcr.io/o/a:1@${D}`, { registry: "ghcr.io", repository: "o/a", tag: "1", digest: D }, `ghcr.io/o/a:1@${D}`],
  ["my-registry.example.com:443/a_b/c.d:tag_1", { registry: "my-registry.example.com:443", repository: "a_b/c.d", tag: "tag_1" }, "my-registry.example.com:443/a_b/c.d:tag_1"],
];

test("image-ref: docker-style references parse and format canonically", () => {
  for (const [input, want, canonical] of valid) {
    const r = parseImageRef(input);
    assert.equal(r.registry, want.registry, input);
    assert.equal(r.repository, want.repository, input);
    assert.equal(r.tag, want.tag, input);
    assert.equal(r.digest, want.digest, input);
    assert.equal(formatImageRef(r), canonical, input);
    assert.deepEqual(parseImageRef(canonical), r, `round trip ${input}`);
  }
});

const invalid: Array<[string, RegExp]> = [
  ["", /empty/],
  ["Alpine", /lowercase/],
  ["alpine:", /tag/],
  ["alpine:-x", /tag/],
  ["alpine@sha256:abc", /digest/],
  [`alpine@md5:${"a".repeat(32)}`, /digest/],
  ["a//b", /not a valid/],
  ["bad host!/x", /whitespace|valid/],
  ["ghcr.io/", /missing/],
  ["a/-b", /not a valid/],
  [`a:${"x".repeat(129)}`, /tag/],
];

test("image-ref: invalid references fail with IMAGE_REF_INVALID naming the problem", () => {
  for (const [input, why] of invalid) {
    assert.throws(
      () => parseImageRef(input),
      (e: unknown) => isMicroagentError(e) && e.code === "IMAGE_REF_INVALID" && e.kind === "permanent" && why.test(e.message),
      input,
    );
  }
});

test("image-ref: docker.io's API host and registry name normalization", () => {
  assert.equal(apiHost("docker.io"), "registry-1.docker.io");
  assert.equal(apiHost("ghcr.io"), "ghcr.io");
  assert.equal(normalizeRegistryName("https://index.docker.io/v1/"), "docker.io");
  assert.equal(normalizeRegistryName("GHCR.io"), "ghcr.io");
  assert.equal(normalizeRegistryName("127.0.0.1:5000"), "127.0.0.1:5000");
  assert.throws(() => normalizeRegistryName("not a host"), /invalid registry/);
});
