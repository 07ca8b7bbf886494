/** Error codes of the image area (registry client, blob store, image index, load). */
import { defineErrors } from "../contract/errors.ts";

export const ImageErrors = defineErrors({
  IMAGE_REF_INVALID: {
    kind: "permanent",
    remediation: "Use a reference like `alpine`, `ghcr.io/org/repo:tag` or `repo@sha256:<64 hex>`.",
  },
  IMAGE_NOT_FOUND: {
    kind: "not_found",
    remediation: "Check the image name and tag, or run `microagent image list` to see local images.",
  },
  IMAGE_NOT_LOCAL: {
    kind: "not_found",
    remediation: "Run `microagent image pull REF` (or `image load PATH`) first.",
  },
  IMAGE_PLATFORM_UNAVAILABLE: {
    kind: "unsupported",
    remediation: "Pick one of the listed platforms with --arch, or use an image built for this architecture.",
  },
  IMAGE_MANIFEST_INVALID: {
    kind: "permanent",
    remediation: "The registry returned a manifest microagent cannot read; check the image was pushed correctly.",
  },
  IMAGE_MEDIA_TYPE_UNSUPPORTED: {
    kind: "unsupported",
    remediation: "Use an image with OCI or Docker schema2 manifests and tar, tar+gzip or tar+zstd layers.",
  },
  IMAGE_DIGEST_MISMATCH: {
    kind: "permanent",
    remediation: "The content does not match its digest: the registry or archive is corrupt or was tampered with. Nothing was kept; pull again from a trusted source.",
  },
  IMAGE_SIZE_MISMATCH: {
    kind: "permanent",
    remediation: "The blob's size does not match its descriptor: the registry or archive is corrupt. Nothing was kept; pull again from a trusted source.",
  },
  IMAGE_BLOB_MISSING: {
    kind: "not_found",
    remediation: "Run `microagent image prune` to drop broken records, then pull the image again.",
  },
  IMAGE_LAYER_CORRUPT: {
    kind: "permanent",
    remediation: "Remove the image (`microagent image rm REF`) and pull it again.",
  },
  IMAGE_IN_USE_CONFLICT: {
    kind: "conflict",
    remediation: "Another microagent process holds the image index lock; wait for it to finish and retry.",
  },
  IMAGE_INDEX_CORRUPT: {
    kind: "permanent",
    remediation: "Move <state-dir>/images/index.json aside and pull or load the images again.",
  },
  IMAGE_LOAD_INVALID: {
    kind: "permanent",
    remediation: "Pass an OCI image layout directory (with index.json and blobs/) or a `docker save` tar archive.",
  },
  IMAGE_LOAD_AMBIGUOUS: {
    kind: "permanent",
    remediation: "The archive holds several images: pass --ref NAME to choose one.",
  },
  REGISTRY_UNAUTHORIZED: {
    kind: "policy_denied",
    remediation: "Log in with `microagent registry login REGISTRY -u USER --password-stdin`, or check that the image exists and you may read it.",
  },
  REGISTRY_DENIED: {
    kind: "policy_denied",
    remediation: "Your credentials are not allowed to read this repository: check them with `microagent registry list` and log in again.",
  },
  REGISTRY_RATE_LIMITED: {
    kind: "transient",
    retryable: true,
    remediation: "The registry is rate limiting requests; wait a little and retry, or log in for a higher limit.",
  },
  REGISTRY_UNAVAILABLE: {
    kind: "transient",
    retryable: true,
    remediation: "The registry failed or could not be reached; check the network and retry.",
  },
  REGISTRY_INSECURE_REFUSED: {
    kind: "policy_denied",
    remediation: "Plain HTTP is used only for loopback registries; add HOST:PORT to MICROAGENT_INSECURE_REGISTRIES to allow it explicitly.",
  },
  REGISTRY_PROTOCOL: {
    kind: "permanent",
    remediation: "The registry answered in a way microagent does not understand; check the registry URL.",
  },
  REGISTRY_AUTH_FILE_INVALID: {
    kind: "permanent",
    remediation: "Fix or remove the credentials file (<state-dir>/auth.json or $REGISTRY_AUTH_FILE), then log in again.",
  },
  REGISTRY_NOT_LOGGED_IN: {
    kind: "not_found",
    remediation: "Run `microagent registry list` to see the registries you are logged in to.",
  },
});
