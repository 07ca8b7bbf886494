/**
 * Seeded, deterministic fuzzing of the workspace parsers: the events log (JSON Lines written by us,
 * but read back after crashes and by hand edits) and the spec file (written by users). Whatever the
 * input, they return a value or throw a MicroagentError: never a TypeError, never a hang.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { isMicroagentError } from "../../src/contract/errors.ts";
import { parseEvents } from "../../src/workspace/events.ts";
import { loadSpec } from "../../src/workspace/spec.ts";
import { prng } from "../helpers/prng.ts";

function mutate(input: string, r: () => number): string {
  const chars = [...input];
  const n = 1 + Math.floor(r() * 6);
  const alphabet = ['"', "{", "}", "[", "]", ":", ",", "\n", " ", "-", "#", "&", "*", "!", "|", ">", "\u0000", "é", "0", "a", "\\", "'"];
  for (let i = 0; i < n; i++) {
    const at = Math.floor(r() * (chars.length + 1));
    const op = r();
    if (op < 0.4) chars.splice(at, 1);
    else if (op < 0.8) chars.splice(at, 0, alphabet[Math.floor(r() * alphabet.length)] as string);
    else chars.splice(at, Math.floor(r() * 8), ...chars.slice(Math.floor(r() * chars.length), Math.floor(r() * chars.length)));
  }
  return chars.join("");
}

const EVENTS = [
  { state: "prepared", observedAt: "2026-01-01T00:00:00.000Z", detail: "created", identity: { workspace: "w" } },
  { state: "starting", observedAt: "2026-01-01T00:00:01.000Z", detail: "boot", identity: { workspace: "w", runtimeId: "r" } },
  { state: "failed", observedAt: "2026-01-01T00:00:02.000Z", detail: "why", identity: { workspace: "w", runtimeId: "r", requestId: "q" } },
]
  .map((e) => JSON.stringify(e))
  .join("\n")
  .concat("\n");

test("workspace: fuzzed events logs parse or fail with WORKSPACE_CORRUPT", () => {
  const r = prng(0x5eed);
  for (let i = 0; i < 3000; i++) {
    const input = mutate(EVENTS, r);
    try {
      const events = parseEvents(input);
      for (const e of events) assert.equal(typeof e.state, "string");
    } catch (e) {
      assert.ok(isMicroagentError(e) && e.code === "WORKSPACE_CORRUPT", `iteration ${i}: ${String(e)}\n${JSON.stringify(input)}`);
    }
  }
});

const SPEC = `image: reg/x:1
files:
  - source: a.txt
    target: /etc/a.txt
    mode: "0644"
setup: [ "mkdir -p /d", "true" ]
entrypoint: [ /bin/sh, -c, "echo hi" ]
env: { A: "1", B: 2 }
resources: { profile: tiny, cpus: 1 }
network: isolated
hostname: h
`;

test("workspace: fuzzed spec files load or fail with a spec error", async () => {
  const dir = await mkdtemp(join(tmpdir(), "ws-fuzz-"));
  try {
    await writeFile(join(dir, "a.txt"), "a");
    const path = join(dir, "microagent.yaml");
    const r = prng(0xc0ffee);
    const codes = new Set<string>();
    for (let i = 0; i < 400; i++) {
      const input = mutate(SPEC, r);
      await writeFile(path, input);
      try {
        await loadSpec(path);
        codes.add("ok");
      } catch (e) {
        assert.ok(isMicroagentError(e) && /^SPEC_/.test(e.code), `iteration ${i}: ${String(e)}\n${input}`);
        codes.add(e.code);
      }
    }
    assert.ok(codes.has("ok") && codes.has("SPEC_INVALID"), [...codes].join(","));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
