import { Command } from "commander";
import { action } from "../action.ts";
import { createJson, forkJson } from "../../api/results.ts";
import { forkFromSnapshot } from "../../api/snapshot.ts";
import { CommonErrors } from "../../contract/errors.ts";
import type { CliContext } from "../output.ts";
import { createWorkspace, type CreateResult } from "../../workspace/create.ts";
import type { SecretRef } from "../../secrets/ref.ts";
import { addNetworkOptions, addRefusedDockerFlags, addResourceOptions, collectEnv, collectEnvFile, collectList, collectSecret, networkOptions, refuseDockerFlags, resourceOptions, type NetworkFlags, type ResourceFlags } from "./workspace-flags.ts";

interface CreateFlags extends ResourceFlags, NetworkFlags {
  image?: string;
  file?: string;
  setup?: string[];
  entrypoint?: string;
  imageCommand?: boolean;
  env?: Record<string, string>;
  envFile?: Record<string, string>;
  workdir?: string;
  user?: string;
  hostname?: string;
  secret?: SecretRef[];
  fromSnapshot?: string;
  start?: boolean;
}

export function createCommand(): Command {
  return addRefusedDockerFlags(addNetworkOptions(addResourceOptions(new Command("create"))))
    .description("create a persistent workspace from an image (state prepared; boot it with `start`)")
    .argument("<name>", "workspace name: [a-z0-9][a-z0-9_.-]{0,62}")
    .option("--image <ref>", "image reference (tags are accepted; the resolved digest is recorded)")
    .option("--file <path>", "spec file (microagent.yaml); flags override its fields")
    .option("--setup <cmd>", "shell command run before the entrypoint at every boot (repeatable, in order)", collectList)
    .option("--entrypoint <cmd>", "shell command run as the workload (replaces the image's Entrypoint and Cmd)")
    .option("--image-command", "run the image's own Entrypoint/Cmd as the workload (default: boot idle, serving exec and the console)")
    .option("-e, --env <KEY=VALUE>", "environment variable for the workload and every exec (repeatable; wins over --env-file)", collectEnv)
    .option("--env-file <file>", "environment variables from a file, docker's format: KEY=VAL lines, KEY alone takes this host's value, # comments (repeatable)", collectEnvFile)
    .option("-w, --workdir <dir>", "working directory of the workload and every exec (default: the image's WorkingDir)")
    .option("-u, --user <user[:group]>", "guest user of the workload and every exec, name or uid, resolved in the guest at boot (default: the image's User)")
    .option("--secret <NAME=SOURCE>", "secret from env:VAR, file:PATH or cmd:COMMAND, resolved at every start (repeatable); NAME=SOURCE@HOST,... swaps a placeholder on requests to HOST", collectSecret)
    .option("--hostname <name>", "guest hostname (default: the workspace name)")
    .option("--from-snapshot <src:tag>", "fork: a copy of workspace SRC as its snapshot TAG caught it (memory and disk, no copy made), with its own hostname, MAC, RNG and clock; restored at once")
    .option("--no-start", "with --from-snapshot: leave the fork prepared (its first `start` restores it)")
    .action(
      action(async (ctx, name: string, o: CreateFlags) => {
        refuseDockerFlags("create", o as Record<string, unknown>);
        if (o.fromSnapshot !== undefined) return forkCommand(ctx, name, o);
        const env = o.envFile || o.env ? { ...(o.envFile ?? {}), ...(o.env ?? {}) } : undefined;
        const r = await createWorkspace({
          name,
          stateDir: ctx.globals.stateDir,
          ...(o.image !== undefined ? { image: o.image } : {}),
          ...(o.file !== undefined ? { specFile: o.file } : {}),
          ...resourceOptions(o),
          ...(o.setup !== undefined ? { setup: o.setup } : {}),
          ...(o.entrypoint !== undefined ? { entrypoint: o.entrypoint } : {}),
          ...(o.imageCommand ? { imageCommand: true } : {}),
          ...(env !== undefined ? { env } : {}),
          ...(o.workdir !== undefined ? { cwd: o.workdir } : {}),
          ...(o.user !== undefined ? { user: o.user } : {}),
          ...(o.secret !== undefined ? { secrets: o.secret } : {}),
          ...networkOptions(o),
          ...(o.hostname !== undefined ? { hostname: o.hostname } : {}),
          ...(ctx.globals.backend ? { backend: ctx.globals.backend } : {}),
          ...(ctx.globals.arch ? { arch: ctx.globals.arch } : {}),
          onProgress: (m) => ctx.progress(m),
        });
        return { json: createJson(r), text: createText(r) };
      }),
    );
}

/** The flags a fork takes: everything else is the snapshot's (its machine, image, command). */
const FORK_FLAGS = new Set(["fromSnapshot", "start", "hostname"]);

async function forkCommand(ctx: CliContext, name: string, o: CreateFlags) {
  const other = Object.entries(o).find(([k, v]) => v !== undefined && !FORK_FLAGS.has(k));
  if (other) {
    throw CommonErrors.INVALID_ARGUMENT({
      message: `--from-snapshot cannot be combined with --${other[0].replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}: a fork runs the snapshot's image, command and machine`,
      remediation: "Drop the flag (a fork takes only --hostname and --no-start), or create a new workspace from an image instead.",
    });
  }
  ctx.progress(`forking ${o.fromSnapshot} as ${name}...`);
  const r = await forkFromSnapshot(name, o.fromSnapshot!, {
    stateDir: ctx.globals.stateDir,
    ...(o.hostname !== undefined ? { hostname: o.hostname } : {}),
    ...(o.start === false ? { start: false } : {}),
    ...(ctx.globals.supervisor ? { supervisorPath: ctx.globals.supervisor } : {}),
  });
  const json = forkJson(r.fork, r.started);
  const text = r.started
    ? `forked ${o.fromSnapshot} as ${name}: running (restored in ${((r.started.bootMs ?? 0) / 1000).toFixed(1)} s; hostname ${r.fork.manifest.boot.hostname}; network flows and console sessions from the snapshot were reset)`
    : `forked ${o.fromSnapshot} as ${name} (prepared; \`microagent start ${name}\` restores it)`;
  return { json, text };
}

/** "1024 MiB disk", or why the disk is bigger than asked. */
export function diskText(res: { sizeMib: number; requestedSizeMib?: number | undefined }): string {
  if (res.requestedSizeMib === undefined) return `${res.sizeMib} MiB disk`;
  return `${res.sizeMib} MiB disk (raised from the ${res.requestedSizeMib} MiB asked for: the image's root filesystem needs ${res.sizeMib} MiB)`;
}

export function createText(r: CreateResult): string {
  const m = r.manifest;
  const res = m.resources;
  return [
    `created ${r.name} (${r.state.state})`,
    `  image:     ${m.image.ref} -> ${m.image.resolvedRef}`,
    `  resources: ${res.profile}: ${res.memoryMib} MiB, ${res.cpus} vCPU, ${diskText(res)}; network ${m.network.mode}`,
    `  command:   ${m.boot.argv.length ? m.boot.argv.join(" ") : "(none: the guest idles, serving exec and console)"}`,
    ...(m.secrets?.length ? [`  secrets:   ${m.secrets.map((s) => `${s.name} (${s.delivery === "swap" ? `swap @${s.hosts.join(",")}` : "file"}, ${s.source.kind})`).join(", ")}`] : []),
    `start it with: microagent start ${r.name}`,
  ].join("\n");
}
