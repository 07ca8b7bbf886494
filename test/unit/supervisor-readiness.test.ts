/**
 * The readiness prober on its own, against a fake link: every probe is a round trip, exec is ready
 * only when a process actually ran, the disk-full pause answers for every guest probe, and services'
 * probes are merged under their own names.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { probeReadiness, type ReadinessInput } from "../../src/supervisor/readiness.ts";
import type { GuestLink } from "../../src/supervisor/guest-link.ts";
import type { ExecRequest, ExecResult } from "../../src/supervisor/protocol.ts";
import { CommonErrors } from "../../src/contract/errors.ts";

type Exec = (req: ExecRequest) => Promise<ExecResult>;
const res = (status: ExecResult["status"], extra: Partial<ExecResult> = {}): ExecResult => ({
  status,
  stdout: "",
  stderr: "",
  stdoutTruncated: false,
  stderrTruncated: false,
  startedAt: "",
  completedAt: "",
  ...extra,
});
const notFound = (argv0: string) => res("failed_to_start", { error: `EXEC_NOT_FOUND: ${argv0}: No such file or directory` });

function link(opts: { ping?: () => Promise<number>; exec: Exec }) {
  const calls: string[] = [];
  const l = {
    ping: async (t: number) => (calls.push("ping"), opts.ping ? opts.ping() : (void t, 0.4)),
    exec: async (req: ExecRequest) => (calls.push(req.argv.join(" ")), opts.exec(req)),
  } as unknown as GuestLink;
  return { l, calls };
}

function input(l: GuestLink | undefined, extra: Partial<ReadinessInput> = {}): ReadinessInput {
  return { link: l, guestReadyAt: "2026-01-01T00:00:00.000Z", workload: undefined, shell: "/bin/sh", services: [], timeoutMs: 500, ...extra };
}

test("readiness: a guest that runs `true` and the shell is ready, after a ping round trip", async () => {
  const { l, calls } = link({ exec: async (req) => res("exited", { exitCode: req.argv[0] === "true" ? 0 : 0 }) });
  const r = await probeReadiness(input(l));
  assert.deepEqual(calls, ["ping", "true", "/bin/sh -c exit 0"]);
  assert.equal(r.guestReady.ready, true);
  assert.equal(r.execReady.ready, true);
  assert.match(r.execReady.detail ?? "", /^ping 0\.4 ms; no-op exec exited in \d+ ms$/);
  assert.equal(r.shellReady.ready, true);
  assert.equal(r.resultReady.ready, false);
});

test("readiness: an image without `true` or a shell is NOT exec ready (the no-op failed to start), and says why", async () => {
  const { l } = link({ exec: async (req) => notFound(req.argv[0]!) });
  const r = await probeReadiness(input(l));
  assert.equal(r.guestReady.ready, true);
  assert.equal(r.execReady.ready, false);
  assert.match(r.execReady.error ?? "", /^no-op exec failed_to_start: EXEC_NOT_FOUND: true: No such file/);
  assert.match(r.execReady.detail ?? "", /ping 0\.4 ms, but no process could be started/);
  assert.equal(r.shellReady.ready, false);
});

test("readiness: an image without `true` but with a shell is exec ready through the shell's process", async () => {
  const { l } = link({ exec: async (req) => (req.argv[0] === "true" ? notFound("true") : res("exited", { exitCode: 0 })) });
  const r = await probeReadiness(input(l));
  assert.equal(r.execReady.ready, true);
  assert.match(r.execReady.detail ?? "", /no-op exec `true` failed to start \(EXEC_NOT_FOUND.*\), \/bin\/sh ran/);
  assert.equal(r.shellReady.ready, true);
});

test("readiness: a guest whose ping does not answer is not exec ready and no exec is tried", async () => {
  const { l, calls } = link({ ping: () => new Promise(() => {}), exec: async () => res("exited", { exitCode: 0 }) });
  const r = await probeReadiness(input(l, { timeoutMs: 50 }));
  assert.deepEqual(calls, ["ping"]);
  assert.equal(r.execReady.ready, false);
  assert.match(r.execReady.error ?? "", /^ping: timed out after 50 ms waiting for a ping round trip/);
});

test("readiness: no link says why; a disk-full pause answers for every guest probe; a result is reported", async () => {
  const down = await probeReadiness(input(undefined, { unreachable: "phase booting", workload: { ran: true, exitCode: 2 } }));
  assert.equal(down.guestReady.ready, false);
  assert.equal(down.guestReady.detail, "phase booting");
  assert.equal(down.resultReady.ready, true);
  assert.equal(down.resultReady.detail, "exited with code 2");
  const { l, calls } = link({ exec: async () => res("exited", { exitCode: 0 }) });
  const paused = await probeReadiness(input(l, { ioPaused: CommonErrors.DISK_FULL({ message: "the host disk is full", remediation: "Free disk space." }) }));
  assert.deepEqual(calls, [], "a paused guest is not asked");
  for (const k of ["guestReady", "execReady", "shellReady"] as const) assert.equal(paused[k].error, "DISK_FULL: the host disk is full. Free disk space.");
});

test("readiness: services' probes are merged under their names; a taken name is dropped, a throwing service reports under its own", async () => {
  const { l } = link({ exec: async () => res("exited", { exitCode: 0 }) });
  const logs: string[] = [];
  const r = await probeReadiness(
    input(l, {
      log: (m) => logs.push(m),
      services: [
        { name: "egress", readiness: () => [{ name: "mediationReady", ready: false, detail: "api.example.test:443 does not answer", code: "MEDIATION_UNREACHABLE" }] },
        { name: "net", readiness: async () => [{ name: "networkReady", ready: true, detail: "guest link up" }, { name: "execReady", ready: true, detail: "spoof" }] },
        {
          name: "broken",
          readiness: () => {
            throw new Error("boom");
          },
        },
      ],
    }),
  );
  assert.equal(r.mediationReady?.ready, false);
  assert.equal(r.mediationReady?.error, "MEDIATION_UNREACHABLE: api.example.test:443 does not answer");
  assert.equal(r.networkReady?.ready, true);
  assert.equal(r.networkReady?.detail, "guest link up");
  assert.equal(r.execReady.detail?.startsWith("ping"), true, "a service cannot override a built-in probe");
  assert.deepEqual(logs, ["service net: readiness name execReady is taken; dropped"]);
  assert.equal(r.brokenReady?.ready, false);
  assert.equal(r.brokenReady?.error, "service broken: boom");
});
