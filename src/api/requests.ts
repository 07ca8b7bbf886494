/**
 * What a caller may ask for, separated from how this host is set up. A `*Request` is the part an
 * HTTP API or MCP client may send: plain data, zod-validated, with no paths on this host and no
 * functions. `HostOptions` is what only the process embedding microagent decides: where state
 * lives, which tools and supervisor to run, test seams. The facade takes `(request, host?)`.
 */
import { z } from "zod";
import { ArchSchema, BackendNameSchema } from "../contract/backend.ts";
import { CommonErrors } from "../contract/errors.ts";
import { NetworkModeSchema } from "../workspace/manifest.ts";
import { EGRESS_MODES } from "../egress/policy.ts";
import { parseAddHost, parseDnsUpstream, parseEgressAllow, parseEgressPassthrough, parsePublish, type AddHost, type DnsUpstream, type EgressInputs, type PortForward } from "../workspace/network.ts";
import { ProfileNameSchema } from "../workspace/profiles.ts";
import { ENV_KEY_PATTERN, HOSTNAME_PATTERN } from "../workspace/spec.ts";
import type { CreateProviders } from "../workspace/providers.ts";

const env = z.record(z.string().regex(ENV_KEY_PATTERN, "env keys must be shell identifiers"), z.string());
const argv = z.array(z.string()).min(1);
const positiveMs = z.number().int().positive();

/** Resources: a profile, and/or explicit sizes that override it. */
export const ResourcesRequestSchema = z.strictObject({
  profile: ProfileNameSchema.optional(),
  memoryMib: z.number().int().min(64).optional(),
  cpus: z.number().int().min(1).max(256).optional(),
  sizeMib: z.number().int().min(64).optional(),
});

/**
 * `user` networking settings, in the CLI flags' own spellings (each parsed by the flag's parser):
 * `publish` as `-p`, `addHosts` as `--add-host NAME:IP`, `dns` as `--dns IP[:PORT]`, `egress` as
 * `--egress`, `egressAllow` as `--egress-allow`, `egressPassthrough` as `--egress-passthrough`.
 * Host-side egress settings (upstream CA files, the mediation channel's host listeners) are not a
 * request's: they name host paths and host ports.
 */
export const NetworkOptionsRequestSchema = z.strictObject({
  publish: z.array(z.string()).max(64).optional(),
  addHosts: z.array(z.string()).max(256).optional(),
  dns: z.string().optional(),
  egress: z.enum(EGRESS_MODES).optional(),
  egressAllow: z.array(z.string()).max(1024).optional(),
  egressPassthrough: z.array(z.string()).max(256).optional(),
});
export type NetworkOptionsRequest = z.infer<typeof NetworkOptionsRequestSchema>;

/** The create/run options a NetworkOptionsRequest stands for (INVALID_ARGUMENT naming the flag on a bad value). */
export function networkOptionsFrom(o: NetworkOptionsRequest | undefined): {
  forwards?: PortForward[];
  addHosts?: AddHost[];
  dns?: DnsUpstream;
  egressAllow?: string[];
  egress?: EgressInputs;
} {
  if (!o) return {};
  const egress: EgressInputs = {
    ...(o.egress !== undefined ? { mode: o.egress } : {}),
    ...(o.egressPassthrough !== undefined ? { passthrough: o.egressPassthrough.map(parseEgressPassthrough) } : {}),
  };
  return {
    ...(o.publish !== undefined ? { forwards: o.publish.map(parsePublish) } : {}),
    ...(o.addHosts !== undefined ? { addHosts: o.addHosts.map(parseAddHost) } : {}),
    ...(o.dns !== undefined ? { dns: parseDnsUpstream(o.dns) } : {}),
    ...(o.egressAllow !== undefined ? { egressAllow: o.egressAllow.map(parseEgressAllow) } : {}),
    ...(Object.keys(egress).length > 0 ? { egress } : {}),
  };
}

/** A persistent workspace (`Workspace.create`); fields left out fall back to the spec file, the image or the defaults. */
export const WorkspaceRequestSchema = z.strictObject({
  /** Image reference (tag or digest); the resolved digest is recorded. Required unless the host's spec file names one. */
  image: z.string().min(1).optional(),
  /** A string is shell form (`/bin/sh -c`); a list is exec form. Replaces the image's Entrypoint and Cmd. */
  entrypoint: z.union([z.string(), argv]).optional(),
  /** Replaces the image's Cmd. */
  cmd: argv.optional(),
  /** Run the image's own Entrypoint/Cmd (default: boot idle, serving exec and the console). */
  imageCommand: z.boolean().optional(),
  env: env.optional(),
  /** Working directory of the workload and every exec (default: the image's WorkingDir, else /). */
  cwd: z.string().min(1).optional(),
  /** Guest user of the workload and every exec, `USER[:GROUP]` (name or id, resolved in the guest; default: the image's User). */
  user: z.string().min(1).optional(),
  /** Shell commands run before the workload at every boot, in order. */
  setup: z.array(z.string()).optional(),
  hostname: z.string().regex(HOSTNAME_PATTERN).optional(),
  resources: ResourcesRequestSchema.optional(),
  network: NetworkModeSchema.optional(),
  networkOptions: NetworkOptionsRequestSchema.optional(),
  backend: BackendNameSchema.optional(),
  arch: ArchSchema.optional(),
});
export type WorkspaceRequest = z.infer<typeof WorkspaceRequestSchema>;

/** A one-shot `run`: a scratch workspace, one command, its exit code. */
export const RunRequestSchema = z.strictObject({
  image: z.string().min(1),
  /** Replaces the image's Cmd. */
  cmd: z.array(z.string()).optional(),
  /** A shell command string, run as `/bin/sh -c` instead of the image's Entrypoint/Cmd. */
  exec: z.string().optional(),
  /** Workspace name (default: run-<adjective>-<noun>-<hex>). */
  name: z.string().optional(),
  /** Keep the workspace afterwards (default: delete it). */
  keep: z.boolean().optional(),
  /** Bound on the workload, counted from the guest being up; on expiry the VM is killed (exit code 124). */
  timeoutMs: positiveMs.optional(),
  env: env.optional(),
  setup: z.array(z.string()).optional(),
  resources: ResourcesRequestSchema.optional(),
  network: NetworkModeSchema.optional(),
  networkOptions: NetworkOptionsRequestSchema.optional(),
  backend: BackendNameSchema.optional(),
  arch: ArchSchema.optional(),
});
export type RunRequest = z.infer<typeof RunRequestSchema>;

/** One command in a running workspace (`ws.exec`). Output limits are in bytes. */
export const ExecRequestSchema = z.strictObject({
  env: env.optional(),
  cwd: z.string().optional(),
  /** Guest user: a name or uid[:gid]. */
  user: z.string().optional(),
  timeoutMs: positiveMs.optional(),
  stdoutLimitBytes: z.number().int().positive().optional(),
  stderrLimitBytes: z.number().int().positive().optional(),
});
export type ExecRequest = z.infer<typeof ExecRequestSchema>;

/** Host-only settings: never accepted from a remote caller. */
export interface HostOptions {
  /** State directory (kernels, images, workspaces). Default `$MICROAGENT_STATE_DIR` or `~/.microagent`. */
  stateDir?: string;
  /** Run this executable as the supervisor instead of the bundled one. */
  supervisorPath?: string;
  /** mke2fs / debugfs for building a base rootfs on a cache miss. */
  mke2fs?: string;
  debugfs?: string;
  /** A microagent.yaml on this host; request fields override it. */
  specFile?: string;
  /** Progress lines (pulls, builds, boots). */
  onProgress?: (message: string) => void;
  /** @internal test seam: the image/kernel/rootfs steps of create. */
  providers?: CreateProviders;
}

/** Validate a request at the boundary: a bad field is INVALID_ARGUMENT naming the field. */
export function parseRequest<T>(schema: z.ZodType<T>, value: unknown, what: string): T {
  const r = schema.safeParse(value);
  if (r.success) return r.data;
  const issue = r.error.issues[0];
  const at = issue?.path.length ? issue.path.join(".") : "(root)";
  throw CommonErrors.INVALID_ARGUMENT({
    message: `invalid ${what}: ${at}: ${issue?.message ?? "invalid"}`,
    remediation: `Fix the ${what} field named above; docs/architecture.md (Public API) lists the accepted fields.`,
    details: { field: at },
  });
}
