/** Finding the guest init binary that goes into every initramfs as /init. */
import { statSync } from "node:fs";
import { join } from "node:path";
import { packageRoot } from "../util/exec-path.ts";
import { KernelErrors } from "./errors.ts";

/** Where the build puts it, relative to the package root. */
export const GUEST_INIT_RELATIVE_PATH = "guest/build/microagent-init";

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
