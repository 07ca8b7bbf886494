import { test } from "node:test";
import assert from "node:assert/strict";
import { run } from "../../src/util/run.ts";
import { processAlive } from "../../src/util/process.ts";

const sh = "/bin/sh";

async function waitGone(pid: number, ms = 3000): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (!processAlive(pid)) return true;
    await new Promise((r) => setTimeout(r, 20));
  }
  return false;
}

test("util-run: a timeout kills the whole process group, grandchildren included", async () => {
  // The shell starts a background sleep, reports its pid, then waits: the timeout must take both.
  let grandchild = 0;
  const r = await run(sh, ["-c", "sleep 30 & echo $!; wait"], {
    timeoutMs: 300,
    onStdout: (t) => {
      grandchild ||= Number(t.trim());
    },
  });
  assert.equal(r.timedOut, true);
  assert.equal(r.aborted, false);
  assert.equal(r.signal, "SIGKILL");
  assert.ok(grandchild > 0, `no grandchild pid in ${JSON.stringify(r.stdout)}`);
  assert.ok(await waitGone(grandchild), `grandchild ${grandchild} survived the timeout`);
});

test("util-run: an abort kills the group and reports aborted; an aborted signal never starts the child", async () => {
  const ac = new AbortController();
  setTimeout(() => ac.abort(new Error("stop")), 200);
  const t0 = Date.now();
  const r = await run(sh, ["-c", "sleep 30"], { timeoutMs: 20_000, signal: ac.signal });
  assert.equal(r.aborted, true);
  assert.equal(r.timedOut, false);
  assert.ok(Date.now() - t0 < 5000);
  const pre = await run(sh, ["-c", "echo ran"], { timeoutMs: 5000, signal: ac.signal });
  assert.equal(pre.aborted, true);
  assert.equal(pre.stdout, "");
  assert.equal(pre.code, null);
});

test("util-run: output is capped to the head or the tail; stdout bytes are kept whole up to the limit", async () => {
  const script = "i=0; while [ $i -lt 2000 ]; do echo line-$i; echo err-$i >&2; i=$((i+1)); done";
  const tailRun = await run(sh, ["-c", script], { timeoutMs: 10_000, maxOutputBytes: 100, keep: "tail" });
  assert.equal(tailRun.code, 0);
  assert.ok(tailRun.stdout.length <= 100);
  assert.ok(tailRun.stdout.endsWith("line-1999\n"), tailRun.stdout);
  assert.ok(tailRun.stderr.endsWith("err-1999\n"), tailRun.stderr);
  const headRun = await run(sh, ["-c", script], { timeoutMs: 10_000, maxOutputBytes: 100, keep: "head" });
  assert.equal(headRun.stdout.length, 100);
  assert.ok(headRun.stdout.startsWith("line-0\nline-1\n"));
  let seen = 0;
  const bytes = await run(sh, ["-c", script], { timeoutMs: 10_000, stdoutBytesLimit: 1 << 20, onStdout: (t) => (seen += t.length) });
  const want = Array.from({ length: 2000 }, (_, i) => `line-${i}\n`).join("");
  assert.equal(bytes.stdoutBytes?.toString(), want);
  assert.equal(seen, want.length);
  assert.equal(bytes.stdout, "");
  const over = await run(sh, ["-c", "while :; do echo xxxxxxxxxxxxxxxx; done"], { timeoutMs: 10_000, stdoutBytesLimit: 4096 });
  assert.equal(over.stdoutOverflow, true);
  assert.ok((over.stdoutBytes?.length ?? 0) <= 4096);
});

test("util-run: the environment is exactly the one given (not merged), and a missing command is data", async () => {
  const r = await run(sh, ["-c", 'echo "PATH=${PATH-unset} SHELL=${SHELL-unset} HOME=${HOME-unset}"'], { timeoutMs: 5000, env: { PATH: "/nonexistent", SHELL: "/bin/false" } });
  assert.equal(r.stdout.trim(), "PATH=/nonexistent SHELL=/bin/false HOME=unset");
  const missing = await run("/nonexistent/tool", [], { timeoutMs: 5000 });
  assert.equal(missing.spawnError?.code, "ENOENT");
  assert.equal(missing.code, null);
  // No signal handler stays installed once no child runs.
  assert.equal(process.listenerCount("SIGTERM"), 0);
  assert.equal(process.listenerCount("exit"), 0);
});

test("util-run: Ctrl-C kills a running tool's group; with nobody else listening the process still dies of SIGINT", async () => {
  const { spawn } = await import("node:child_process");
  const script = `
    import { run } from ${JSON.stringify(new URL("../../src/util/run.ts", import.meta.url).href)};
    const other = process.argv[1] === "listen";
    if (other) process.once("SIGINT", () => console.log("handled"));
    run("/bin/sh", ["-c", "sleep 30 & echo $!; wait"], { timeoutMs: 60_000, onStdout: (t) => console.log("grandchild " + t.trim()) })
      .then((r) => console.log("result " + r.signal));`;
  for (const mode of ["default", "listen"]) {
    const node = spawn(process.execPath, ["--input-type=module", "-e", script, mode], { stdio: ["ignore", "pipe", "inherit"] });
    let out = "";
    node.stdout.on("data", (d: Buffer) => (out += d.toString()));
    for (let i = 0; i < 200 && !/grandchild \d+/.test(out); i++) await new Promise((r) => setTimeout(r, 20));
    const grandchild = Number(/grandchild (\d+)/.exec(out)?.[1]);
    assert.ok(grandchild > 0, out);
    node.kill("SIGINT");
    const [code, signal] = await new Promise<[number | null, string | null]>((resolve) => node.on("close", (c, s) => resolve([c, s])));
    if (mode === "default") assert.equal(signal, "SIGINT", `exit ${code}: ${out}`);
    else {
      assert.equal(code, 0, out);
      assert.match(out, /handled/);
      assert.match(out, /result SIGKILL/);
    }
    assert.ok(await waitGone(grandchild), `${mode}: grandchild ${grandchild} survived the SIGINT`);
  }
});
