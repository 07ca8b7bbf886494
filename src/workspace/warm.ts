/**
 * The warm-run cache: `<state-dir>/warm/<key>/` holds a snapshot taken right after a guest's hello and
 * before its boot config (`state`: memory and device state; `disk.qcow2`: the frozen disk layer, an
 * overlay over the shared base rootfs; `manifest.json`: what it is and the sha256 of both files), so
 * a later `run` of the same machine restores it instead of booting and then applies its own boot
 * config exactly as after a cold boot. The key covers everything the saved state depends on: image
 * digest and base rootfs, kernel, initramfs and init, memory, vCPUs, disk size, network mode, backend.
 * A changed kernel or image is a different key (a miss, never a wrong hit); entries are verified by
 * hash before every use and the cache keeps only the newest few. Directories 0700, files 0600.
 */
import { randomBytes } from "node:crypto";
import { link, mkdir, readdir, rename, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import { z } from "zod";
import { DIR_MODE, isErrno, writeJsonAtomic } from "../util/fs.ts";
import { readJsonFile } from "../util/json-file.ts";
import { sha256Bytes, sha256File, sha256FileCached } from "../util/hash.ts";
import type { Manifest } from "./manifest.ts";

/** Entries kept; older ones are removed when a new one is added (each is ~the guest's touched memory). */
export const WARM_CACHE_ENTRIES = 4;

const Sha256Hex = z.string().regex(/^[a-f0-9]{64}$/);
export const WarmEntrySchema = z.object({
  version: z.literal(1),
  key: Sha256Hex,
  createdAt: z.string(),
  imageDigest: z.string(),
  /** The capturing workspace's NIC MAC (a restore tells the guest its own). */
  mac: z.string().optional(),
  disk: z.object({ format: z.enum(["qcow2", "raw"]), virtualSizeBytes: z.number().int().positive(), sha256: Sha256Hex }),
  state: z.object({ bytes: z.number().int().nonnegative(), sha256: Sha256Hex }),
});
export type WarmEntry = z.infer<typeof WarmEntrySchema>;

export function warmRoot(stateDir: string): string {
  return join(stateDir, "warm");
}

/** What a warm snapshot must match to be restored for a workspace with `m` (hex sha256). */
export function warmKey(m: Manifest, initSha256: string | undefined): string {
  return sha256Bytes(
    JSON.stringify({
      v: 1,
      backend: m.backend,
      arch: m.arch,
      image: m.image.digest,
      rootfs: m.artifacts.rootfsBase.sha256,
      kernel: m.artifacts.kernel.sha256,
      initramfs: m.artifacts.initramfs.sha256,
      init: initSha256 ?? null,
      memoryMib: m.resources.memoryMib,
      cpus: m.resources.cpus,
      sizeMib: m.resources.sizeMib,
      network: m.network.mode,
    }),
  );
}

/**
 * The entry for `key` when it is complete and its files still hash to what it recorded; a damaged
 * entry is removed (and is a miss). The hash check is what "verified before use" means: a state file
 * or layer changed on disk is never loaded.
 */
/**
 * The entry for `key`, checked: its manifest parses and names the key, and (unless `hashes: false`,
 * when the caller has the supervisor check them while QEMU starts) both files match their sha256.
 * A failing entry is removed.
 */
export async function readWarmEntry(stateDir: string, key: string, opts: { hashes?: boolean } = {}): Promise<{ dir: string; entry: WarmEntry } | undefined> {
  const dir = join(warmRoot(stateDir), key);
  const entry = await readJsonFile(join(dir, "manifest.json"), WarmEntrySchema, () => new Error("corrupt")).catch(() => null);
  if (entry === undefined) return undefined;
  const hashed = async (file: string, want: string) =>
    opts.hashes === false ? (await stat(join(dir, file)).then((st) => st.isFile(), () => false)) : (await sha256FileCached(join(dir, file)).catch(() => "")) === want;
  const ok = entry !== null && entry.key === key && (await hashed("state", entry.state.sha256)) && (await hashed("disk.qcow2", entry.disk.sha256));
  if (!ok) {
    await rm(dir, { recursive: true, force: true }).catch(() => {});
    return undefined;
  }
  return { dir, entry };
}

/** A temp directory for a capture in progress (renamed into place by `commitWarmEntry`). */
export async function beginWarmEntry(stateDir: string, key: string): Promise<string> {
  await mkdir(warmRoot(stateDir), { recursive: true, mode: DIR_MODE });
  const tmp = join(warmRoot(stateDir), `.tmp-${key.slice(0, 16)}-${randomBytes(4).toString("hex")}`);
  await mkdir(tmp, { mode: DIR_MODE });
  return tmp;
}

/**
 * Complete a capture: the frozen layer is hard-linked in (the capturing workspace keeps its own name
 * for it until it is deleted), both files hashed, the manifest written, the directory renamed to its
 * key (a concurrent capture of the same key that won keeps its entry), then old entries evicted.
 */
export async function commitWarmEntry(
  stateDir: string,
  tmp: string,
  o: { key: string; imageDigest: string; mac?: string; frozenLayer: string; format: "qcow2" | "raw"; virtualSizeBytes: number },
): Promise<void> {
  try {
    await link(o.frozenLayer, join(tmp, "disk.qcow2"));
    const state = join(tmp, "state");
    const entry: WarmEntry = {
      version: 1,
      key: o.key,
      createdAt: new Date().toISOString(),
      imageDigest: o.imageDigest,
      ...(o.mac ? { mac: o.mac } : {}),
      disk: { format: o.format, virtualSizeBytes: o.virtualSizeBytes, sha256: await sha256File(join(tmp, "disk.qcow2")) },
      state: { bytes: (await stat(state)).size, sha256: await sha256File(state) },
    };
    await writeJsonAtomic(join(tmp, "manifest.json"), entry);
    try {
      await rename(tmp, join(warmRoot(stateDir), o.key));
    } catch (e) {
      if (!isErrno(e, "ENOTEMPTY") && !isErrno(e, "EEXIST")) throw e;
    }
  } finally {
    await rm(tmp, { recursive: true, force: true }).catch(() => {});
  }
  await evictWarm(stateDir, WARM_CACHE_ENTRIES).catch(() => {});
}

/** Keep the newest `keep` entries; remove older ones and temp directories older than a minute. */
export async function evictWarm(stateDir: string, keep: number): Promise<string[]> {
  const root = warmRoot(stateDir);
  const names = await readdir(root).catch(() => [] as string[]);
  const entries: { name: string; mtimeMs: number }[] = [];
  const removed: string[] = [];
  for (const name of names) {
    const st = await stat(join(root, name)).catch(() => undefined);
    if (!st) continue;
    if (name.startsWith(".tmp-")) {
      if (Date.now() - st.mtimeMs > 60_000) {
        await rm(join(root, name), { recursive: true, force: true });
        removed.push(name);
      }
      continue;
    }
    entries.push({ name, mtimeMs: st.mtimeMs });
  }
  entries.sort((a, b) => b.mtimeMs - a.mtimeMs);
  for (const e of entries.slice(keep)) {
    await rm(join(root, e.name), { recursive: true, force: true });
    removed.push(e.name);
  }
  return removed;
}

/** Remove every entry whose image is not in `keepDigests` (after `image rm` / `prune`): returns how many. */
export async function dropWarmExcept(stateDir: string, keepDigests: ReadonlySet<string>): Promise<number> {
  const root = warmRoot(stateDir);
  let n = 0;
  for (const name of await readdir(root).catch(() => [] as string[])) {
    if (name.startsWith(".")) continue;
    const entry = await readJsonFile(join(root, name, "manifest.json"), WarmEntrySchema, () => new Error("corrupt")).catch(() => undefined);
    if (entry && keepDigests.has(entry.imageDigest)) continue;
    await rm(join(root, name), { recursive: true, force: true });
    n++;
  }
  return n;
}
