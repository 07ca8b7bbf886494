/**
 * The shapes of the image area: what a pulled or loaded image looks like to the rest of microagent
 * (`LocalImage`, consumed by the rootfs builder), and the zod schemas for the OCI/Docker JSON we read.
 */
import { z } from "zod";

/** The runtime config of an image (the `config` object of the OCI image config JSON). */
export const ImageConfigSchema = z
  .object({
    User: z.string().optional(),
    ExposedPorts: z.record(z.string(), z.unknown()).nullish(),
    Env: z.array(z.string()).nullish(),
    Entrypoint: z.array(z.string()).nullish(),
    Cmd: z.array(z.string()).nullish(),
    Volumes: z.record(z.string(), z.unknown()).nullish(),
    WorkingDir: z.string().optional(),
    Labels: z.record(z.string(), z.string()).nullish(),
    StopSignal: z.string().optional(),
  })
  .loose();
export type ImageConfig = z.infer<typeof ImageConfigSchema>;

export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
}

export type LayerCompression = "gzip" | "zstd" | "none";

export interface LocalLayer {
  /** `sha256:<hex>` of the blob as stored (compressed). */
  digest: string;
  mediaType: string;
  /** Bytes of the stored (compressed) blob. */
  size: number;
  /** Blob file in the store, still compressed. Read it through `openLayerStream`. */
  path: string;
  compression: LayerCompression;
}

/** An image whose every blob is present and verified in the local store. */
export interface LocalImage {
  /** The reference as the user named it, normalized (`docker.io/library/alpine:latest`). */
  ref: string;
  /** `registry/repo@sha256:<manifest digest>`: immutable. */
  resolvedRef: string;
  /** Digest of the platform-specific image manifest (not of an index). */
  manifestDigest: string;
  platform: Platform;
  config: ImageConfig;
  configDigest: string;
  /** Bottom layer first. */
  layers: LocalLayer[];
  /** Sum of the stored sizes of the config and layer blobs (compressed), in bytes. */
  sizeBytes: number;
  /** Diff IDs from the image config (sha256 of each uncompressed layer), bottom first. */
  diffIds: string[];
}

// --- Wire schemas: OCI image spec and Docker schema2 ----------------------------------------------

export const MEDIA = {
  ociIndex: "application/vnd.oci.image.index.v1+json",
  ociManifest: "application/vnd.oci.image.manifest.v1+json",
  ociConfig: "application/vnd.oci.image.config.v1+json",
  dockerList: "application/vnd.docker.distribution.manifest.list.v2+json",
  dockerManifest: "application/vnd.docker.distribution.manifest.v2+json",
  dockerConfig: "application/vnd.docker.container.image.v1+json",
} as const;

/** Every manifest media type we ask for in `Accept`. */
export const MANIFEST_ACCEPT = [MEDIA.ociIndex, MEDIA.ociManifest, MEDIA.dockerList, MEDIA.dockerManifest];

const DigestSchema = z.string().regex(/^sha256:[a-f0-9]{64}$/, "expected sha256:<64 hex>");

export const DescriptorSchema = z
  .object({
    mediaType: z.string(),
    digest: DigestSchema,
    size: z.number().int().nonnegative(),
    urls: z.array(z.string()).optional(),
    annotations: z.record(z.string(), z.string()).optional(),
    platform: z
      .object({
        os: z.string(),
        architecture: z.string(),
        variant: z.string().optional(),
        "os.version": z.string().optional(),
      })
      .loose()
      .optional(),
  })
  .loose();
export type Descriptor = z.infer<typeof DescriptorSchema>;

export const IndexSchema = z
  .object({
    schemaVersion: z.literal(2),
    mediaType: z.string().optional(),
    manifests: z.array(DescriptorSchema),
  })
  .loose();
export type ImageIndex = z.infer<typeof IndexSchema>;

export const ManifestSchema = z
  .object({
    schemaVersion: z.literal(2),
    mediaType: z.string().optional(),
    config: DescriptorSchema,
    layers: z.array(DescriptorSchema),
  })
  .loose();
export type ImageManifest = z.infer<typeof ManifestSchema>;

export const ConfigFileSchema = z
  .object({
    architecture: z.string(),
    os: z.string(),
    variant: z.string().optional(),
    config: ImageConfigSchema.nullish(),
    rootfs: z.object({ type: z.string(), diff_ids: z.array(DigestSchema) }).loose(),
  })
  .loose();
export type ConfigFile = z.infer<typeof ConfigFileSchema>;

export { DigestSchema };
