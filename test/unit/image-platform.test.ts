import { test } from "node:test";
import assert from "node:assert/strict";
import { selectPlatform } from "../../src/image/platform.ts";
import type { Descriptor } from "../../src/image/types.ts";
import { isMicroagentError } from "../../src/contract/errors.ts";

const d = (n: number, platform?: Descriptor["platform"]): Descriptor => ({
  mediaType: "application/vnd.oci.image.manifest.v1+json",
  digest: `sha256:${String(n).repeat(64).slice(0, 64)}`,
  size: 100,
  ...(platform ? { platform } : {}),
});

const list = [
  d(1, { os: "linux", architecture: "amd64" }),
  d(2, { os: "linux", architecture: "arm", variant: "v7" }),
  d(3, { os: "linux", architecture: "arm64", variant: "v8" }),
  d(4, { os: "unknown", architecture: "unknown" }),
  d(5, { os: "windows", architecture: "amd64" }),
  d(6),
];

test("image-platform: picks the linux entry for the architecture, aliases accepted", () => {
  assert.equal(selectPlatform(list, { os: "linux", architecture: "amd64" }, "x").digest, list[0]?.digest);
  assert.equal(selectPlatform(list, { os: "linux", architecture: "x86_64" }, "x").digest, list[0]?.digest);
  assert.equal(selectPlatform(list, { os: "linux", architecture: "arm64" }, "x").digest, list[2]?.digest);
  assert.equal(selectPlatform(list, { os: "linux", architecture: "aarch64" }, "x").digest, list[2]?.digest);
});

test("image-platform: arm64 without a variant matches v8, exact variant preferred", () => {
  const l = [d(7, { os: "linux", architecture: "arm64" }), d(8, { os: "linux", architecture: "arm64", variant: "v8" })];
  assert.equal(selectPlatform(l, { os: "linux", architecture: "arm64", variant: "v8" }, "x").digest, l[1]?.digest);
  assert.equal(selectPlatform(l, { os: "linux", architecture: "arm64" }, "x").digest, l[0]?.digest);
  assert.equal(selectPlatform([l[0] as Descriptor], { os: "linux", architecture: "arm64", variant: "v8" }, "x").digest, l[0]?.digest);
});

test("image-platform: no match lists what is available and skips attestations", () => {
  assert.throws(
    () => selectPlatform(list.slice(0, 2), { os: "linux", architecture: "arm64" }, "docker.io/library/x:1"),
    (e: unknown) =>
      isMicroagentError(e) &&
      e.code === "IMAGE_PLATFORM_UNAVAILABLE" &&
      e.kind === "unsupported" &&
      /no linux\/arm64 image; available: linux\/amd64, linux\/arm\/v7/.test(e.message),
  );
  assert.throws(() => selectPlatform([list[3] as Descriptor, list[5] as Descriptor], { os: "linux", architecture: "amd64" }, "x"), /available: none/);
});
