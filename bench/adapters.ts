/**
 * Bench: adapter overhead. Create-to-first-command (create a workspace, boot it, run `true`) through
 * the HTTP API daemon and through the MCP server (stdio) against the library call in the same run
 * (goal: each ratio <= 1.1), and the exec round trip on a running workspace through HTTP against the
 * library.
 *
 *   npm run -s build && node bench/adapters.ts [--runs N] [--execs M]
 *
 * Setup (not timed): a docker-registry on loopback with a busybox image, a state dir, one warm-up
 * create+start that pulls the image, installs the kernel and builds the base rootfs, then
 * `microagent serve` and `microagent serve mcp` as child processes (what a user runs). Rounds
 * alternate library / http / mcp; each workspace is deleted after its round (not timed).
 * Prints medians and ratios, and a JSON line. A script, not a test: it never fails on the numbers.
 */
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { Client } from "@modelcontextprotocol/client";
import { StdioClientTransport } from "@modelcontextprotocol/client/stdio";
import { startRegistry } from "../test/helpers/registry.ts";
import { buildBusyboxImage, pushImage } from "../test/helpers/oci-image.ts";
import { api, closeAgents } from "../test/helpers/api-client.ts";
import { Workspace } from "../src/api/workspace.ts";

const { values } = parseArgs({ options: { runs: { type: "string", default: "3" }, execs: { type: "string", default: "20" } } });
const runs = Number(values.runs) || 3;
const execs = Number(values.execs) || 20;
const root = new URL("..", import.meta.url).pathname;
const bin = join(root, "bin/microagent.js");
if (!existsSync(join(root, "dist/cli/main.js"))) {
  console.error("dist/ is missing: run `npm run -s build` first");
  process.exit(1);
}
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
};

const work = mkdtempSync(join(tmpdir(), "bench-adapters-"));
const stateDir = join(work, "state");
const registry = await startRegistry();
const img = await buildBusyboxImage({});
process.env.MICROAGENT_INSECURE_REGISTRIES = registry.host;
process.env.MICROAGENT_KERNEL_CACHE ??= join(tmpdir(), "microagent-test-kernel-cache");
const host = { stateDir };
const request = { resources: { profile: "tiny" as const } };
let daemon: ReturnType<typeof spawn> | undefined;
let mcp: Client | undefined;
try {
  const image = (await pushImage(img, registry, "bench/adapters:1")).ref;
  const warm = await Workspace.create("warm", { image, ...request }, host);
  await warm.start();
  await warm.delete({ force: true });

  daemon = spawn(process.execPath, [bin, "--state-dir", stateDir, "serve"], { stdio: ["ignore", "ignore", "pipe"], env: process.env });
  let err = "";
  daemon.stderr?.on("data", (d: Buffer) => (err += d.toString()));
  for (let i = 0; i < 300 && !/listening on unix:/.test(err); i++) await new Promise((r) => setTimeout(r, 50));
  const socket = /listening on unix:(\S+)/.exec(err)?.[1];
  if (!socket) throw new Error(`daemon did not start: ${err}`);
  const t = { socket };
  mcp = new Client({ name: "bench", version: "1" });
  await mcp.connect(new StdioClientTransport({ command: process.execPath, args: [bin, "--state-dir", stateDir, "serve", "mcp"], env: process.env as Record<string, string> }));
  const m = mcp;

  const paths = {
    library: async (name: string) => {
      const ws = await Workspace.create(name, { image, ...request }, host);
      await ws.start();
      const r = await ws.exec(["true"]);
      if (r.exitCode !== 0) throw new Error(`library exec: ${JSON.stringify(r)}`);
    },
    http: async (name: string) => {
      const c = await api(t, "POST", "/v1/workspaces", { json: { name, image, ...request } });
      if (c.status !== 201) throw new Error(`http create: ${c.body}`);
      const s = await api(t, "POST", `/v1/workspaces/${name}/start`, { json: {} });
      if (s.status !== 200) throw new Error(`http start: ${s.body}`);
      const e = await api(t, "POST", `/v1/workspaces/${name}/exec`, { json: { argv: ["true"] } });
      if (e.json().exitCode !== 0) throw new Error(`http exec: ${e.body}`);
    },
    mcp: async (name: string) => {
      for (const [tool, args] of [
        ["workspace_create", { name, image, ...request }],
        ["workspace_start", { name }],
        ["workspace_exec", { name, command: ["true"] }],
      ] as const) {
        const r = await m.callTool({ name: tool, arguments: args }, { timeout: 300_000 });
        if (r.isError) throw new Error(`mcp ${tool}: ${JSON.stringify(r.content)}`);
      }
    },
  };
  const times: Record<keyof typeof paths, number[]> = { library: [], http: [], mcp: [] };
  for (let i = 0; i < runs; i++) {
    for (const k of Object.keys(paths) as Array<keyof typeof paths>) {
      const name = `b-${k}-${i}`;
      const t0 = performance.now();
      await paths[k](name);
      times[k].push(performance.now() - t0);
      await (await Workspace.get(name, host)).delete({ force: true });
      process.stderr.write(`round ${i + 1}/${runs} ${k}: ${times[k].at(-1)?.toFixed(0)} ms\n`);
    }
  }

  // Exec round trip on one running workspace.
  const ws = await Workspace.create("rtt", { image, ...request }, host);
  await ws.start();
  const live = await Workspace.connect("rtt", host);
  const libRtt: number[] = [];
  const httpRtt: number[] = [];
  for (let i = 0; i < execs; i++) {
    let s = performance.now();
    await live.exec(["true"]);
    libRtt.push(performance.now() - s);
    s = performance.now();
    await api(t, "POST", "/v1/workspaces/rtt/exec", { json: { argv: ["true"] } });
    httpRtt.push(performance.now() - s);
  }
  await ws.delete({ force: true });

  const summary = {
    runs,
    createToFirstCommandMs: { library: median(times.library), http: median(times.http), mcp: median(times.mcp) },
    ratio: { http: median(times.http) / median(times.library), mcp: median(times.mcp) / median(times.library) },
    execRoundTripMs: { library: median(libRtt), http: median(httpRtt), addedByHttp: median(httpRtt) - median(libRtt) },
  };
  console.log("create-to-first-command (median ms):");
  for (const k of ["library", "http", "mcp"] as const) console.log(`  ${k.padEnd(8)} ${summary.createToFirstCommandMs[k].toFixed(0)}${k === "library" ? "" : `  (x${summary.ratio[k].toFixed(3)})`}`);
  console.log(`exec round trip (median of ${execs}): library ${summary.execRoundTripMs.library.toFixed(1)} ms, http ${summary.execRoundTripMs.http.toFixed(1)} ms`);
  console.log(JSON.stringify(summary));
} finally {
  await mcp?.close().catch(() => {});
  await closeAgents();
  if (daemon && daemon.exitCode === null) {
    const done = new Promise((r) => daemon?.once("exit", r));
    daemon.kill("SIGTERM");
    await done;
  }
  for (const w of await Workspace.list(host).catch(() => [])) await (await Workspace.get(w.name, host)).delete({ force: true }).catch(() => {});
  await registry.stop().catch(() => {});
  await img.cleanup().catch(() => {});
  rmSync(work, { recursive: true, force: true });
}
