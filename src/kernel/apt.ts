/**
 * The default kernel source: the host's own package manager. We ask apt which versioned kernel the
 * cloud meta-package points at, and download that .deb with `apt-get download` (no download host is
 * hard-coded: apt uses the host's configured mirrors, and it checks the package against the signed
 * index). Downloads are cached by file name and re-verified against the index's SHA256 on reuse.
 */
import { rename, readdir, rm, mkdtemp } from "node:fs/promises";
import { basename, join } from "node:path";
import type { Arch } from "../contract/backend.ts";
import { KernelErrors } from "./errors.ts";
import { ensureDir, pathExists } from "../util/fs.ts";
import { sha256File } from "../util/hash.ts";
import { runTool } from "./tools.ts";

export interface AptPackage {
  name: string;
  version: string;
  /** SHA256 from the package index. */
  sha256: string;
  /** The .deb's file name (basename of the index's Filename). */
  fileName: string;
  depends: string[];
}

/** Meta-packages that track the current kernel, tried in order (Debian cloud, then Ubuntu's). */
export function metaPackageCandidates(arch: Arch): string[] {
  return [`linux-image-cloud-${arch}`, "linux-image-virtual", "linux-image-kvm"];
}

/** Parse one `apt-cache show` record into its fields (continuation lines folded). */
export function parseControlRecord(text: string): Map<string, string> {
  const fields = new Map<string, string>();
  let last: string | undefined;
  for (const line of text.split("\n")) {
    if (line === "") {
      if (fields.size > 0) break;
      continue;
    }
    if (/^\s/.test(line) && last) {
      fields.set(last, `${fields.get(last) ?? ""}\n${line.trim()}`);
      continue;
    }
    const colon = line.indexOf(":");
    if (colon <= 0) continue;
    last = line.slice(0, colon);
    fields.set(last, line.slice(colon + 1).trim());
  }
  return fields;
}

/** Package names from a Depends field, alternatives flattened, version constraints dropped. */
export function parseDepends(field: string | undefined): string[] {
  if (!field) return [];
  return field
    .split(",")
    .flatMap((alt) => alt.split("|"))
    .map((d) => d.trim().replace(/\s*\(.*\)$/, "").replace(/:.*$/, ""))
    .filter((d) => d !== "");
}

export function packageFromRecord(text: string): AptPackage | undefined {
  const f = parseControlRecord(text);
  const name = f.get("Package");
  const version = f.get("Version");
  const sha256 = f.get("SHA256");
  const filename = f.get("Filename");
  if (!name || !version || !sha256 || !filename) return undefined;
  return { name, version, sha256: sha256.toLowerCase(), fileName: basename(filename), depends: parseDepends(f.get("Depends")) };
}

async function showPackage(name: string): Promise<AptPackage | undefined> {
  const r = await runTool("apt-cache", ["show", "--no-all-versions", name], { timeoutMs: 60_000 });
  if (r.code !== 0) return undefined;
  return packageFromRecord(r.stdout.toString("utf8"));
}

export interface AptKernelPlan {
  meta: AptPackage;
  image: AptPackage;
  /** Extra packages holding the modules (Ubuntu splits them into linux-modules-*). */
  modules: AptPackage[];
}

/** Resolve the meta-package to the versioned image package (and its module packages). */
export async function resolveAptKernel(arch: Arch): Promise<AptKernelPlan> {
  const tried: string[] = [];
  for (const metaName of metaPackageCandidates(arch)) {
    tried.push(metaName);
    const meta = await showPackage(metaName);
    if (!meta) continue;
    const imageName = meta.depends.find((d) => d.startsWith("linux-image-") && /\d/.test(d));
    if (!imageName) continue;
    const image = await showPackage(imageName);
    if (!image) continue;
    const modules: AptPackage[] = [];
    for (const dep of [...image.depends, ...meta.depends]) {
      if (!dep.startsWith("linux-modules-") || dep.startsWith("linux-modules-extra")) continue;
      if (modules.some((m) => m.name === dep)) continue;
      const pkg = await showPackage(dep);
      if (pkg) modules.push(pkg);
    }
    return { meta, image, modules };
  }
  throw KernelErrors.KERNEL_PACKAGE_UNAVAILABLE({
    message: `the package manager knows none of the kernel packages ${tried.join(", ")} for ${arch}`,
    details: { tried, arch },
  });
}

/**
 * The .deb for `pkg` in `cacheDir`, downloading it with `apt-get download` when it is not cached.
 * The cached file must match the index's SHA256; a mismatching one is replaced.
 */
export async function fetchDeb(pkg: AptPackage, cacheDir: string): Promise<string> {
  await ensureDir(cacheDir);
  const target = join(cacheDir, pkg.fileName);
  if (await pathExists(target)) {
    if ((await sha256File(target)) === pkg.sha256) return target;
    await rm(target, { force: true });
  }
  const tmp = await mkdtemp(join(cacheDir, ".dl-"));
  try {
    const r = await runTool("apt-get", ["download", `${pkg.name}=${pkg.version}`], { cwd: tmp, timeoutMs: 600_000 });
    const files = (await readdir(tmp)).filter((f) => f.endsWith(".deb"));
    const file = files.find((f) => f === pkg.fileName) ?? files[0];
    if (r.code !== 0 || !file) {
      throw KernelErrors.KERNEL_DOWNLOAD_FAILED({
        message: `apt-get download ${pkg.name}=${pkg.version} failed: ${r.stderr.trim().split("\n").slice(-3).join(" / ") || `exit code ${r.code}`}`,
        details: { package: pkg.name, version: pkg.version },
      });
    }
    const got = await sha256File(join(tmp, file));
    if (got !== pkg.sha256) {
      throw KernelErrors.KERNEL_SHA256_MISMATCH({
        message: `the downloaded ${file} does not match the package index (sha256 ${got}, expected ${pkg.sha256})`,
        remediation: "Run `apt-get update` and retry; if it persists, the mirror serves a corrupted or replaced package.",
        details: { package: pkg.name, expected: pkg.sha256, actual: got },
      });
    }
    await rename(join(tmp, file), target);
    return target;
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}
