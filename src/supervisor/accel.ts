/**
 * Which accelerator a VM boots with: KVM only when the host probe proved a vCPU runs guest code
 * there (src/host's live probe), else TCG. `MICROAGENT_ACCEL=kvm|tcg` forces one.
 *
 * The probe costs ~0.3 s (it runs a real vCPU), which is a tenth of a TCG boot, so its answer is
 * cached per host boot (keyed by /proc/sys/kernel/random/boot_id) in the per-user runtime dir:
 * whether KVM can run a guest does not change while the host stays up.
 */
import { readFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { ensureDir, writeFileAtomic } from "../util/fs.ts";
import { join } from "node:path";
import { z } from "zod";
import type { Accel } from "../backend/types.ts";

export interface AccelChoice {
  accel: Accel;
  reason: string;
}

const CacheSchema = z.object({ bootId: z.string(), accel: z.enum(["kvm", "tcg"]), reason: z.string() });

function hostBootId(): string | undefined {
  try {
    return readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim();
  } catch {
    return undefined;
  }
}

/**
 * @param cacheDir where to cache the probe's answer (e.g. the per-user runtime root); none = no cache.
 */
export async function chooseAccel(env: NodeJS.ProcessEnv = process.env, cacheDir?: string): Promise<AccelChoice> {
  const forced = env.MICROAGENT_ACCEL;
  if (forced === "kvm" || forced === "tcg") return { accel: forced, reason: `forced by MICROAGENT_ACCEL=${forced}` };
  const bootId = hostBootId();
  const cacheFile = cacheDir && bootId ? join(cacheDir, "accel.json") : undefined;
  if (cacheFile) {
    try {
      const cached = CacheSchema.parse(JSON.parse(await readFile(cacheFile, "utf8")));
      if (cached.bootId === bootId) return { accel: cached.accel, reason: cached.reason };
    } catch {
      /* no cache yet */
    }
  }
  // Loaded only on a cache miss: the host probe module is not small, and every boot starts a supervisor.
  const { selectAccel } = await import("../host/kvm.ts");
  const r = await selectAccel({ env });
  const choice: AccelChoice = { accel: r.accel === "kvm" ? "kvm" : "tcg", reason: r.reason };
  if (cacheFile && bootId) {
    try {
      await ensureDir(cacheDir as string);
      await writeFileAtomic(cacheFile, JSON.stringify({ bootId, ...choice }));
    } catch {
      /* caching is an optimisation */
    }
  }
  return choice;
}
