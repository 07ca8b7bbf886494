/**
 * Supervisor services against the fake VM: each hook runs at its point of the life cycle, in
 * registration order (stop in reverse), beforeLaunch/afterLaunch/bootConfig failures fail the boot
 * closed with the service's error, sever runs synchronously on quarantine and never throws out, and
 * stop runs once on every path the VM ends by.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import type { SupervisorService } from "../../src/supervisor/service.ts";
import { setup } from "../helpers/supervisor-fakes.ts";

const signal = new AbortController().signal;

/** A service that logs every hook call as `<name>.<hook>` into `calls`. */
function recorder(name: string, calls: string[], over: Partial<SupervisorService> = {}): SupervisorService {
  return {
    name,
    beforeLaunch: (spec) => (calls.push(`${name}.beforeLaunch`), { ...spec, kernelArgs: [...(spec.kernelArgs ?? []), `${name}=1`] }),
    afterLaunch: async (ctx) => void calls.push(`${name}.afterLaunch(${ctx.remainingMs() > 0 ? "in deadline" : "late"})`),
    bootConfig: (cfg) => (calls.push(`${name}.bootConfig`), { ...cfg, [name]: true }),
    onRunning: () => void calls.push(`${name}.onRunning`),
    sever: (reason) => void calls.push(`${name}.sever(${reason})`),
    stop: () => void calls.push(`${name}.stop`),
    describe: () => ({ name, up: true }),
    ...over,
  };
}

test("services: hooks run in order around the boot, the launch spec and boot config are chained, stop runs in reverse after the exit", async () => {
  const calls: string[] = [];
  let launched: string[] | undefined;
  const { sup, link, states } = setup({
    bootConfig: { argv: ["sh"] },
    services: [recorder("a", calls, { onRunning: () => void calls.push(`a.onRunning(${states.at(-1)?.split(":")[0]})`) }), recorder("b", calls)],
    onLaunch: (spec) => {
      calls.push("launch");
      launched = [...(spec.kernelArgs ?? [])];
    },
  });
  await sup.boot();
  assert.deepEqual(calls, ["a.beforeLaunch", "b.beforeLaunch", "launch", "a.afterLaunch(in deadline)", "b.afterLaunch(in deadline)", "a.bootConfig", "b.bootConfig", "a.onRunning(running)", "b.onRunning"]);
  assert.deepEqual(launched, ["a=1", "b=1"], "each beforeLaunch saw the spec its predecessor returned");
  assert.deepEqual(sup.launch.kernelArgs, ["a=1", "b=1"]);
  assert.deepEqual(link.sentConfigs, [{ argv: ["sh"], a: true, b: true }]);
  assert.deepEqual(sup.services(), { a: { name: "a", up: true }, b: { name: "b", up: true } });
  calls.length = 0;
  link.finish({ ran: true, exitCode: 0 });
  assert.equal(await sup.done, "stopped");
  assert.deepEqual(calls, ["b.stop", "a.stop"]);
});

test("services: a beforeLaunch throw fails the boot closed: no VMM, recorded failed with the service's error, started services stopped", async () => {
  const calls: string[] = [];
  let launches = 0;
  const { sup, states } = setup({
    services: [
      recorder("a", calls),
      recorder("net", calls, {
        beforeLaunch: () => {
          calls.push("net.beforeLaunch");
          throw new Error("listen EADDRINUSE /run/net.sock");
        },
      }),
      recorder("c", calls),
    ],
    onLaunch: () => void launches++,
  });
  await sup.boot();
  assert.equal(await sup.done, "failed");
  assert.equal(launches, 0, "the VMM was never started");
  assert.equal(sup.vm, undefined);
  assert.match(states.at(-1) ?? "", /^failed: service net failed in beforeLaunch: listen EADDRINUSE \/run\/net\.sock/);
  await assert.rejects(sup.waitReady(100), (e: Error & { code?: string }) => e.code === "SERVICE_FAILED" && /service net failed in beforeLaunch/.test(e.message));
  // c never started, so it is owed no stop; the failing one is (it may have half-opened things)
  assert.deepEqual(calls, ["a.beforeLaunch", "net.beforeLaunch", "net.stop", "a.stop"]);
});

test("services: an afterLaunch or bootConfig throw fails the boot closed, and the VM is ended", async () => {
  for (const hook of ["afterLaunch", "bootConfig"] as const) {
    const calls: string[] = [];
    const failing = recorder("egress", calls, {
      [hook]: async () => {
        throw new Error(`${hook} broke`);
      },
    });
    const { sup, vm, link, states } = setup({ services: [recorder("a", calls), failing] });
    await sup.boot();
    assert.equal(await sup.done, "failed", hook);
    assert.ok(vm.exitStatus(), `${hook}: the VM was ended`);
    assert.match(states.at(-1) ?? "", new RegExp(`^failed: service egress failed in ${hook}: ${hook} broke`));
    assert.deepEqual(link.sentConfigs, [], `${hook}: no boot config reached the guest`);
    assert.deepEqual(calls.slice(-2), ["egress.stop", "a.stop"], hook);
    assert.ok(!calls.some((c) => c.endsWith("onRunning")), `${hook}: nothing ran as running`);
  }
});

test("services: a beforeLaunch that hangs is bounded by the boot deadline", async () => {
  const { sup, states } = setup({ services: [{ name: "slow", beforeLaunch: () => new Promise(() => {}) }] });
  (sup.config as { bootTimeoutMs: number }).bootTimeoutMs = 100;
  await sup.boot();
  assert.equal(await sup.done, "failed");
  assert.match(states.at(-1) ?? "", /service slow failed in beforeLaunch: timed out after 100 ms waiting for service slow to prepare the launch/);
});

test("services: quarantine severs every service synchronously (a throwing one does not stop the rest), then kill stops them", async () => {
  const calls: string[] = [];
  const { sup, logs } = setup({
    services: [
      recorder("a", calls, {
        sever: () => {
          calls.push("a.sever");
          throw new Error("already closed");
        },
      }),
      recorder("b", calls),
    ],
  });
  await sup.boot();
  calls.length = 0;
  const q = sup.quarantine();
  // severed before quarantine() yields for the first time
  assert.deepEqual(calls, ["a.sever", "b.sever(quarantined)"]);
  assert.deepEqual(await q, { state: "quarantined", frozen: true });
  assert.ok(logs.some((l) => /service a: sever failed .*already closed/.test(l)));
  assert.deepEqual(await sup.kill(), { state: "stopped" });
  assert.deepEqual(calls, ["a.sever", "b.sever(quarantined)", "b.stop", "a.stop"]);
});

test("services: stop runs exactly once on every way the VM ends (halt, kill, crash), after the VM is gone", async () => {
  const ends: [string, (s: ReturnType<typeof setup>) => Promise<unknown>][] = [
    ["halt", (s) => s.sup.shutdown("halt", 1000)],
    ["kill", (s) => s.sup.kill()],
    ["crash", async (s) => (s.vm.end({ code: 1, signal: null }), s.sup.done)],
  ];
  for (const [how, end] of ends) {
    const calls: string[] = [];
    let vmGoneAtStop: boolean | undefined;
    const ref: { vm?: ReturnType<typeof setup>["vm"] } = {};
    const svc = recorder("a", calls, {
      stop: () => {
        calls.push("a.stop");
        vmGoneAtStop = Boolean(ref.vm?.exitStatus());
      },
    });
    const s = setup({ services: [svc] });
    ref.vm = s.vm;
    await s.sup.boot();
    await end(s);
    await s.sup.done;
    await s.sup.kill(); // a late kill does not stop it again
    assert.deepEqual(calls.filter((c) => c === "a.stop"), ["a.stop"], how);
    assert.equal(vmGoneAtStop, true, `${how}: stop ran after the VM exited`);
  }
});

test("services: a kill before the launch stops the started services and never starts a VM; onRunning errors are logged, not fatal", async () => {
  {
    const calls: string[] = [];
    let release!: (v: unknown) => void;
    let launches = 0;
    const { sup } = setup({
      services: [recorder("a", calls, { beforeLaunch: (spec) => new Promise((r) => (release = () => r(spec))) })],
      onLaunch: () => void launches++,
    });
    const booting = sup.boot();
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(await sup.kill(), { state: "stopped" });
    release(undefined);
    await booting;
    assert.equal(launches, 0);
    assert.deepEqual(calls, ["a.stop"]);
  }
  {
    const { sup, logs } = setup({
      services: [
        {
          name: "fwd",
          onRunning: () => {
            throw new Error("port 8080 busy");
          },
        },
      ],
    });
    await sup.boot();
    assert.equal(sup.phase, "running");
    assert.equal((await sup.exec({ argv: ["true"] }, undefined, signal)).status, "exited");
    assert.ok(logs.some((l) => /service fwd: onRunning failed \(the workspace runs on\): port 8080 busy/.test(l)));
    await sup.kill();
  }
});
