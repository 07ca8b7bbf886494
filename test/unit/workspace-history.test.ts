import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { appendFile, mkdtemp, rm, truncate, writeFile } from "node:fs/promises";
import { createHash } from "node:crypto";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { createWorkspace, type CreateProviders } from "../../src/workspace/create.ts";
import { followEvents, followLogs, readLogs } from "../../src/workspace/history.ts";
import { transition } from "../../src/workspace/state.ts";
import { writeRuntime } from "../../src/workspace/runtime.ts";
import { processStartTime } from "../../src/util/process.ts";
import { main } from "../../src/cli/main.ts";

const sha = (s: string) => createHash("sha256").update(s).digest("hex");

async function providers(dir: string): Promise<CreateProviders> {
  await writeFile(join(dir, "k"), "k");
  await writeFile(join(dir, "i"), "i");
  await writeFile(join(dir, "b"), "");
  await truncate(join(dir, "b"), 1024 * 1024);
  const digest = `sha256:${"c".repeat(64)}`;
  return {
    resolveImage: async (ref) => ({ image: {}, info: { ref, resolvedRef: `x@${digest}`, manifestDigest: digest, config: {} } }),
    ensureKernel: async () => ({ kernel: { path: join(dir, "k"), sha256: sha("k") }, initramfs: { path: join(dir, "i"), sha256: sha("i") } }),
    ensureBaseRootfs: async () => ({ path: join(dir, "b"), sha256: "0".repeat(64), sizeMib: 1, cacheHit: true }),
  };
}

function sink() {
  const chunks: Buffer[] = [];
  const stream = new Writable({
    write(chunk, _e, cb) {
      chunks.push(Buffer.from(chunk));
      cb();
    },
  });
  return { stream, text: () => Buffer.concat(chunks).toString("utf8") };
}

test("workspace: logs -f streams the serial log and ends when the workspace stops; events -f --json prints JSON lines", async () => {
  const dir = await mkdtemp(join(tmpdir(), "ws-hist-"));
  const sup = spawn("sleep", ["60"], { stdio: "ignore" });
  try {
    const stateDir = join(dir, "state");
    const { paths } = await createWorkspace({ name: "h", image: "reg/x:1", stateDir, providers: await providers(dir) });
    assert.equal(await readLogs("h", { stateDir }), "");
    await transition(paths, "starting", { identity: { runtimeId: "rt" } });
    await writeRuntime(paths, {
      runtimeId: "rt",
      supervisorPid: sup.pid as number,
      supervisorStartTime: processStartTime(sup.pid as number),
      backend: "linux-qemu",
      accel: "tcg",
      sockets: { control: paths.controlSocket },
      startedAt: new Date().toISOString(),
    });
    await transition(paths, "running", { identity: { runtimeId: "rt" } });
    await appendFile(paths.serialLog, "line 1\n");

    const got: string[] = [];
    const logs = (async () => {
      for await (const chunk of followLogs("h", { stateDir, pollMs: 10 })) got.push(chunk.toString());
    })();
    const out = sink();
    const err = sink();
    const events = main(["--state-dir", stateDir, "--json", "events", "h", "-f"], { stdout: out.stream, stderr: err.stream });

    await new Promise((r) => setTimeout(r, 100));
    await appendFile(paths.serialLog, "line 2\n");
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(got.join(""), "line 1\nline 2\n", "follow is still running while the workspace runs");
    await transition(paths, "stopping");
    await appendFile(paths.serialLog, "powering off\n");
    await transition(paths, "stopped", { detail: "workload exited 0" });
    await logs;
    assert.equal(got.join(""), "line 1\nline 2\npowering off\n");
    assert.equal(await events, 0, err.text());
    process.exitCode = undefined;
    const lines = out.text().trim().split("\n").map((l) => JSON.parse(l));
    assert.deepEqual(lines.map((e) => e.state), ["prepared", "starting", "running", "stopping", "stopped"]);
    assert.equal(lines.at(-1).detail, "workload exited 0");

    // The library generator too, with an abort.
    const ac = new AbortController();
    const seen: string[] = [];
    const f = (async () => {
      for await (const e of followEvents("h", { stateDir, signal: ac.signal, pollMs: 10 })) seen.push(e.state);
    })();
    // Aborted once it has caught up (bounded: a loaded machine may take more than a few polls).
    for (let i = 0; i < 500 && seen.length < 5; i++) await new Promise((r) => setTimeout(r, 10));
    ac.abort();
    await f;
    assert.deepEqual(seen, ["prepared", "starting", "running", "stopping", "stopped"]);
  } finally {
    sup.kill("SIGKILL");
    await rm(dir, { recursive: true, force: true });
  }
});
