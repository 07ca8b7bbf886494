import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { tmpdir } from "node:os";
import type { Command } from "commander";
import { collectEnvFile, parseEnvFile, refuseDockerFlags, REFUSED_DOCKER_FLAGS } from "../../src/cli/commands/workspace-flags.ts";
import { runCli } from "../helpers/cli.ts";
import { runCommand } from "../../src/cli/commands/run.ts";
import { execCommand } from "../../src/cli/commands/exec.ts";

test("env-file: docker's format: verbatim values, KEY alone from the host (left out when unset), comments and blanks skipped", () => {
  const text = '\uFEFF# comment\n\n  A=1\nB="quoted" \nC=x=y\nFROM_HOST\nNOT_ON_HOST\nEMPTY=\r\n   # indented comment\n';
  assert.deepEqual(parseEnvFile(text, "f", { FROM_HOST: "h v" }), { A: "1", B: '"quoted" ', C: "x=y", FROM_HOST: "h v", EMPTY: "" });
});

test("env-file: a line without a name, or with a name that is not one, is an error naming the file and line", () => {
  assert.throws(() => parseEnvFile("A=1\n=x\n", "my.env"), /my.env line 2: no variable name before '='/);
  assert.throws(() => parseEnvFile("BAD KEY=1\n", "my.env"), /my.env line 1: 'BAD KEY' is not a valid environment variable name/);
});

test("env-file: repeated files merge in order, the later one winning; a missing file says so", () => {
  const dir = mkdtempSync(join(tmpdir(), "envfile-"));
  writeFileSync(join(dir, "a"), "X=a\nY=a\n");
  writeFileSync(join(dir, "b"), "Y=b\n");
  assert.deepEqual(collectEnvFile(join(dir, "b"), collectEnvFile(join(dir, "a"))), { X: "a", Y: "b" });
  assert.throws(() => collectEnvFile(join(dir, "none")), /cannot be read \(no such file\)/);
});

test("refused docker flags: each one given is a USAGE error with its reason; none given passes", () => {
  refuseDockerFlags("run", { name: "x" });
  for (const f of REFUSED_DOCKER_FLAGS) {
    assert.throws(
      () => refuseDockerFlags("run", { [f.key]: true }),
      (e: Error & { code?: string; remediation?: string }) => e.code === "USAGE" && e.message.includes(f.why) && e.message.startsWith("run does not take docker's "),
      f.flags,
    );
  }
});

test("refused docker flags: the option keys match what commander stores (a typo would let the flag through silently)", async () => {
  const cases: string[][] = [["--privileged"], ["--pid", "host"], ["--ipc", "host"], ["--uts", "host"], ["--userns", "host"], ["--device", "/dev/x"], ["--gpus", "all"], ["--cap-add", "X"], ["--cap-drop", "X"], ["--security-opt", "x"], ["-v", "/a:/b"], ["--volume", "/a:/b"], ["--mount", "type=bind"], ["--restart", "always"]];
  for (const args of cases) {
    const r = await runCli(["run", ...args, "img"]);
    assert.equal(r.code, 2, `${args.join(" ")}: ${r.err}`);
    assert.match(r.err, /run does not take docker's/, args.join(" "));
  }
});

test("help: docker's flags come first, in docker users' order, and refused ones are hidden", () => {
  const order = (c: Command) => c.options.filter((o) => !(o as { hidden?: boolean }).hidden).map((o) => o.long);
  assert.deepEqual(order(runCommand()).slice(0, 10), ["--interactive", "--tty", "--detach", "--env", "--env-file", "--workdir", "--user", "--entrypoint", "--name", "--rm"]);
  assert.deepEqual(order(execCommand()).slice(0, 6), ["--interactive", "--tty", "--env", "--env-file", "--workdir", "--user"]);
  assert.ok(!order(runCommand()).includes("--privileged"));
});
