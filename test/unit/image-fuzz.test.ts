/**
 * Seeded, deterministic fuzzing of the image area's parsers: references, WWW-Authenticate headers,
 * manifests/indexes, and the docker-style registry name normalizer. Each must either succeed or throw
 * a MicroagentError (never a TypeError, never hang).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { isMicroagentError } from "../../src/contract/errors.ts";
import { parseWwwAuthenticate } from "../../src/image/challenge.ts";
import { parseManifest } from "../../src/image/manifest.ts";
import { formatImageRef, normalizeRegistryName, parseImageRef } from "../../src/image/ref.ts";
import { prng } from "../helpers/prng.ts";

const ALPHABET = "abcAZ09._-/:@ \"=,\\sha256[]:\u00e9\u0000";
function randomString(r: () => number, max: number, alphabet = ALPHABET): string {
  const n = Math.floor(r() * max);
  let s = "";
  for (let i = 0; i < n; i++) s += alphabet[Math.floor(r() * alphabet.length)];
  return s;
}

function mutate(r: () => number, s: string): string {
  const chars = [...s];
  const edits = 1 + Math.floor(r() * 4);
  for (let i = 0; i < edits; i++) {
    const pos = Math.floor(r() * (chars.length + 1));
    const op = r();
    if (op < 0.33) chars.splice(pos, 1);
    else if (op < 0.66) chars.splice(pos, 0, ALPHABET[Math.floor(r() * ALPHABET.length)] as string);
    else chars[pos] = ALPHABET[Math.floor(r() * ALPHABET.length)] as string;
  }
  return chars.join("");
}

const onlyOurErrors = (fn: () => unknown, input: string) => {
  try {
    fn();
  } catch (e) {
    assert.ok(isMicroagentError(e), `unexpected ${(e as Error)?.name}: ${(e as Error)?.message} for ${JSON.stringify(input)}`);
  }
};

test("image-fuzz: references parse or fail cleanly, and canonical forms round-trip", () => {
  const r = prng(0xc0ffee);
  const seeds = ["alpine", "ghcr.io/o/a:1", `a@sha256:${"b".repeat(64)}`, "localhost:5000/x/y:z", "[::1]:5/q"];
  for (let i = 0; i < 5000; i++) {
    const input = i % 2 ? randomString(r, 40) : mutate(r, seeds[i % seeds.length] as string);
    let parsed;
    try {
      parsed = parseImageRef(input);
    } catch (e) {
      assert.ok(isMicroagentError(e), `ref ${JSON.stringify(input)}: ${(e as Error).message}`);
      continue;
    }
    const canonical = formatImageRef(parsed);
    assert.deepEqual(parseImageRef(canonical), parsed, `round trip of ${JSON.stringify(input)}`);
    onlyOurErrors(() => normalizeRegistryName(input), input);
  }
});

test("image-fuzz: WWW-Authenticate never throws and keeps params with their challenge", () => {
  const r = prng(42);
  const seed = 'Bearer realm="https://a/t",service="s",scope="repository:x:pull"';
  for (let i = 0; i < 5000; i++) {
    const input = i % 3 === 0 ? randomString(r, 80) : mutate(r, seed);
    const out = parseWwwAuthenticate(input);
    for (const c of out) assert.equal(typeof c.scheme, "string");
  }
});

test("image-fuzz: manifests parse or fail with a MicroagentError", () => {
  const r = prng(7);
  const d = `sha256:${"c".repeat(64)}`;
  const seeds = [
    JSON.stringify({ schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json", config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: d, size: 1 }, layers: [{ mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: d, size: 2 }] }),
    JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: "application/vnd.oci.image.manifest.v1+json", digest: d, size: 3, platform: { os: "linux", architecture: "amd64" } }] }),
  ];
  for (let i = 0; i < 3000; i++) {
    const input = mutate(r, seeds[i % 2] as string);
    onlyOurErrors(() => parseManifest(Buffer.from(input), i % 3 ? undefined : "application/vnd.oci.image.index.v1+json", "fuzz"), input);
  }
});
