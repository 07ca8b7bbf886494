/** Where host tools and microagent's own artifacts are found: PATH search and the package root. */
import { accessSync, constants, readFileSync, statSync } from "node:fs";
import { delimiter, dirname, isAbsolute, join } from "node:path";
import { fileURLToPath } from "node:url";

let root: string | undefined;

/**
 * The package root: the nearest ancestor of this module holding microagent's package.json (works
 * from src/ and dist/). `<root>/libexec/firecracker`, the guest init and the default supervisor are
 * found relative to it. Falls back to two levels up (src/util/, dist/util/).
 */
export function packageRoot(): string {
  if (root !== undefined) return root;
  const here = dirname(fileURLToPath(import.meta.url));
  for (let dir = here; ; dir = dirname(dir)) {
    try {
      const pkg = JSON.parse(readFileSync(join(dir, "package.json"), "utf8")) as { name?: string };
      if (pkg.name === "microagent") return (root = dir);
    } catch {
      // keep walking up
    }
    if (dirname(dir) === dir) return (root = dirname(dirname(here)));
  }
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

/** The absolute directories of `env.PATH`, in order (empty and relative entries are ignored). */
export function pathDirs(env: NodeJS.ProcessEnv): string[] {
  return (env.PATH ?? "").split(delimiter).filter((d) => d !== "" && isAbsolute(d));
}

/** The first `<dir>/<name>` that is an executable file, over `dirs` in order (empty entries skipped). */
export function findExecutable(name: string, dirs: readonly string[]): string | undefined {
  for (const dir of dirs) {
    if (dir === "") continue;
    const candidate = join(dir, name);
    if (isExecutableFile(candidate)) return candidate;
  }
  return undefined;
}

/**
 * Find `name` on PATH, then in `extraDirs` (e.g. /usr/sbin for e2fsprogs, which is often not on an
 * unprivileged user's PATH).
 */
export function findOnPath(name: string, env: NodeJS.ProcessEnv, extraDirs: readonly string[] = []): string | undefined {
  return findExecutable(name, [...pathDirs(env), ...extraDirs]);
}

/** The sbin directories unprivileged users often lack on PATH. */
export const SBIN_DIRS = ["/usr/local/sbin", "/usr/sbin", "/sbin"] as const;
