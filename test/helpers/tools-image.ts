/**
 * A test image with real network clients: busybox plus this Debian host's curl, python3 (stdlib,
 * without test/, idle and GUI dirs or bytecode caches) and openssl, each with the shared libraries ldd
 * lists, copied at their host paths into one OCI layer (umoci). Built once per test process.
 */
import { execFileSync } from "node:child_process";
import { cpSync, existsSync, mkdirSync, readdirSync, realpathSync, rmSync, statSync, symlinkSync } from "node:fs";
import { dirname, join } from "node:path";
import { addTreeLayer, buildBusyboxImage, type BuildImageOptions, type OciImage } from "./oci-image.ts";

const BINARIES = ["/usr/bin/curl", "/usr/bin/python3.11", "/usr/bin/openssl"];
const PYLIB = "/usr/lib/python3.11";
const DROP = new Set(["test", "tests", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3", "__pycache__", "site-packages", "dist-packages", "pydoc_data", "config-3.11-x86_64-linux-gnu"]);

/** Every shared object `file` needs (ldd), as absolute host paths. */
function libsOf(file: string): string[] {
  let out = "";
  try {
    out = execFileSync("ldd", [file], { encoding: "utf8" });
  } catch {
    return [];
  }
  const libs: string[] = [];
  for (const line of out.split("\n")) {
    const m = /=>\s*(\/\S+)/.exec(line) ?? /^\s*(\/\S+)\s+\(/.exec(line);
    if (m) libs.push(m[1]!);
  }
  return libs;
}

function copyFile(rootfs: string, path: string): void {
  const dest = join(rootfs, path);
  if (existsSync(dest)) return;
  mkdirSync(dirname(dest), { recursive: true });
  cpSync(realpathSync(path), dest, { dereference: true });
}

let cached: Promise<OciImage> | undefined;

export function buildToolsImage(opts: BuildImageOptions = {}): Promise<OciImage> {
  cached ??= (async () => {
    for (const b of BINARIES) if (!existsSync(b)) throw new Error(`tools image: ${b} is not installed on this host`);
    const image = await buildBusyboxImage(opts);
    await addTreeLayer(image, async (rootfs) => {
      const libs = new Set<string>();
      for (const b of BINARIES) {
        copyFile(rootfs, b);
        for (const l of libsOf(b)) libs.add(l);
      }
      cpSync(PYLIB, join(rootfs, PYLIB), { recursive: true, dereference: true, filter: (src) => !DROP.has(src.split("/").pop()!) });
      const dyn = join(PYLIB, "lib-dynload");
      for (const f of readdirSync(dyn)) if (f.endsWith(".so")) for (const l of libsOf(join(dyn, f))) libs.add(l);
      for (const l of libs) copyFile(rootfs, l);
      symlinkSync("python3.11", join(rootfs, "usr/bin/python3"));
      // The image's own /etc/ssl is not needed for plain HTTP; leave openssl's config out.
      const lean = join(rootfs, PYLIB, "site-packages");
      if (existsSync(lean) && statSync(lean).isDirectory()) rmSync(lean, { recursive: true });
    });
    return image;
  })();
  return cached;
}
