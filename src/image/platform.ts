/** Choosing one platform's manifest from an image index / Docker manifest list. Pure: no I/O. */
import { normalizeArch } from "../contract/backend.ts";
import { ImageErrors } from "./errors.ts";
import type { Descriptor, Platform } from "./types.ts";

export function formatPlatform(p: Platform): string {
  return `${p.os}/${p.architecture}${p.variant ? `/${p.variant}` : ""}`;
}

/** Normalize the requested platform: architecture aliases (x86_64, aarch64) and arm64's default variant. */
export function normalizePlatform(p: Platform): Platform {
  const arch = normalizeArch(p.architecture) ?? p.architecture.toLowerCase();
  return { os: p.os.toLowerCase(), architecture: arch, ...(p.variant ? { variant: p.variant } : {}) };
}

function variantMatches(want: Platform, have: Platform): boolean {
  if (!want.variant) {
    // arm64 images are labelled v8 or not at all; both run on an arm64 host.
    return !have.variant || (have.architecture === "arm64" && have.variant === "v8");
  }
  return want.variant === have.variant || (want.architecture === "arm64" && want.variant === "v8" && !have.variant);
}

/**
 * The descriptor for `want` among an index's manifests. Entries without a platform, or with
 * `unknown/unknown` (build attestations), are never chosen. Exact variant beats a compatible one.
 */
export function selectPlatform(manifests: readonly Descriptor[], want: Platform, what: string): Descriptor {
  const w = normalizePlatform(want);
  const candidates = manifests.filter((m) => {
    if (!m.platform) return false;
    const have = normalizePlatform(m.platform);
    return have.os === w.os && have.architecture === w.architecture && variantMatches(w, have);
  });
  const exact = candidates.find((m) => (m.platform?.variant ?? undefined) === w.variant);
  const chosen = exact ?? candidates[0];
  if (!chosen) {
    const available = manifests
      .filter((m) => m.platform && m.platform.os !== "unknown")
      .map((m) => formatPlatform(m.platform as Platform));
    throw ImageErrors.IMAGE_PLATFORM_UNAVAILABLE({
      message: `${what} has no ${formatPlatform(w)} image; available: ${available.length ? available.join(", ") : "none"}`,
      details: { wanted: formatPlatform(w), available },
    });
  }
  return chosen;
}
