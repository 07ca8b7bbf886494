/**
 * A cache of unpacked kernels, next to the download cache: the kernel image and the decompressed guest
 * modules of one source, keyed by the source's sha256 (and the module list microagent asks for).
 * Unpacking a Debian kernel package costs seconds of CPU (100+ MiB of modules, then depmod); every
 * further state dir that installs the same kernel (each test, each user of a shared cache) copies
 * ~15 MiB instead. Entries are checked against their own recorded sha256s on use; a damaged entry is
 * ignored and rebuilt.
 */
import { mkdtemp, readFile, rename, rm, writeFile, copyFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { z } from "zod";
import { ensureDir } from "../util/fs.ts";
import { sha256Bytes, sha256File } from "../util/hash.ts";
import type { InitramfsModule } from "./initramfs.ts";
import { GUEST_MODULES } from "./modules.ts";

const FORMAT = 1;
const Sha256 = z.string().regex(/^[0-9a-f]{64}$/);
const PreparedSchema = z.object({
  format: z.literal(FORMAT),
  version: z.string(),
  kernelSha256: Sha256,
  modules: z.array(z.object({ path: z.string(), sha256: Sha256 })),
  builtin: z.array(z.string()),
  unavailable: z.array(z.string()),
});

export interface PreparedKernel {
  kernelPath: string;
  version: string;
  /** Decompressed, in load order. */
  modules: InitramfsModule[];
  builtin: string[];
  unavailable: string[];
}

/** The cache key of a source: its content hashes plus what we extract from it. */
export function preparedKey(sourceSha256s: readonly string[]): string {
  return sha256Bytes(JSON.stringify({ format: FORMAT, sources: sourceSha256s, modules: GUEST_MODULES.map((m) => m.name) }));
}

export function preparedDir(cacheDir: string, key: string): string {
  return join(cacheDir, "prepared", key);
}

/** The cached entry, or undefined when absent or damaged. */
export async function loadPrepared(dir: string): Promise<PreparedKernel | undefined> {
  let meta: z.infer<typeof PreparedSchema>;
  try {
    const parsed = PreparedSchema.safeParse(JSON.parse(await readFile(join(dir, "prepared.json"), "utf8")));
    if (!parsed.success) return undefined;
    meta = parsed.data;
  } catch {
    return undefined;
  }
  try {
    const kernelPath = join(dir, "vmlinuz");
    if ((await sha256File(kernelPath)) !== meta.kernelSha256) return undefined;
    const modules: InitramfsModule[] = [];
    for (const m of meta.modules) {
      if (m.path.startsWith("/") || m.path.split("/").includes("..")) return undefined;
      const data = await readFile(join(dir, "modules", m.path));
      if (sha256Bytes(data) !== m.sha256) return undefined;
      modules.push({ path: m.path, data });
    }
    return { kernelPath, version: meta.version, modules, builtin: meta.builtin, unavailable: meta.unavailable };
  } catch {
    return undefined;
  }
}

/** Store an entry (best effort: a concurrent writer of the same key wins, and a failure only costs speed). */
export async function savePrepared(dir: string, p: PreparedKernel): Promise<void> {
  try {
    await ensureDir(dirname(dir));
    const staging = await mkdtemp(`${dir}.tmp-`);
    try {
      await copyFile(p.kernelPath, join(staging, "vmlinuz"));
      for (const m of p.modules) {
        const target = join(staging, "modules", m.path);
        await ensureDir(dirname(target));
        await writeFile(target, m.data, { mode: 0o600 });
      }
      const meta: z.infer<typeof PreparedSchema> = {
        format: FORMAT,
        version: p.version,
        kernelSha256: await sha256File(join(staging, "vmlinuz")),
        modules: p.modules.map((m) => ({ path: m.path, sha256: sha256Bytes(m.data) })),
        builtin: p.builtin,
        unavailable: p.unavailable,
      };
      await writeFile(join(staging, "prepared.json"), `${JSON.stringify(meta, null, 2)}\n`, { mode: 0o600 });
      await rm(dir, { recursive: true, force: true });
      await rename(staging, dir);
    } finally {
      await rm(staging, { recursive: true, force: true });
    }
  } catch {
    // Only a cache.
  }
}
