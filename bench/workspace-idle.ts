/**
 * Bench: a running, idle workspace. (1) exec round trip through the library (`Workspace.exec`) on a
 * running workspace (goal < 10 ms), broken down against the control-socket round trip alone
 * (`status`); (2) host memory per idle workspace beyond guest RAM (goal < 30 MiB): the supervisor's
 * RSS plus QEMU's RSS minus the resident part of the guest-RAM mapping.
 *
 *   node bench/workspace-idle.ts [--execs N] [--memory MiB]
 *
 * A script, not a test: it prints figures and never fails on them.
 */
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startRegistry } from "../test/helpers/registry.ts";
import { buildBusyboxImage, pushImage } from "../test/helpers/oci-image.ts";
// The built library (dist/), so the supervisor it spawns is the compiled one users run (running it
// from src/ adds Node's TypeScript stripper, ~30 MiB). `npm run -s build` first.
import { createWorkspace } from "../dist/workspace/create.js";
import { deleteWorkspace } from "../dist/workspace/delete.js";
import { workspacePaths } from "../dist/workspace/paths.js";
import { readRuntime } from "../dist/workspace/runtime.js";
import { startWorkspace, stopWorkspace } from "../dist/api/lifecycle.js";
import { Workspace } from "../dist/api/workspace.js";

const arg = (n: string, d: number) => Number(process.argv[process.argv.indexOf(n) + 1] || d) || d;
const execs = arg("--execs", 200);
const memoryMib = arg("--memory", 512);
const quantile = (xs: number[], q: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * q))] as number;

/** kB of a /proc/<pid>/status field. */
function statusKb(pid: number, field: string): number {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? Number(m[1]) : NaN;
}

/** Proportional and private (unshared) resident kB: what one more such process really costs. */
function pssUssKb(pid: number): { pss: number; uss: number } {
  const t = readFileSync(`/proc/${pid}/smaps_rollup`, "utf8");
  const f = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, "m").exec(t)?.[1] ?? 0);
  return { pss: f("Pss"), uss: f("Private_Clean") + f("Private_Dirty") };
}

/** The largest anonymous mappings by RSS (where QEMU's own memory goes). */
function topMappings(pid: number, n: number): string[] {
  const out: { head: string; size: number; rss: number }[] = [];
  for (const m of readFileSync(`/proc/${pid}/smaps`, "utf8").split(/\n(?=[0-9a-f]+-[0-9a-f]+ )/)) {
    out.push({ head: m.split("\n")[0] ?? "", size: Number(/^Size:\s+(\d+) kB/m.exec(m)?.[1] ?? 0), rss: Number(/^Rss:\s+(\d+) kB/m.exec(m)?.[1] ?? 0) });
  }
  return out.sort((a, b) => b.rss - a.rss).slice(0, n).map((m) => `${(m.rss / 1024).toFixed(1)} MiB resident of ${(m.size / 1024).toFixed(0)} MiB: ${m.head.split(/\s+/).slice(5).join(" ") || "[anon]"}`);
}

/** Resident kB of the guest-RAM mapping: the anonymous mapping whose size is the guest's memory. */
function guestRamRssKb(pid: number, mib: number): number {
  const smaps = readFileSync(`/proc/${pid}/smaps`, "utf8").split(/\n(?=[0-9a-f]+-[0-9a-f]+ )/);
  let best = 0;
  for (const m of smaps) {
    const size = Number(/^Size:\s+(\d+) kB/m.exec(m)?.[1] ?? 0);
    const rss = Number(/^Rss:\s+(\d+) kB/m.exec(m)?.[1] ?? 0);
    if (size >= mib * 1024 && size <= mib * 1024 + 4096) best = Math.max(best, rss);
  }
  return best;
}

const work = mkdtempSync(join(tmpdir(), "microagent-bench-idle-"));
const stateDir = join(work, "state");
process.env.MICROAGENT_KERNEL_CACHE ??= join(tmpdir(), "microagent-test-kernel-cache");
const registry = await startRegistry();
process.env.MICROAGENT_INSECURE_REGISTRIES = registry.host;
const image = await buildBusyboxImage({});
const name = "idle";
try {
  const ref = (await pushImage(image, registry, "bench/busybox:1")).ref;
  await createWorkspace({ name, stateDir, image: ref, memoryMib, cpus: 1 });
  const started = await startWorkspace(name, { stateDir });
  console.log(`boot (start -> guest ready): ${started.bootMs} ms`);
  const ws = await Workspace.connect(name, { stateDir });
  for (let i = 0; i < 10; i++) await ws.exec(["true"]);
  const ctl: number[] = [];
  const ex: number[] = [];
  const ping: number[] = [];
  const guest: number[] = [];
  for (let i = 0; i < execs; i++) {
    let t = performance.now();
    await ws.status();
    ctl.push(performance.now() - t);
    t = performance.now();
    guest.push((await ws.ping()).guestMs);
    ping.push(performance.now() - t);
    t = performance.now();
    await ws.exec(["true"]);
    ex.push(performance.now() - t);
  }
  console.log(`control-socket round trip (status): p50 ${quantile(ctl, 0.5).toFixed(2)} ms, p90 ${quantile(ctl, 0.9).toFixed(2)} ms`);
  console.log(`ping round trip (library -> supervisor -> guest init, no process): p50 ${quantile(ping, 0.5).toFixed(2)} ms (guest part p50 ${quantile(guest, 0.5).toFixed(2)} ms)`);
  console.log(`exec \`true\` round trip (library):   p50 ${quantile(ex, 0.5).toFixed(2)} ms, p90 ${quantile(ex, 0.9).toFixed(2)} ms (n=${execs})`);

  await new Promise((r) => setTimeout(r, 2000)); // let it settle idle
  const rt = await readRuntime(workspacePaths(stateDir, name));
  if (!rt?.vmmPid) throw new Error("no runtime record");
  const supRss = statusKb(rt.supervisorPid, "VmRSS");
  const qemuRss = statusKb(rt.vmmPid, "VmRSS");
  const guestRss = guestRamRssKb(rt.vmmPid, memoryMib);
  const mib = (kb: number) => (kb / 1024).toFixed(1);
  console.log(`supervisor RSS: ${mib(supRss)} MiB`);
  console.log(`QEMU RSS: ${mib(qemuRss)} MiB, of which guest RAM resident: ${mib(guestRss)} MiB (guest has ${memoryMib} MiB)`);
  console.log(`host memory beyond guest RAM (RSS): ${mib(supRss + qemuRss - guestRss)} MiB (supervisor ${mib(supRss)} + QEMU overhead ${mib(qemuRss - guestRss)})`);
  const sup = pssUssKb(rt.supervisorPid);
  const q = pssUssKb(rt.vmmPid);
  console.log(`supervisor PSS ${mib(sup.pss)} MiB, private ${mib(sup.uss)} MiB; QEMU PSS ${mib(q.pss)} MiB, private ${mib(q.uss)} MiB`);
  console.log(`marginal host memory beyond guest RAM (private pages): ${mib(sup.uss + q.uss - guestRss)} MiB`);
  console.log("QEMU's largest mappings:");
  for (const line of topMappings(rt.vmmPid, 5)) console.log(`  ${line}`);
  await stopWorkspace(name, "halt", { stateDir });
} finally {
  await stopWorkspace(name, "kill", { stateDir }).catch(() => {});
  await deleteWorkspace(name, { stateDir, force: true }).catch(() => {});
  await registry.stop();
  await image.cleanup();
  rmSync(work, { recursive: true, force: true });
}
