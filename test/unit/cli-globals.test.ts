import { test } from "node:test";
import assert from "node:assert/strict";
import { splitGlobalFlags, suggest, GlobalFlagError } from "../../src/cli/globals.ts";

const noTail = () => false;
const runTail = (sub: string, rest: readonly string[]) => sub === "run" && rest.length >= 2;

test("cli-globals: --json before or after the subcommand is the same", () => {
  const a = splitGlobalFlags(["--json", "doctor"], {}, noTail, false);
  const b = splitGlobalFlags(["doctor", "--json"], {}, noTail, false);
  assert.equal(a.globals.format, "json");
  assert.equal(b.globals.format, "json");
  assert.deepEqual(a.rest, ["doctor"]);
  assert.deepEqual(b.rest, ["doctor"]);
});

test("cli-globals: flags with values accept both spellings", () => {
  const r = splitGlobalFlags(["doctor", "--backend", "linux-qemu", "--state-dir=/tmp/x", "--arch", "x86_64"], {}, noTail, false);
  assert.equal(r.globals.backend, "linux-qemu");
  assert.equal(r.globals.stateDir, "/tmp/x");
  assert.equal(r.globals.arch, "amd64");
  assert.deepEqual(r.rest, ["doctor"]);
});

test("cli-globals: precedence is flag > MICROAGENT_OUTPUT > ax mode > text", () => {
  assert.equal(splitGlobalFlags(["x"], {}, noTail, true).globals.format, "text");
  assert.equal(splitGlobalFlags(["x"], { MICROAGENT_OUTPUT: "json" }, noTail, false).globals.format, "json");
  assert.equal(splitGlobalFlags(["x", "--text"], { MICROAGENT_OUTPUT: "json" }, noTail, false).globals.format, "text");
  assert.equal(splitGlobalFlags(["x"], { MICROAGENT_MODE: "ax" }, noTail, false).globals.format, "json");
  assert.equal(splitGlobalFlags(["x", "--mode", "ax", "--output", "text"], {}, noTail, false).globals.format, "text");
  assert.equal(splitGlobalFlags(["x", "--mode", "ax", "--output", "text"], {}, noTail, false).globals.mode, "ax");
});

test("cli-globals: nothing after -- is a global flag", () => {
  const r = splitGlobalFlags(["exec", "ws", "--", "ls", "--json"], {}, noTail, false);
  assert.equal(r.globals.format, "text");
  assert.deepEqual(r.rest, ["exec", "ws", "--", "ls", "--json"]);
});

test("cli-globals: the guest command tail of run keeps its flags", () => {
  const r = splitGlobalFlags(["run", "alpine", "mytool", "--json"], {}, runTail, false);
  assert.equal(r.globals.format, "text");
  assert.deepEqual(r.rest, ["run", "alpine", "mytool", "--json"]);
  const before = splitGlobalFlags(["--json", "run", "alpine", "true"], {}, runTail, false);
  assert.equal(before.globals.format, "json");
});

test("cli-globals: bad values are usage errors with a near-miss suggestion", () => {
  assert.throws(() => splitGlobalFlags(["--backend", "linux-qem", "doctor"], {}, noTail, false), (e: unknown) => {
    assert.ok(e instanceof GlobalFlagError);
    assert.match(e.message, /did you mean linux-qemu\?/);
    return true;
  });
  assert.throws(() => splitGlobalFlags(["--output", "jsn"], {}, noTail, false), /did you mean json\?/);
  assert.throws(() => splitGlobalFlags(["--mode", "agent"], {}, noTail, false), /expected one of ux, ax/);
  assert.throws(() => splitGlobalFlags(["--json", "--text"], {}, noTail, false), /contradict/);
  assert.throws(() => splitGlobalFlags(["--state-dir"], {}, noTail, false), /argument missing/);
});

test("cli-globals: colour only on a terminal, in text mode, without NO_COLOR/--no-color", () => {
  assert.equal(splitGlobalFlags(["x"], {}, noTail, true).globals.color, true);
  assert.equal(splitGlobalFlags(["x"], {}, noTail, false).globals.color, false);
  assert.equal(splitGlobalFlags(["x"], { NO_COLOR: "" }, noTail, true).globals.color, false);
  assert.equal(splitGlobalFlags(["x", "--no-color"], {}, noTail, true).globals.color, false);
  assert.equal(splitGlobalFlags(["x", "--json"], {}, noTail, true).globals.color, false);
});

test("cli-globals: suggest finds near misses only", () => {
  assert.equal(suggest("linux-kvn", ["linux-kvm", "apple-vf"]), " (did you mean linux-kvm?)");
  assert.equal(suggest("zzzzzz", ["linux-kvm", "apple-vf"]), "");
});
