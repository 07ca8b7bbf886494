import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { z } from "zod";
import { readJsonFile, type JsonFileProblem } from "../../src/util/json-file.ts";
import { readAuthFile } from "../../src/image/credentials.ts";
import { isMicroagentError } from "../../src/contract/errors.ts";

const Schema = z.object({ a: z.object({ b: z.string() }) });

test("util-json-file: missing is undefined, bad JSON and a wrong field reach the caller's error with file and field", async () => {
  const dir = await mkdtemp(join(tmpdir(), "json-file-"));
  try {
    const seen: JsonFileProblem[] = [];
    const corrupt = (p: JsonFileProblem) => (seen.push(p), new Error(`corrupt ${p.path}: ${p.problem}`));
    assert.equal(await readJsonFile(join(dir, "none.json"), Schema, corrupt), undefined);
    await writeFile(join(dir, "good.json"), '{"a":{"b":"x"}}');
    assert.deepEqual(await readJsonFile(join(dir, "good.json"), Schema, corrupt), { a: { b: "x" } });
    await writeFile(join(dir, "junk.json"), "{nope");
    await assert.rejects(readJsonFile(join(dir, "junk.json"), Schema, corrupt), /corrupt .*junk\.json: not JSON/);
    assert.equal(seen[0]?.kind, "json");
    assert.ok(seen[0]?.cause instanceof SyntaxError);
    await writeFile(join(dir, "wrong.json"), '{"a":{"b":1}}');
    await assert.rejects(readJsonFile(join(dir, "wrong.json"), Schema, corrupt), /wrong\.json: field a\.b: /);
    assert.equal(seen[1]?.kind, "schema");
    assert.equal(seen[1]?.field, "a.b");
    // A real caller: the credentials file names its path and the field.
    await writeFile(join(dir, "auth.json"), '{"auths":{"r.example":{"auth":5}}}');
    await assert.rejects(readAuthFile(join(dir, "auth.json")), (e: unknown) => isMicroagentError(e) && e.code === "REGISTRY_AUTH_FILE_INVALID" && e.message.includes(join(dir, "auth.json")) && /auths\.r\.example\.auth/.test(e.message));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
