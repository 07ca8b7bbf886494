/**
 * Seeded fuzz of the whole rootfs builder against hostile layers (reliability campaign D1): random
 * bytes in every tar header field and PAX record (names, link names, xattr keys and values, uid/gid,
 * modes, sizes, device numbers), mixed with debugfs and shell injection fragments aimed at a canary
 * dir. The builds run in a worker process under `strace -f -e trace=execve`, so the test sees every
 * program started by the builder or by mke2fs/debugfs: only those two may run, and nothing may
 * appear in the canary dir or under the run's /tmp prefix. Bounded: 1000 iterations or 45 s, whichever comes first (about 5 s here).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdirSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { scratchDir } from "../helpers/scratch.ts";
import { resolveE2fsTools } from "../../src/rootfs/tools.ts";

const execFileP = promisify(execFile);
const SEED = Number(process.env.ROOTFS_FUZZ_SEED ?? 0xd1d1);

test("rootfs-fuzz: random header and PAX bytes never run a helper other than mke2fs/debugfs, never write outside the build", async () => {
  const scratch = scratchDir("rootfs-fuzz");
  const canary = join(scratch, "canary");
  mkdirSync(canary);
  const tmpPrefix = `/tmp/microagent-fuzz-${randomBytes(4).toString("hex")}-`;
  const log = join(scratch, "exec.log");
  const worker = new URL("../helpers/rootfs-fuzz-worker.ts", import.meta.url).pathname;
  const config = { seed: SEED, iterations: 1000, budgetMs: 45_000, scratch, canary, tmpPrefix };
  await execFileP("strace", ["-V"]).catch((e: Error) => assert.fail(`this test needs strace (run scripts/setup): ${e.message}`));
  const { stdout } = await execFileP(
    "strace",
    ["-f", "-qq", "--seccomp-bpf", "-e", "trace=execve,execveat", "-o", log, process.execPath, worker, JSON.stringify(config)],
    { timeout: 120_000, maxBuffer: 16 * 1024 * 1024 },
  );
  const counts = JSON.parse(stdout.trim().split("\n").pop() as string) as Record<string, number>;
  const tools = resolveE2fsTools({});
  // Every exec: the worker itself (node), then only mke2fs and debugfs, each successful.
  const execs = readFileSync(log, "utf8")
    .split("\n")
    .filter((l) => /\bexecve(at)?\(/.test(l))
    .map((l) => /execve(?:at)?\("([^"]*)".*= (-?\d+)/.exec(l));
  const programs = new Map<string, number>();
  for (const m of execs) {
    assert.ok(m, "every exec line parses");
    assert.equal(m[2], "0", `a failed exec attempt: ${m[0]}`);
    programs.set(m[1]!, (programs.get(m[1]!) ?? 0) + 1);
  }
  const allowed = new Set([process.execPath, tools.mke2fs, tools.debugfs]);
  const strangers = [...programs.keys()].filter((p) => !allowed.has(p));
  assert.deepEqual(strangers, [], `programs other than node/mke2fs/debugfs ran: ${JSON.stringify([...programs])}`);
  assert.deepEqual(readdirSync(canary), []);
  assert.deepEqual(
    readdirSync("/tmp").filter((n) => `/tmp/${n}`.startsWith(tmpPrefix)),
    [],
    "nothing appeared under the run's /tmp prefix",
  );
  assert.deepEqual(readdirSync(scratch).sort(), ["canary", "exec.log"], "no work dir or image left behind");
  // The fuzz reached the whole pipeline, not only the parser.
  assert.ok(counts.iterations! >= 100, JSON.stringify(counts));
  assert.ok(counts.built! >= 30, `at least some layers built an image: ${JSON.stringify(counts)}`);
  assert.ok((programs.get(tools.debugfs) ?? 0) >= 10, `debugfs replays ran: ${JSON.stringify([...programs])}`);
  assert.ok((counts.ROOTFS_LAYER_UNSAFE ?? 0) > 0, JSON.stringify(counts));
  console.log(`rootfs-fuzz seed ${SEED}: ${JSON.stringify(counts)}; execs ${JSON.stringify([...programs])}`);
});
