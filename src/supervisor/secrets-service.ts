/**
 * Secret delivery as a supervisor service. The supervisor gets the values resolved by the process
 * that started it (secrets/handoff.ts, in memory only); this service turns them into the boot's
 * delivery plan (secrets/delivery.ts: fresh placeholders for swap secrets, every boot) and hands
 * the guest its part in the boot config:
 *
 *   bootConfig  `secrets`: [{name, contentBase64}] that microagent-init writes to a tmpfs on
 *               /run/secrets (each NAME mode 0400, owned by the workload's user), and NAME=placeholder
 *               appended to `env` for each swap secret. The boot config goes to the guest over the
 *               channel only: it is never logged or written to disk (the one on disk is the base
 *               written at create, without secrets).
 *   stop        every value zeroed (best effort: the base64 string handed to the channel is a JS
 *               string and is left to the garbage collector).
 *
 * `describe()` shows names and deliveries, never values or placeholders. The swap list (tokens and
 * values) goes to the egress mediator through the network service's options (services.ts).
 */
import type { SecretDeliveryPlan } from "../secrets/delivery.ts";
import type { SupervisorService } from "./service.ts";

export class SecretsService implements SupervisorService {
  readonly name = "secrets";
  readonly #plan: SecretDeliveryPlan;
  #stopped = false;

  constructor(plan: SecretDeliveryPlan) {
    this.#plan = plan;
  }

  bootConfig(config: Record<string, unknown>): Record<string, unknown> {
    if (this.#stopped) throw new Error("the secrets were already wiped (the boot ended)");
    const env = Array.isArray(config.env) ? (config.env as unknown[]) : [];
    return {
      ...config,
      env: [...env, ...Object.entries(this.#plan.env).map(([k, v]) => `${k}=${v}`)],
      secrets: this.#plan.files.map((f) => ({ name: f.name, contentBase64: f.content.reveal().toString("base64") })),
    };
  }

  stop(): void {
    this.#stopped = true;
    for (const f of this.#plan.files) f.content.wipe();
    for (const s of this.#plan.swap) s.value.wipe();
  }

  describe(): Record<string, unknown> {
    const swap = new Set(this.#plan.swap.map((s) => s.name));
    return {
      dir: "/run/secrets",
      secrets: this.#plan.files.map((f) => (swap.has(f.name) ? { name: f.name, delivery: "swap" } : { name: f.name, delivery: "file", bytes: f.content.byteLength })),
    };
  }
}
