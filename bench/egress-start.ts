/**
 * What egress mediation adds to a start, on real VMs: p50 of N starts each of `isolated`, `user` with
 * `--egress off` and `user` with `--egress guarded` (the default: CA loaded, audit opened, the trust
 * bundle in the boot config and bind-mounted by the guest), alternated so drift hits all three. The
 * issue's goal: guarded at most +100 ms over isolated. Records, does not assert.
 *
 *   node bench/egress-start.ts [--boots 5]
 */
import { join } from "node:path";
import { tmpdir } from "node:os";
import { parseArgs } from "node:util";
import { workspaceFixture } from "../test/helpers/workspace.ts";
import { runCli } from "../test/helpers/cli.ts";

const { values } = parseArgs({ options: { boots: { type: "string", default: "5" } } });
const boots = Number(values.boots);
const p50 = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

const fx = await workspaceFixture("bench-egress-start");
process.env.MICROAGENT_INSECURE_REGISTRIES = fx.registry.host;
process.env.MICROAGENT_KERNEL_CACHE ??= join(tmpdir(), "microagent-test-kernel-cache");
const cli = async (...args: string[]) => {
  const r = await runCli(["--state-dir", fx.stateDir, ...args]);
  if (r.code !== 0) throw new Error(`${args.join(" ")}: exit ${r.code}: ${r.err}`);
  return r.out;
};
try {
  const image = await fx.image("bench/busybox:1");
  const kinds = { isolated: ["--network", "isolated"], off: ["--egress", "off"], guarded: ["--egress", "guarded"] } as const;
  for (const [w, flags] of Object.entries(kinds)) await cli("create", w, "--image", image, "--profile", "tiny", ...flags);
  const ms: Record<string, number[]> = { isolated: [], off: [], guarded: [] };
  for (let i = 0; i < boots; i++) {
    for (const w of Object.keys(kinds)) {
      const t = performance.now();
      await cli("start", w);
      ms[w]!.push(performance.now() - t);
      await cli("kill", w);
    }
  }
  const r = Object.fromEntries(Object.entries(ms).map(([k, v]) => [k, Math.round(p50(v))]));
  console.log(`start p50 (${boots} each): isolated ${r.isolated} ms, user+off ${r.off} ms, user+guarded ${r.guarded} ms (guarded - isolated: ${r.guarded! - r.isolated!} ms)`);
  console.log(JSON.stringify({ bench: "egress-start", boots, p50Ms: r }));
} finally {
  for (const w of ["isolated", "off", "guarded"]) await runCli(["--state-dir", fx.stateDir, "delete", w, "--force"]).catch(() => {});
  await fx.cleanup();
}
