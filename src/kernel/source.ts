/**
 * Turning a kernel source (Debian/Ubuntu .deb files, or a bare kernel image) into a kernel image
 * plus, when the source has them, the modules the guest needs, decompressed.
 */
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as zlib from "node:zlib";
import { KernelErrors } from "./errors.ts";
import { GUEST_MODULES, ModuleResolutionError, resolveModules, uncompressedPath, type ModuleResolution } from "./modules.ts";
import { runTool } from "./tools.ts";

export type KernelFileKind = "deb" | "bzimage" | "arm64-image" | "unknown";

/** Sniff what a file is from its first bytes. */
export function sniffKernelFile(head: Buffer): KernelFileKind {
  if (head.subarray(0, 8).toString("latin1") === "!<arch>\n") return "deb";
  // x86 boot protocol: "HdrS" at 0x202 (Documentation/arch/x86/boot.rst).
  if (head.length >= 0x206 && head.subarray(0x202, 0x206).toString("latin1") === "HdrS") return "bzimage";
  // arm64 Image header: magic "ARM\x64" at offset 56 (Documentation/arch/arm64/booting.rst).
  if (head.length >= 60 && head.readUInt32LE(56) === 0x644d5241) return "arm64-image";
  return "unknown";
}

/**
 * The kernel release of a bzImage ("6.1.0-56-cloud-amd64"), from the header's kernel_version pointer
 * (offset 0x20E: a string at that value + 0x200). Undefined when absent.
 */
export function bzImageVersion(image: Buffer): string | undefined {
  if (sniffKernelFile(image) !== "bzimage" || image.length < 0x210) return undefined;
  const ptr = image.readUInt16LE(0x20e);
  if (ptr === 0) return undefined;
  const start = ptr + 0x200;
  if (start >= image.length) return undefined;
  const end = image.indexOf(0, start);
  const text = image.subarray(start, end < 0 ? Math.min(image.length, start + 256) : end).toString("latin1");
  const release = text.split(" ")[0];
  return release && /^[0-9][\w.+~-]*$/.test(release) ? release : undefined;
}

export interface ExtractedKernel {
  kernelPath: string;
  version: string;
  /** Absent for a bare kernel image: the guest drivers must then be built in. */
  modules?: {
    dir: string;
    resolution: ModuleResolution;
  };
}

/** Unpack .deb files into `workDir` and find the kernel image and its modules directory. */
export async function extractDebs(debs: readonly string[], workDir: string): Promise<ExtractedKernel> {
  for (const deb of debs) {
    const r = await runTool("dpkg-deb", ["-x", deb, workDir], { timeoutMs: 300_000 });
    if (r.code !== 0) {
      throw KernelErrors.KERNEL_SOURCE_INVALID({ message: `cannot unpack ${deb}: ${r.stderr.trim() || `dpkg-deb exit code ${r.code}`}`, details: { path: deb } });
    }
  }
  const bootDir = join(workDir, "boot");
  const images = (await readdir(bootDir).catch(() => [] as string[])).filter((f) => /^(vmlinuz|vmlinux)-/.test(f)).sort();
  const image = images[0];
  if (!image) {
    throw KernelErrors.KERNEL_SOURCE_INVALID({
      message: `no /boot/vmlinuz-* in ${debs.join(", ")}: that is not a kernel image package`,
      details: { debs },
    });
  }
  const version = image.replace(/^vmlinu[xz]-/, "");
  const kernelPath = join(bootDir, image);
  // Merged-/usr packages ship modules under /usr/lib/modules.
  for (const base of [workDir, join(workDir, "usr")]) {
    const dir = join(base, "lib", "modules", version);
    if (!(await isDir(dir))) continue;
    if (!(await isFile(join(dir, "modules.dep")))) {
      // Debian ships no modules.dep (the postinst runs depmod): generate it in the scratch tree.
      const r = await runTool("depmod", ["-b", base, version], { timeoutMs: 120_000 });
      if (r.code !== 0) throw KernelErrors.KERNEL_SOURCE_INVALID({ message: `depmod failed for ${version}: ${r.stderr.trim()}`, details: { version } });
    }
    const depText = await readFile(join(dir, "modules.dep"), "utf8");
    const builtinText = await readFile(join(dir, "modules.builtin"), "utf8").catch(() => "");
    return { kernelPath, version, modules: { dir, resolution: resolveGuestModules(depText, builtinText, version) } };
  }
  // No modules at all: only workable when the drivers are built in, which we cannot check without
  // modules.builtin; the boot will tell.
  return { kernelPath, version };
}

function resolveGuestModules(depText: string, builtinText: string, version: string): ModuleResolution {
  try {
    return resolveModules(depText, builtinText, GUEST_MODULES);
  } catch (e) {
    if (e instanceof ModuleResolutionError) {
      throw KernelErrors.KERNEL_MODULES_MISSING({
        message: `kernel ${version} lacks what the guest needs: ${e.missing.join(", ")} (neither built in nor a module)`,
        details: { version, missing: e.missing },
      });
    }
    throw KernelErrors.KERNEL_SOURCE_INVALID({ message: `kernel ${version} has a broken modules.dep: ${(e as Error).message}`, cause: e });
  }
}

/** A module's bytes, decompressed on the host (the guest init loads plain .ko files). */
export async function readModule(modulesDir: string, relPath: string): Promise<{ path: string; data: Buffer }> {
  const full = join(modulesDir, relPath);
  const raw = await readFile(full);
  let data: Buffer;
  if (relPath.endsWith(".ko.zst")) data = zlib.zstdDecompressSync(raw);
  else if (relPath.endsWith(".ko.gz")) data = zlib.gunzipSync(raw);
  else if (relPath.endsWith(".ko.xz")) {
    const r = await runTool("xz", ["-dc", full], { timeoutMs: 60_000 });
    if (r.code !== 0) throw KernelErrors.KERNEL_SOURCE_INVALID({ message: `cannot decompress ${relPath}: ${r.stderr.trim()}` });
    data = r.stdout;
  } else data = raw;
  return { path: uncompressedPath(relPath), data };
}

async function isDir(p: string): Promise<boolean> {
  return (await stat(p).catch(() => undefined))?.isDirectory() ?? false;
}

async function isFile(p: string): Promise<boolean> {
  return (await stat(p).catch(() => undefined))?.isFile() ?? false;
}

/** Compressed-payload formats a bzImage may carry, by their magic bytes. */
const PAYLOAD_FORMATS: ReadonlyArray<{ name: string; magic: Buffer; tool?: string[] }> = [
  { name: "gzip", magic: Buffer.from([0x1f, 0x8b]) },
  { name: "zstd", magic: Buffer.from([0x28, 0xb5, 0x2f, 0xfd]) },
  { name: "xz", magic: Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]), tool: ["xz", "-dc"] },
  { name: "lz4", magic: Buffer.from([0x02, 0x21, 0x4c, 0x18]), tool: ["lz4", "-dc"] },
];

/**
 * The uncompressed ELF kernel (vmlinux) inside an x86 bzImage, for VMMs that boot ELF kernels
 * (Firecracker). The setup header gives the payload's place (payload_offset at 0x248, payload_length
 * at 0x24c, relative to the protected-mode code after the setup sectors); the kernel build appends
 * the uncompressed size as the payload's last 4 bytes (little endian), which we check the result against.
 */
export async function extractVmlinux(bzImage: Buffer): Promise<Buffer> {
  const fail = (why: string) => KernelErrors.KERNEL_SOURCE_INVALID({ message: `cannot extract vmlinux from the kernel image: ${why}` });
  if (sniffKernelFile(bzImage) !== "bzimage" || bzImage.length < 0x250) throw fail("not a bzImage");
  if (bzImage.readUInt16LE(0x206) < 0x208) throw fail("boot protocol older than 2.08 (no payload fields)");
  const setupSects = bzImage[0x1f1] || 4;
  const start = (setupSects + 1) * 512 + bzImage.readUInt32LE(0x248);
  const length = bzImage.readUInt32LE(0x24c);
  if (length < 8 || start + length > bzImage.length) throw fail("payload out of bounds");
  const payload = bzImage.subarray(start, start + length);
  const expected = payload.readUInt32LE(payload.length - 4);
  const format = PAYLOAD_FORMATS.find((f) => payload.subarray(0, f.magic.length).equals(f.magic));
  if (!format) throw fail(`unknown payload compression (magic ${payload.subarray(0, 6).toString("hex")})`);
  let out: Buffer;
  if (format.name === "gzip") out = zlib.gunzipSync(payload);
  else if (format.name === "zstd") out = zlib.zstdDecompressSync(payload.subarray(0, payload.length - 4));
  else {
    const [tool, ...args] = format.tool as [string, ...string[]];
    const dir = await mkdtemp(join(tmpdir(), "microagent-vmlinux-"));
    try {
      // The trailing size is not part of the compressed stream: leave it out.
      await writeFile(join(dir, "payload"), payload.subarray(0, payload.length - 4));
      const r = await runTool(tool, [...args, join(dir, "payload")], { timeoutMs: 120_000 });
      out = r.stdout;
      if (out.length !== expected) throw fail(`${tool} produced ${out.length} bytes, expected ${expected}: ${r.stderr.trim()}`);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }
  if (out.length !== expected) throw fail(`decompressed ${out.length} bytes, expected ${expected}`);
  if (out.subarray(0, 4).toString("latin1") !== "\x7fELF") throw fail("the payload is not an ELF kernel");
  return out;
}
