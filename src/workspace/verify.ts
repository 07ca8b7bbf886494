/**
 * Verification: recompute the hashes the manifest recorded at create time and report every
 * difference. The kernel, the initramfs (it carries our injected init) and the boot config are
 * checked always; the rootfs base only while the workspace is still `prepared` (after a boot, the
 * guest writes to its disk and only the base would be comparable, which is shared and large).
 */
import type { Manifest } from "./manifest.ts";
import type { WorkspaceState } from "./events.ts";
import { stat } from "node:fs/promises";
import { sha256FileCached } from "../util/hash.ts";
import { bootConfigTooBig, MAX_BOOT_CONFIG_BYTES } from "./boot-spec.ts";
import { isErrno } from "../util/fs.ts";
import { WorkspaceErrors } from "./errors.ts";

export type VerifiedArtifact = "kernel" | "init" | "rootfs" | "config";

export interface Divergence {
  artifact: VerifiedArtifact;
  /** What differs: the content hash, or the file's presence. */
  field: "sha256" | "exists";
  expected: string;
  actual: string;
  path: string;
  error?: string;
}

export interface ArtifactCheck {
  path: string;
  recordedSha256: string;
  /** undefined when the file could not be read (see the divergence's error). */
  sha256?: string;
  checked: boolean;
}

export interface Verification {
  ok: boolean;
  imageRef: string;
  resolvedRef: string;
  imageDigest: string;
  kernel: ArtifactCheck;
  init: ArtifactCheck;
  rootfs: ArtifactCheck;
  config: ArtifactCheck;
  divergence: Divergence[];
}

export async function verifyManifest(manifest: Manifest, state: WorkspaceState | undefined): Promise<Verification> {
  const divergence: Divergence[] = [];
  const check = async (artifact: VerifiedArtifact, recorded: { path: string; sha256: string }, enabled: boolean): Promise<ArtifactCheck> => {
    const out: ArtifactCheck = { path: recorded.path, recordedSha256: recorded.sha256, checked: enabled };
    if (!enabled) return out;
    try {
      out.sha256 = await sha256FileCached(recorded.path);
      if (out.sha256 !== recorded.sha256) {
        divergence.push({ artifact, field: "sha256", expected: recorded.sha256, actual: out.sha256, path: recorded.path });
      }
    } catch (e) {
      const missing = isErrno(e, "ENOENT");
      divergence.push({
        artifact,
        field: missing ? "exists" : "sha256",
        expected: missing ? "present" : recorded.sha256,
        actual: missing ? "missing" : "unreadable",
        path: recorded.path,
        error: (e as Error).message,
      });
    }
    return out;
  };
  const [kernel, init, config, rootfs] = await Promise.all([
    check("kernel", manifest.artifacts.kernel, true),
    check("init", manifest.artifacts.initramfs, true),
    check("config", manifest.artifacts.bootConfig, true),
    check("rootfs", manifest.artifacts.rootfsBase, state === "prepared"),
  ]);
  const order: VerifiedArtifact[] = ["kernel", "init", "rootfs", "config"];
  divergence.sort((a, b) => order.indexOf(a.artifact) - order.indexOf(b.artifact));
  return {
    ok: divergence.length === 0,
    imageRef: manifest.image.ref,
    resolvedRef: manifest.image.resolvedRef,
    imageDigest: manifest.image.digest,
    kernel,
    init,
    rootfs,
    config,
    divergence,
  };
}

/**
 * For `start`: refuse to boot a kernel or init that no longer matches the manifest unless forced.
 * Config divergence is refused too (it is what the guest would be told to run). Rootfs is not
 * checked here: after the first boot the disk legitimately changes.
 */
export async function assertBootArtifactsVerified(
  name: string,
  manifest: Manifest,
  state: WorkspaceState | undefined,
  options: { force?: boolean } = {},
): Promise<Verification> {
  // Workspaces created before the boot config had a total limit may hold one the supervisor cannot
  // encode: refuse here with the sizes instead of letting the boot die (not overridable by force).
  const configBytes = await stat(manifest.artifacts.bootConfig.path).then((s) => s.size, () => 0);
  if (configBytes > MAX_BOOT_CONFIG_BYTES) throw bootConfigTooBig(configBytes, `${manifest.artifacts.bootConfig.path}`);
  const verification = await verifyManifest(manifest, state);
  const blocking = verification.divergence.filter((d) => d.artifact !== "rootfs");
  if (blocking.length > 0 && !options.force) {
    const first = blocking[0] as Divergence;
    throw WorkspaceErrors.WORKSPACE_DIVERGED({
      message: `workspace ${name}: ${first.artifact} diverged from the manifest (${first.field} expected ${first.expected}, actual ${first.actual}, ${first.path}); refusing to boot it`,
      remediation: `Inspect \`microagent --json status ${name}\` .verification.divergence; re-create the workspace, or pass --force to start if you trust the new ${first.artifact}.`,
      details: { workspace: name, divergence: blocking },
    });
  }
  return verification;
}
