/** The package version, read from the package root's package.json. */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { packageRoot } from "./util/exec-path.ts";

let cached: string | undefined;
export function packageVersion(): string {
  if (cached === undefined) {
    const pkg = JSON.parse(readFileSync(join(packageRoot(), "package.json"), "utf8")) as { version?: string };
    cached = pkg.version ?? "0.0.0";
  }
  return cached;
}
