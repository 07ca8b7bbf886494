/** Where host tools and microagent's own artifacts are found. */
import { accessSync, constants, statSync } from "node:fs";
import { delimiter, isAbsolute, join } from "node:path";
import { fileURLToPath } from "node:url";

/**
 * The package root (the directory holding package.json): two levels up from both src/host/ and
 * dist/host/. `<prefix>/libexec/firecracker` and the default supervisor are found relative to it.
 */
export function packageRoot(): string {
  return fileURLToPath(new URL("../../", import.meta.url)).replace(/\/$/, "");
}

export function isExecutableFile(path: string): boolean {
  try {
    if (!statSync(path).isFile()) return false;
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

export function isReadableFile(path: string): boolean {
  try {
    if (!statSync(path).isFile()) return false;
    accessSync(path, constants.R_OK);
    return true;
  } catch {
    return false;
  }
}

/**
 * Find `name` on PATH, then in `extraDirs` (e.g. /usr/sbin for e2fsprogs, which is often not on an
 * unprivileged user's PATH).
 */
export function findOnPath(name: string, env: NodeJS.ProcessEnv, extraDirs: readonly string[] = []): string | undefined {
  const dirs = [...(env.PATH ?? "").split(delimiter), ...extraDirs].filter((d) => d !== "" && isAbsolute(d));
  for (const dir of dirs) {
    const candidate = join(dir, name);
    if (isExecutableFile(candidate)) return candidate;
  }
  return undefined;
}

export const SBIN_DIRS = ["/usr/local/sbin", "/usr/sbin", "/sbin"] as const;
