import { test } from "node:test";
import assert from "node:assert/strict";
import { openSync, closeSync, readFileSync, rmSync, statSync, writeSync, ftruncateSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { scratchDir } from "../helpers/scratch.ts";
import { DEFAULT_MAX_EXPANSION_RATIO, DEFAULT_MAX_UNCOMPRESSED_BYTES, resolveDecompressionLimits } from "../../src/rootfs/build.ts";
import { copySparse } from "../../src/rootfs/copy.ts";
import { isMicroagentError } from "../../src/contract/errors.ts";

test("rootfs-limits: decompression bounds come from the options, else the environment, else 16 GiB / 200x", () => {
  assert.deepEqual(resolveDecompressionLimits({}, {}), { maxUncompressedBytes: DEFAULT_MAX_UNCOMPRESSED_BYTES, maxExpansionRatio: DEFAULT_MAX_EXPANSION_RATIO });
  assert.equal(DEFAULT_MAX_UNCOMPRESSED_BYTES, 16 * 1024 ** 3);
  assert.deepEqual(resolveDecompressionLimits({}, { MICROAGENT_MAX_UNCOMPRESSED_GIB: "2.5", MICROAGENT_MAX_EXPANSION_RATIO: "1000" }), {
    maxUncompressedBytes: 2.5 * 1024 ** 3,
    maxExpansionRatio: 1000,
  });
  assert.deepEqual(resolveDecompressionLimits({ maxUncompressedBytes: 5, maxExpansionRatio: 3 }, { MICROAGENT_MAX_UNCOMPRESSED_GIB: "2" }), { maxUncompressedBytes: 5, maxExpansionRatio: 3 });
  for (const env of [{ MICROAGENT_MAX_UNCOMPRESSED_GIB: "lots" }, { MICROAGENT_MAX_EXPANSION_RATIO: "-1" }, { MICROAGENT_MAX_EXPANSION_RATIO: "0" }]) {
    try {
      resolveDecompressionLimits({}, env);
      assert.fail(`accepted ${JSON.stringify(env)}`);
    } catch (e) {
      assert.ok(isMicroagentError(e) && e.code === "INVALID_ARGUMENT", String(e));
      assert.match(e.message, /MICROAGENT_MAX_/);
    }
  }
});

test("rootfs-limits: copySparse keeps holes and bytes (data at the start, middle and an unaligned end)", async () => {
  const dir = scratchDir("rootfs-copy");
  mkdirSync(dir, { recursive: true });
  const src = join(dir, "src");
  const fd = openSync(src, "w");
  const size = 64 * 1024 * 1024 + 123;
  ftruncateSync(fd, size);
  writeSync(fd, Buffer.from("head"), 0, 4, 0);
  writeSync(fd, Buffer.alloc(10_000, 9), 0, 10_000, 33 * 1024 * 1024 + 5);
  writeSync(fd, Buffer.from("tail"), 0, 4, size - 4);
  closeSync(fd);
  const dst = join(dir, "dst");
  const method = await copySparse(src, dst);
  const st = statSync(dst);
  assert.equal(st.size, size);
  assert.ok(readFileSync(src).equals(readFileSync(dst)), "same bytes");
  if (method === "sparse") assert.ok(st.blocks * 512 < 1024 * 1024, `allocated ${st.blocks * 512} bytes`);
  await assert.rejects(copySparse(src, dst), /EEXIST/, "never overwrites");
  rmSync(dir, { recursive: true, force: true });
});
