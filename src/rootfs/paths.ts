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
