/**
 * Which accelerator a VM boots with: KVM only when the host probe proved a vCPU runs guest code
 * there, else TCG. `MICROAGENT_ACCEL=kvm|tcg` forces one (tests, debugging).
 */
import type { Accel } from "../backend/types.ts";

export interface AccelChoice {
  accel: Accel;
  reason: string;
}

export async function chooseAccel(env: NodeJS.ProcessEnv = process.env): Promise<AccelChoice> {
  const forced = env.MICROAGENT_ACCEL;
  if (forced === "kvm" || forced === "tcg") return { accel: forced, reason: `forced by MICROAGENT_ACCEL=${forced}` };
  // The host area's probe, when this build has it (it runs a real vCPU; a /dev/kvm node alone proves nothing).
  try {
    // The module path is a variable until src/host lands (the import is optional at type level).
    const hostModule = "../host/index.ts";
    const mod = (await import(hostModule)) as { selectAccel?: () => Promise<{ accel: string; reason: string }> | { accel: string; reason: string } };
    if (mod.selectAccel) {
      const r = await mod.selectAccel();
      if (r.accel === "kvm" || r.accel === "tcg") return { accel: r.accel, reason: r.reason };
    }
  } catch {
    /* no host probe in this build */
  }
  return { accel: "tcg", reason: "KVM was not proven usable on this host; using TCG software emulation" };
}
