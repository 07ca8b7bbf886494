/** Finding the guest init binary that goes into every initramfs as /init. */
import { readFileSync, statSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { KernelErrors } from "./errors.ts";

/** Where the build puts it, relative to the package root. */
export const GUEST_INIT_RELATIVE_PATH = "guest/build/microagent-init";

/** The package root: the nearest ancestor of this module with microagent's package.json (works from src/ and dist/). */
export function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    try {
      const pkg = JSON.parse(readFileSync(join(dir, "package.json"), "utf8")) as { name?: string };
      if (pkg.name === "microagent") return dir;
    } catch {
      // keep walking up
    }
    const up = dirname(dir);
    if (up === dir) throw new Error("internal: cannot find microagent's package root");
    dir = up;
  }
}

/**
 * The init binary: `explicit`, else `$MICROAGENT_GUEST_INIT`, else `<package root>/guest/build/microagent-init`.
 * Throws GUEST_INIT_MISSING when that file does not exist.
 */
export function resolveGuestInit(explicit?: string, env: NodeJS.ProcessEnv = process.env): string {
  const path = explicit ?? (env.MICROAGENT_GUEST_INIT || join(packageRoot(), GUEST_INIT_RELATIVE_PATH));
  let ok = false;
  try {
    ok = statSync(path).isFile();
  } catch {
    ok = false;
  }
  if (!ok) {
    throw KernelErrors.GUEST_INIT_MISSING({
      message: `the guest init binary ${path} does not exist`,
      details: { path },
    });
  }
  return path;
}
