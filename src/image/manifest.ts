/** Classifying and validating manifest documents (shared by pull and load). Pure: no I/O. */
import { ImageErrors } from "./errors.ts";
import { compressionOf } from "./layer.ts";
import { ConfigFileSchema, IndexSchema, MEDIA, ManifestSchema, type ConfigFile, type ImageIndex, type ImageManifest } from "./types.ts";

export type ParsedManifest =
  | { kind: "index"; mediaType: string; index: ImageIndex }
  | { kind: "manifest"; mediaType: string; manifest: ImageManifest };

const SCHEMA1 = /application\/vnd\.docker\.distribution\.manifest\.v1/;

/**
 * Parse a manifest body. The media type comes from the document when it says, else from the
 * Content-Type header, else from its shape (OCI allows omitting mediaType).
 */
export function parseManifest(body: Buffer, contentType: string | undefined, what: string): ParsedManifest {
  let json: unknown;
  try {
    json = JSON.parse(body.toString("utf8"));
  } catch (e) {
    throw ImageErrors.IMAGE_MANIFEST_INVALID({ message: `${what}: manifest is not valid JSON`, cause: e });
  }
  const declared = (json as { mediaType?: unknown }).mediaType;
  const ct = contentType?.split(";")[0]?.trim();
  const mediaType =
    typeof declared === "string" ? declared : ct && ct !== "application/json" && ct !== "application/octet-stream" ? ct : undefined;
  if ((mediaType && SCHEMA1.test(mediaType)) || (json as { schemaVersion?: unknown }).schemaVersion === 1) {
    throw ImageErrors.IMAGE_MEDIA_TYPE_UNSUPPORTED({
      message: `${what} uses the retired Docker schema 1 manifest format`,
      remediation: "Re-push the image with a current Docker or OCI tool (schema 2 / OCI manifests).",
    });
  }
  const isIndex =
    mediaType === MEDIA.ociIndex || mediaType === MEDIA.dockerList || (mediaType === undefined && Array.isArray((json as { manifests?: unknown }).manifests));
  if (isIndex) {
    const parsed = IndexSchema.safeParse(json);
    if (!parsed.success) throw invalid(what, parsed.error.issues);
    return { kind: "index", mediaType: mediaType ?? MEDIA.ociIndex, index: parsed.data };
  }
  if (mediaType !== undefined && mediaType !== MEDIA.ociManifest && mediaType !== MEDIA.dockerManifest) {
    throw ImageErrors.IMAGE_MEDIA_TYPE_UNSUPPORTED({ message: `${what} has unsupported manifest media type ${mediaType}` });
  }
  const parsed = ManifestSchema.safeParse(json);
  if (!parsed.success) throw invalid(what, parsed.error.issues);
  for (const layer of parsed.data.layers) {
    if (compressionOf(layer.mediaType) === undefined) {
      throw ImageErrors.IMAGE_MEDIA_TYPE_UNSUPPORTED({
        message: `${what} has a layer of unsupported media type ${layer.mediaType} (${layer.digest})`,
        details: { digest: layer.digest, mediaType: layer.mediaType },
      });
    }
  }
  return { kind: "manifest", mediaType: mediaType ?? MEDIA.ociManifest, manifest: parsed.data };
}

export function parseConfig(body: Buffer, manifest: ImageManifest, what: string): ConfigFile {
  let json: unknown;
  try {
    json = JSON.parse(body.toString("utf8"));
  } catch (e) {
    throw ImageErrors.IMAGE_MANIFEST_INVALID({ message: `${what}: image config is not valid JSON`, cause: e });
  }
  const parsed = ConfigFileSchema.safeParse(json);
  if (!parsed.success) throw invalid(`${what} config`, parsed.error.issues);
  if (parsed.data.rootfs.diff_ids.length !== manifest.layers.length) {
    throw ImageErrors.IMAGE_MANIFEST_INVALID({
      message: `${what}: manifest has ${manifest.layers.length} layers but the config lists ${parsed.data.rootfs.diff_ids.length} diff_ids`,
    });
  }
  return parsed.data;
}

function invalid(what: string, issues: ReadonlyArray<{ path: PropertyKey[]; message: string }>) {
  const first = issues[0];
  return ImageErrors.IMAGE_MANIFEST_INVALID({
    message: `${what}: invalid manifest${first ? ` at ${first.path.map(String).join(".") || "(root)"}: ${first.message}` : ""}`,
  });
}
