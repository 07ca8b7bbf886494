/**
 * `pause`/`resume` on a real VM: a background shell loop holds a counter in its memory; while the
 * vCPUs are frozen the counter does not advance, exec/cp/connect are refused at once with
 * WORKSPACE_PAUSED, start says to resume, status/list show `paused`; after resume the same process
 * (same pid) counts on from where it stopped. Then halt from paused (thawed first) ends it cleanly,
 * and a second boot shows kill works from paused. Prints the pause/resume latencies.
 */
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { tmpdir } from "node:os";
import { workspaceFixture, realProviders, type WorkspaceFixture } from "../helpers/workspace.ts";
import { runCli } from "../helpers/cli.ts";
import { createWorkspace } from "../../src/workspace/create.ts";
import { startWorkspace, stopWorkspace } from "../../src/api/lifecycle.ts";
import { Workspace } from "../../src/api/workspace.ts";
import { RESULT_SCHEMAS, nonCamelKeys, type ResultCommand } from "../../src/contract/results.ts";

let fx: WorkspaceFixture;
const NAME = "pausews";

before(async () => {
  fx = await workspaceFixture("pause");
  process.env.MICROAGENT_KERNEL_CACHE ??= join(tmpdir(), "microagent-test-kernel-cache");
});

after(async () => {
  await stopWorkspace(NAME, "kill", { stateDir: fx.stateDir }).catch(() => {});
  await fx.cleanup();
});

async function cli(...args: string[]) {
  const r = await runCli(["--state-dir", fx.stateDir, ...args]);
  return { code: r.code, stdout: r.out, stderr: r.err };
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
function shaped(command: ResultCommand, stdout: string): any {
  const body = JSON.parse(stdout);
  const r = RESULT_SCHEMAS[command].safeParse(body);
  assert.ok(r.success, `${command} --json does not match its schema: ${JSON.stringify(r.error?.issues)}\n${stdout}`);
  assert.deepEqual(nonCamelKeys(body), [], `${command} --json has non-camelCase keys`);
  return body;
}

/** A refused command: non-zero, the error contract on stdout, and how long it took. */
async function refused(...args: string[]): Promise<{ code: string; remediation: string; kind: string; ms: number }> {
  const t0 = performance.now();
  const r = await cli("--json", ...args);
  const ms = performance.now() - t0;
  assert.notEqual(r.code, 0, `${args.join(" ")} should be refused: ${r.stdout}${r.stderr}`);
  const e = shaped("error", r.stdout).error;
  return { code: e.code, remediation: e.remediation, kind: e.kind, ms };
}

const LOOP = "i=0; echo $$ > /tmp/pid; while :; do i=$((i+1)); echo $i > /tmp/count; sleep 0.2; done";

test("pause freezes a guest process's memory state; resume continues it; exec/cp/connect/start are refused while paused", { timeout: 600_000 }, async () => {
  const imageRef = await fx.image("pause/busybox:1");
  await createWorkspace({ name: NAME, stateDir: fx.stateDir, image: imageRef, providers: realProviders(), profile: "tiny" });
  await startWorkspace(NAME, { stateDir: fx.stateDir });
  const ws = await Workspace.connect(NAME, { stateDir: fx.stateDir });
  const sh = async (script: string) => {
    const r = await ws.exec(["/bin/sh", "-c", script]);
    assert.equal(r.exitCode, 0, `${script}: ${r.stderr.toString()}`);
    return r.stdout.toString().trim();
  };

  // The counter lives in the loop's shell variable (memory); the file only reports it.
  await sh(`setsid sh -c '${LOOP}' </dev/null >/dev/null 2>&1 &`);
  let pid = "";
  for (let i = 0; i < 50 && !/^\d+$/.test(pid); i++) {
    await new Promise((r) => setTimeout(r, 100));
    pid = await sh("cat /tmp/pid 2>/dev/null || true");
  }
  assert.match(pid, /^\d+$/, "the background loop started");
  const first = Number(await sh("cat /tmp/count"));
  await new Promise((r) => setTimeout(r, 1000));
  const running = Number(await sh("cat /tmp/count"));
  assert.ok(running > first, `the loop counts while running (${first} -> ${running})`);

  // --- pause ---
  const beforePause = Number(await sh("cat /tmp/count"));
  let t0 = performance.now();
  const p = await cli("--json", "pause", NAME);
  const pauseWallMs = performance.now() - t0;
  assert.equal(p.code, 0, p.stdout + p.stderr);
  const pj = shaped("pause", p.stdout);
  assert.equal(pj.state, "paused");
  assert.equal(pj.changed, true);
  const again = shaped("pause", (await cli("--json", "pause", NAME)).stdout);
  assert.equal(again.changed, false, "pause is idempotent");

  assert.equal(shaped("status", (await cli("--json", "status", NAME)).stdout).event.state, "paused");
  const listed = shaped("list", (await cli("--json", "list")).stdout).workspaces.find((w: { name: string }) => w.name === NAME);
  assert.equal(listed?.state, "paused");

  // Refused at once (never waiting on the frozen guest), with the resume remedy.
  const ex = await refused("exec", NAME, "--", "cat", "/tmp/count");
  assert.equal(ex.code, "WORKSPACE_PAUSED");
  assert.equal(ex.kind, "conflict");
  assert.match(ex.remediation, /microagent resume pausews/);
  assert.ok(ex.ms < 2000, `exec refused in ${ex.ms.toFixed(0)} ms`);
  const cp = await refused("cp", `${NAME}:/tmp/count`, join(fx.stateDir, "count.out"));
  assert.equal(cp.code, "WORKSPACE_PAUSED");
  assert.match(cp.remediation, /resume/);
  assert.ok(cp.ms < 2000, `cp refused in ${cp.ms.toFixed(0)} ms`);
  const con = await refused("connect", NAME, "--send", "echo hi", "--ready-timeout", "0");
  assert.equal(con.code, "WORKSPACE_PAUSED");
  assert.ok(con.ms < 2000, `connect refused in ${con.ms.toFixed(0)} ms`);
  const st = await refused("start", NAME);
  assert.equal(st.code, "WORKSPACE_PAUSED");
  assert.match(st.remediation, /microagent resume pausews/);

  // Frozen for ~2 s in total.
  await new Promise((r) => setTimeout(r, 2000));

  // --- resume ---
  t0 = performance.now();
  const r = await cli("--json", "resume", NAME);
  const resumeWallMs = performance.now() - t0;
  assert.equal(r.code, 0, r.stdout + r.stderr);
  const rj = shaped("resume", r.stdout);
  assert.equal(rj.state, "running");
  assert.equal(rj.changed, true);
  const afterResume = Number(await sh("cat /tmp/count"));
  // ~2.5 s frozen would be ~12 ticks if it ran; allow the ticks between the read and the freeze and
  // between the thaw and the read (each a CLI/exec round trip under TCG).
  assert.ok(afterResume - beforePause <= 3, `the counter did not advance while paused (${beforePause} -> ${afterResume})`);
  await new Promise((r) => setTimeout(r, 2000));
  const later = Number(await sh("cat /tmp/count"));
  assert.ok(later - afterResume >= 4, `the counter advances again after resume (${afterResume} -> ${later} in 2 s)`);
  assert.equal(await sh("cat /tmp/pid"), pid, "the same process");
  assert.equal(await sh(`kill -0 ${pid} && echo alive`), "alive");
  assert.equal(shaped("status", (await cli("--json", "status", NAME)).stdout).event.state, "running");

  console.log(
    `# pause: ${pj.ms} ms in the VMM, ${pauseWallMs.toFixed(0)} ms CLI wall; resume: ${rj.ms} ms in the VMM, ${resumeWallMs.toFixed(0)} ms CLI wall; ` +
      `counter ${beforePause} before pause, ${afterResume} after resume, ${later} 2 s later; exec refused in ${ex.ms.toFixed(0)} ms`,
  );

  // halt from paused: the supervisor thaws the guest, then it powers off cleanly.
  assert.equal((await cli("--json", "pause", NAME)).code, 0);
  const h = await cli("--json", "halt", NAME);
  assert.equal(h.code, 0, h.stdout + h.stderr);
  assert.equal(shaped("halt", h.stdout).state, "halted");

  // --- boot 2: kill from paused ---
  await startWorkspace(NAME, { stateDir: fx.stateDir });
  assert.equal((await cli("--json", "pause", NAME)).code, 0);
  const k = await cli("--json", "kill", NAME);
  assert.equal(k.code, 0, k.stdout + k.stderr);
  assert.equal(shaped("kill", k.stdout).state, "stopped");
  const events = shaped("events", (await cli("--json", "events", NAME)).stdout);
  const states = (events.events as { state: string }[]).map((e) => e.state);
  assert.deepEqual(states.slice(-3), ["running", "paused", "stopped"]);
  assert.ok(states.filter((s) => s === "paused").length === 3, `three pauses recorded: ${states.join(",")}`);
});
