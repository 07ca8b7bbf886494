/**
 * Layer entry names -> paths relative to the root. The rules are strict on purpose: a layer that
 * names `..` anywhere is refused (never resolved lexically and clamped), because no well-formed
 * image needs it and accepting it is how extraction escapes the root.
 */

export type NormalizeResult = { ok: true; parts: string[] } | { ok: false; reason: string };

/**
 * `./usr/bin/`, `/usr/bin`, `usr//bin` -> ["usr", "bin"]. The root itself is []. Leading `/` is
 * accepted (some writers emit absolute names; they are relative to the image root, as in docker).
 */
export function normalizeEntryPath(name: string): NormalizeResult {
  if (name.includes("\0")) return { ok: false, reason: "contains a NUL byte" };
  // debugfs scripts are line based: a name with a line break cannot be addressed safely there.
  if (/[\n\r]/.test(name)) return { ok: false, reason: "contains a line break" };
  const parts: string[] = [];
  for (const part of name.split("/")) {
    if (part === "" || part === ".") continue;
    if (part === "..") return { ok: false, reason: "contains '..'" };
    if (Buffer.byteLength(part) > 255) return { ok: false, reason: "has a component longer than 255 bytes" };
    parts.push(part);
  }
  if (Buffer.byteLength(parts.join("/")) > 4095) return { ok: false, reason: "is longer than 4095 bytes" };
  return { ok: true, parts };
}

/** The OCI whiteout prefix and the opaque-directory marker. */
export const WHITEOUT_PREFIX = ".wh.";
export const OPAQUE_MARKER = ".wh..wh..opq";

/** xattr namespaces an image may set: what Linux defines for ext4 (POSIX ACLs live under `system.`). */
export const XATTR_NAMESPACES = ["user.", "trusted.", "security.", "system."] as const;
/** Linux's XATTR_NAME_MAX. */
export const MAX_XATTR_NAME = 255;

/**
 * Why an xattr name is refused, or undefined when it is fine: a known namespace followed by
 * dot-separated components of `[A-Za-z0-9_@:+-]`, none empty and none starting with `-`, at most
 * 255 bytes. Every name real images carry (`security.capability`, `security.selinux`,
 * `user.xdg.origin.url`, `trusted.overlay.opaque`, `system.posix_acl_access`) fits.
 */
export function xattrNameProblem(name: string): string | undefined {
  const ns = XATTR_NAMESPACES.find((p) => name.startsWith(p));
  if (!ns) return `is not in a known namespace (${XATTR_NAMESPACES.join(", ")})`;
  if (Buffer.byteLength(name) > MAX_XATTR_NAME) return `is longer than ${MAX_XATTR_NAME} bytes`;
  for (const part of name.slice(ns.length).split(".")) {
    if (part === "") return "has an empty component";
    if (part.startsWith("-")) return "has a component starting with '-'";
    if (!/^[A-Za-z0-9_@:+-]+$/.test(part)) return "contains a character outside [A-Za-z0-9._@:+-] (control characters, blanks and quotes are refused)";
  }
  return undefined;
}

export function isValidXattrName(name: string): boolean {
  return xattrNameProblem(name) === undefined;
}
