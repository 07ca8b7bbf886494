/**
 * `manifest.json`: what was asked for when the workspace was created, and the hashes of every
 * artifact it boots from. It is written once by `create` (atomically) and read by the supervisor to
 * boot and by `status` to verify. Validated with zod on every read.
 */
import { z } from "zod";
import { ArchSchema, BackendNameSchema, DiskFormatSchema } from "../contract/backend.ts";
import { WorkspaceErrors } from "./errors.ts";
import { writeJsonAtomic } from "../util/fs.ts";
import { readJsonFile } from "../util/json-file.ts";
import { ProfileNameSchema } from "./profiles.ts";
import type { WorkspacePaths } from "./paths.ts";
import { SecretRefSchema } from "../secrets/ref.ts";
import { NetworkSettingsSchema } from "./network.ts";

export const MANIFEST_VERSION = 1;

const Sha256Hex = z.string().regex(/^[a-f0-9]{64}$/, "expected 64 lowercase hex characters");

/** A file the workspace boots from, with the sha256 recorded at create time. */
export const ArtifactSchema = z.object({
  path: z.string(),
  sha256: Sha256Hex,
});
export type Artifact = z.infer<typeof ArtifactSchema>;

export { NETWORK_MODES, NetworkModeSchema } from "./network.ts";
export type { NetworkMode } from "./network.ts";

/** A host file copied into the guest at boot. */
export const BootFileSchema = z.object({
  /** Absolute host path (resolved against the spec file's directory). */
  source: z.string(),
  /** Absolute guest path. */
  target: z.string(),
  /** Octal permission bits, e.g. 0o644. */
  mode: z.number().int().min(0).max(0o7777),
  /** sha256 of the content at create time. */
  sha256: Sha256Hex,
});
export type BootFile = z.infer<typeof BootFileSchema>;

/** How the guest runs its workload: image config merged with the spec file and flags. */
export const BootSpecSchema = z.object({
  /** The full command: entrypoint + cmd, after merging (empty = the guest just serves the channel). */
  argv: z.array(z.string()),
  /** Image Entrypoint (or the override). */
  entrypoint: z.array(z.string()),
  /** Image Cmd (dropped when the entrypoint is overridden, as OCI runtimes do). */
  cmd: z.array(z.string()),
  env: z.record(z.string(), z.string()),
  cwd: z.string(),
  user: z.string(),
  setup: z.array(z.string()),
  files: z.array(BootFileSchema),
  hostname: z.string(),
  stopSignal: z.string(),
  /** Shell used for setup commands and shell-form entrypoints. */
  shell: z.array(z.string()),
});
export type BootSpec = z.infer<typeof BootSpecSchema>;

export const ManifestSchema = z.object({
  version: z.literal(MANIFEST_VERSION),
  name: z.string(),
  createdAt: z.string(),
  backend: BackendNameSchema,
  arch: ArchSchema,
  image: z.object({
    /** As the user wrote it (tags allowed). */
    ref: z.string(),
    /** registry/repo@sha256:... */
    resolvedRef: z.string(),
    /** Manifest digest, sha256:<hex>. */
    digest: z.string(),
    configDigest: z.string().optional(),
  }),
  resources: z.object({
    profile: ProfileNameSchema,
    memoryMib: z.number().int().positive(),
    cpus: z.number().int().positive(),
    /** The disk's real virtual size, MiB; the guest grows its root filesystem to it at boot. */
    sizeMib: z.number().int().positive(),
    /** Set when less was asked for than the image's root filesystem needs (sizeMib was raised to that). */
    requestedSizeMib: z.number().int().positive().optional(),
  }),
  /** Mode and the user-mode settings (add-hosts, DNS upstream, egress allows, published ports); older manifests carry only the mode. */
  network: NetworkSettingsSchema,
  boot: BootSpecSchema,
  artifacts: z.object({
    kernel: ArtifactSchema,
    initramfs: ArtifactSchema,
    rootfsBase: ArtifactSchema.extend({ sizeMib: z.number().positive().optional() }),
    bootConfig: ArtifactSchema,
    /**
     * The workspace disk over rootfsBase, in the format the backend chose (linux-qemu: a qcow2
     * overlay backed by it); its content changes as the guest runs. Manifests written before the
     * backend chose (always qcow2) read the same.
     */
    disk: z.object({ path: z.string(), format: DiskFormatSchema }),
  }),
  /**
   * Set on a fork (`create --from-snapshot`): the snapshot it was made from and the frozen layer of
   * the source workspace its disk is layered on (the source keeps that layer while this exists).
   * `pendingRestore` until the first start has loaded the snapshot's memory.
   */
  fromSnapshot: z.object({ workspace: z.string(), tag: z.string(), layer: z.string(), pendingRestore: z.boolean() }).optional(),
  /** The spec file the workspace was created from, if any. */
  spec: z.object({ path: z.string(), sha256: Sha256Hex }).optional(),
  /** Secret references (never values), resolved at every start. */
  secrets: z.array(SecretRefSchema).optional(),
});
export type Manifest = z.infer<typeof ManifestSchema>;

export async function readManifest(paths: Pick<WorkspacePaths, "manifest" | "name">): Promise<Manifest> {
  const manifest = await readJsonFile(paths.manifest, ManifestSchema, (p) =>
    WorkspaceErrors.WORKSPACE_CORRUPT({
      message: p.kind === "json" ? `${paths.manifest} is not JSON` : `${paths.manifest} is not a valid manifest: ${p.problem}`,
      cause: p.cause,
      details: { path: paths.manifest, ...(p.field ? { field: p.field } : {}) },
    }),
  );
  if (manifest === undefined) {
    throw WorkspaceErrors.WORKSPACE_NOT_FOUND({ message: `workspace ${paths.name} does not exist (no ${paths.manifest})`, details: { workspace: paths.name } });
  }
  return manifest;
}

export async function writeManifest(paths: Pick<WorkspacePaths, "manifest">, manifest: Manifest): Promise<void> {
  await writeJsonAtomic(paths.manifest, ManifestSchema.parse(manifest));
}
