/**
 * The in-memory handoff of resolved secrets to the supervisor (src/secrets/handoff.ts): the frame
 * (round trip, caps, every malformed shape, byte-at-a-time truncation), the pipe on fd 3 between
 * two real processes (EOF, cap, a writer that dies mid-frame, a writer that never ends), and the
 * spawn itself: the child gets the values on fd 3 only, never in its argv or environment.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { inspect } from "node:util";
import type { Writable } from "node:stream";
import { isMicroagentError, type MicroagentError } from "../../src/contract/errors.ts";
import {
  SECRETS_MAX_COUNT,
  SECRETS_TOTAL_MAX_BYTES,
  SECRET_HANDOFF_FD,
  decodeSecretHandoff,
  encodeSecretHandoff,
  pairSecretHandoff,
  writeSecretHandoff,
} from "../../src/secrets/handoff.ts";
import { parseSecretRef, type SecretRef } from "../../src/secrets/ref.ts";
import { SECRET_MAX_BYTES, SecretValue, type ResolvedSecret } from "../../src/secrets/resolve.ts";
import { spawnSupervisor } from "../../src/supervisor/spawn.ts";
import { pathsForDir } from "../../src/workspace/paths.ts";

const VALUE = `hv-${randomBytes(24).toString("hex")}`;
const HANDOFF = new URL("../../src/secrets/handoff.ts", import.meta.url).pathname;

function ref(name: string, source = `env:${name}_SRC`): SecretRef {
  return parseSecretRef(`${name}=${source}`, { baseDir: "/" });
}
function resolved(name: string, value: string | Buffer): ResolvedSecret {
  return { ref: ref(name), value: new SecretValue(Buffer.isBuffer(value) ? Buffer.from(value) : Buffer.from(value)) };
}

/** A failure with `code` whose every rendering is free of VALUE. */
function expectFailure(fn: () => unknown, code: string, re?: RegExp): MicroagentError {
  try {
    fn();
  } catch (e) {
    assert.ok(isMicroagentError(e), String(e));
    assert.equal(e.code, code, e.message);
    const all = [e.message, e.remediation, JSON.stringify(e.toJSON()), JSON.stringify(e.details ?? {}), inspect(e, { depth: 5 })].join("\n");
    assert.ok(!all.includes(VALUE), `the value leaked into: ${all}`);
    if (re) assert.match(e.message, re);
    return e;
  }
  assert.fail(`expected ${code}`);
}

test("secrets-handoff: a frame round-trips names and exact bytes, in order; the frame is zeroed after decoding", () => {
  const binary = randomBytes(SECRET_MAX_BYTES);
  const frame = encodeSecretHandoff([resolved("API_KEY", VALUE), resolved("_B1", binary), resolved("C", "x")]);
  assert.equal(frame.subarray(0, 4).toString(), "MAS1");
  assert.equal(frame.readUInt16BE(4), 3);
  const copy = Buffer.from(frame);
  const out = decodeSecretHandoff(frame);
  assert.deepEqual(
    out.map((e) => e.name),
    ["API_KEY", "_B1", "C"],
  );
  assert.equal(out[0]!.value.reveal().toString(), VALUE);
  assert.ok(out[1]!.value.reveal().equals(binary));
  assert.equal(out[2]!.value.reveal().toString(), "x");
  assert.ok(frame.every((b) => b === 0), "the decoded frame is wiped");
  assert.equal(String(out[0]!.value), "[redacted]");
  // An empty frame (a workspace with no secrets never sends one, but it is well-formed).
  assert.deepEqual(decodeSecretHandoff(encodeSecretHandoff([])), []);
  assert.ok(copy.includes(Buffer.from(VALUE)), "sanity: the frame did hold the value");
});

test("secrets-handoff: encoding refuses more than 64 secrets and more than 512 KiB together, naming sizes not values", () => {
  const many = Array.from({ length: SECRETS_MAX_COUNT + 1 }, (_, i) => resolved(`S${i}`, VALUE));
  expectFailure(() => encodeSecretHandoff(many), "SECRET_TOO_LARGE", /65 secrets, at most 64/);
  const big = Array.from({ length: Math.ceil(SECRETS_TOTAL_MAX_BYTES / SECRET_MAX_BYTES) + 1 }, (_, i) => resolved(`B${i}`, Buffer.alloc(SECRET_MAX_BYTES, VALUE)));
  const e = expectFailure(() => encodeSecretHandoff(big), "SECRET_TOO_LARGE", /over the 524288-byte limit of one boot/);
  assert.equal(e.kind, "resource_exhausted");
  // Exactly at the limits is fine.
  const atLimit = Array.from({ length: SECRETS_TOTAL_MAX_BYTES / SECRET_MAX_BYTES }, (_, i) => resolved(`L${i}`, Buffer.alloc(SECRET_MAX_BYTES, 7)));
  assert.equal(decodeSecretHandoff(encodeSecretHandoff(atLimit)).length, 8);
  assert.equal(decodeSecretHandoff(encodeSecretHandoff(many.slice(0, SECRETS_MAX_COUNT))).length, 64);
});

test("secrets-handoff: every truncation of a frame fails closed, byte by byte, without echoing a value", () => {
  const whole = encodeSecretHandoff([resolved("A", VALUE), resolved("B", `${VALUE}-2`)]);
  for (let n = 0; n < whole.length; n++) {
    expectFailure(() => decodeSecretHandoff(Buffer.from(whole.subarray(0, n))), "SECRET_HANDOFF_FAILED", /malformed/);
  }
  const extra = Buffer.concat([whole, Buffer.from([0])]);
  expectFailure(() => decodeSecretHandoff(extra), "SECRET_HANDOFF_FAILED", /1 bytes after the last secret/);
});

test("secrets-handoff: malformed fields are refused by name: magic, count, names, duplicates, lengths", () => {
  const entry = (name: Buffer | string, value: Buffer | string, declared?: number) => {
    const n = Buffer.isBuffer(name) ? name : Buffer.from(name, "latin1");
    const v = Buffer.isBuffer(value) ? value : Buffer.from(value);
    const h = Buffer.alloc(4);
    h.writeUInt32BE(declared ?? v.length);
    return Buffer.concat([Buffer.from([n.length]), n, h, v]);
  };
  const frame = (count: number, ...entries: Buffer[]) => {
    const h = Buffer.from("MAS1\0\0", "latin1");
    h.writeUInt16BE(count, 4);
    return Buffer.concat([h, ...entries]);
  };
  assert.equal(decodeSecretHandoff(frame(1, entry("OK", VALUE)))[0]!.name, "OK");
  expectFailure(() => decodeSecretHandoff(Buffer.from(`MAS2\0\0`)), "SECRET_HANDOFF_FAILED", /bad magic/);
  expectFailure(() => decodeSecretHandoff(frame(65)), "SECRET_HANDOFF_FAILED", /65 secrets, at most 64/);
  for (const bad of ["../x", "a/b", "1A", "A-B", "A.B", "A B", "\u00e9", "A\u0000"]) {
    expectFailure(() => decodeSecretHandoff(frame(1, entry(bad, VALUE))), "SECRET_HANDOFF_FAILED", /not a valid secret name/);
  }
  expectFailure(() => decodeSecretHandoff(frame(1, entry("", VALUE))), "SECRET_HANDOFF_FAILED", /name length 0/);
  expectFailure(() => decodeSecretHandoff(frame(1, entry("N".repeat(65), VALUE))), "SECRET_HANDOFF_FAILED", /name length 65/);
  expectFailure(() => decodeSecretHandoff(frame(2, entry("D", VALUE), entry("D", VALUE))), "SECRET_HANDOFF_FAILED", /D appears twice/);
  expectFailure(() => decodeSecretHandoff(frame(1, entry("E", ""))), "SECRET_HANDOFF_FAILED", /value length 0/);
  expectFailure(() => decodeSecretHandoff(frame(1, entry("H", VALUE, SECRET_MAX_BYTES + 1))), "SECRET_HANDOFF_FAILED", /value length 65537/);
  // A declared length past the end (the reader never allocates from it).
  expectFailure(() => decodeSecretHandoff(frame(1, entry("T", VALUE, 60_000))), "SECRET_HANDOFF_FAILED", /truncated/);
  // Values over the total (the frame itself under its cap), and a frame over its cap.
  const eightBig = Array.from({ length: 8 }, (_, i) => entry(`X${i}`, Buffer.alloc(SECRET_MAX_BYTES, 1)));
  expectFailure(() => decodeSecretHandoff(frame(9, ...eightBig, entry("Y", Buffer.alloc(1000, 1)))), "SECRET_HANDOFF_FAILED", /the values add up to more than 524288 bytes/);
  expectFailure(() => decodeSecretHandoff(frame(9, ...eightBig, entry("Y", Buffer.alloc(SECRET_MAX_BYTES, 1)))), "SECRET_HANDOFF_FAILED", /over the \d+-byte limit/);
});

test("secrets-handoff: values pair with the manifest's references by name and order only", () => {
  const refs = [ref("A"), ref("B")];
  const ok = pairSecretHandoff(refs, decodeSecretHandoff(encodeSecretHandoff([resolved("A", VALUE), resolved("B", "b")])));
  assert.deepEqual(
    ok.map((s) => [s.ref.name, s.ref.source.kind, s.value.reveal().toString()]),
    [
      ["A", "env", VALUE],
      ["B", "env", "b"],
    ],
  );
  const swapped = decodeSecretHandoff(encodeSecretHandoff([resolved("B", "b"), resolved("A", VALUE)]));
  expectFailure(() => pairSecretHandoff(refs, swapped), "SECRET_HANDOFF_FAILED", /handed secrets \[B, A\] but the manifest names \[A, B\]/);
  assert.equal(swapped[1]!.value.reveal().every((b) => b === 0), true, "a refused handoff wipes what it got");
  expectFailure(() => pairSecretHandoff(refs, []), "SECRET_HANDOFF_FAILED");
});

/** A child Node process reading fd 3 with readSecretHandoff; prints {names, sha256 of each value} or {code, message}. */
function reader(opts: { maxBytes?: number; timeoutMs?: number } = {}) {
  const script = `
    import { readSecretHandoff } from ${JSON.stringify(HANDOFF)};
    import { createHash } from "node:crypto";
    try {
      const got = await readSecretHandoff(3, ${JSON.stringify(opts)});
      console.log(JSON.stringify({ names: got.map((e) => e.name), sha: got.map((e) => createHash("sha256").update(e.value.reveal()).digest("hex")) }));
    } catch (e) {
      console.log(JSON.stringify({ code: e.code, message: e.message }));
    }`;
  const child = spawn(process.execPath, ["--input-type=module", "-e", script], { stdio: ["ignore", "pipe", "inherit", "pipe"] });
  let out = "";
  child.stdout!.on("data", (d: Buffer) => (out += d.toString()));
  const done = new Promise<{ names?: string[]; sha?: string[]; code?: string; message?: string }>((resolve) =>
    child.on("close", () => resolve(JSON.parse(out.trim() || "{}"))),
  );
  const kill = setTimeout(() => child.kill("SIGKILL"), 30_000);
  void done.finally(() => clearTimeout(kill));
  return { child, pipe: child.stdio[3] as Writable, done };
}

const sha = (s: string | Buffer) => createHash("sha256").update(s).digest("hex");

test("secrets-handoff: over a real pipe: read to EOF; a cap, a writer dying mid-frame or never ending fail closed", async () => {
  const big = randomBytes(200_000); // larger than a pipe buffer: the writer waits for the reader
  const ok = reader();
  await writeSecretHandoff(ok.pipe, encodeSecretHandoff([resolved("A", VALUE), resolved("B", big.subarray(0, SECRET_MAX_BYTES)), resolved("C", big.subarray(SECRET_MAX_BYTES, 2 * SECRET_MAX_BYTES))]));
  const r = await ok.done;
  assert.deepEqual(r.names, ["A", "B", "C"]);
  assert.deepEqual(r.sha, [sha(VALUE), sha(big.subarray(0, SECRET_MAX_BYTES)), sha(big.subarray(SECRET_MAX_BYTES, 2 * SECRET_MAX_BYTES))]);

  const capped = reader({ maxBytes: 100 });
  await writeSecretHandoff(capped.pipe, encodeSecretHandoff([resolved("A", Buffer.alloc(1000, 1))])).catch(() => {});
  const c = await capped.done;
  assert.equal(c.code, "SECRET_HANDOFF_FAILED");
  assert.match(c.message ?? "", /more than 100 bytes/);

  const cut = reader();
  const whole = encodeSecretHandoff([resolved("A", VALUE)]);
  cut.pipe.end(whole.subarray(0, whole.length - 3));
  const t = await cut.done;
  assert.equal(t.code, "SECRET_HANDOFF_FAILED");
  assert.match(t.message ?? "", /truncated/);
  assert.ok(!(t.message ?? "").includes(VALUE.slice(0, 20)));

  const empty = reader();
  empty.pipe.end();
  assert.match((await empty.done).message ?? "", /shorter than the 6-byte header/);

  const stalled = reader({ timeoutMs: 300 });
  stalled.pipe.write(whole.subarray(0, 10)); // never ended
  const s = await stalled.done;
  assert.equal(s.code, "SECRET_HANDOFF_FAILED");
  assert.match(s.message ?? "", /nothing complete arrived within 300 ms/);
  stalled.pipe.destroy();
});

test("secrets-handoff: spawnSupervisor hands the frame on fd 3 only: not in the child's argv or environment", async () => {
  const dir = mkdtempSync(join(tmpdir(), "secrets-spawn-"));
  try {
    const wsDir = join(dir, "workspaces", "w1");
    const { mkdirSync } = await import("node:fs");
    mkdirSync(wsDir, { recursive: true });
    const report = join(dir, "report.json");
    // A stand-in supervisor: reports its own argv, environ and what fd 3 carried, then exits.
    const fake = join(dir, "fake-supervisor.mjs");
    writeFileSync(
      fake,
      `#!${process.execPath}
import { readFileSync, writeFileSync } from "node:fs";
import { readSecretHandoff } from ${JSON.stringify(HANDOFF)};
const environ = readFileSync("/proc/self/environ", "latin1");
const cmdline = readFileSync("/proc/self/cmdline", "latin1");
const got = await readSecretHandoff(Number(process.env.MICROAGENT_SECRETS_FD));
writeFileSync(${JSON.stringify(report)}, JSON.stringify({ environ, cmdline, fd: process.env.MICROAGENT_SECRETS_FD, names: got.map((e) => e.name), values: got.map((e) => e.value.reveal().toString()) }));
`,
    );
    chmodSync(fake, 0o755);
    const paths = pathsForDir(wsDir);
    const frame = encodeSecretHandoff([resolved("API_KEY", VALUE)]);
    const { pid, handoff } = spawnSupervisor(paths, { supervisorPath: fake, env: { PATH: process.env.PATH ?? "" }, secrets: frame });
    assert.ok(pid > 0);
    await handoff;
    assert.ok(frame.every((b) => b === 0), "the host's copy of the frame is wiped once written");
    let body = "";
    for (let i = 0; i < 300 && !body; i++) {
      try {
        body = readFileSync(report, "utf8");
      } catch {
        await new Promise((r) => setTimeout(r, 20));
      }
    }
    const r = JSON.parse(body);
    assert.equal(r.fd, String(SECRET_HANDOFF_FD));
    assert.deepEqual(r.names, ["API_KEY"]);
    assert.deepEqual(r.values, [VALUE]);
    assert.ok(!r.environ.includes(VALUE), "the value is not in the supervisor's environment");
    assert.ok(!r.cmdline.includes(VALUE), "nor in its argv");
    assert.ok(!readFileSync(paths.supervisorLog, "utf8").includes(VALUE), "nor in supervisor.log");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
