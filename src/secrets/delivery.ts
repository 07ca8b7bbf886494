/**
 * What one boot hands the guest and the mediator, from the secrets resolved for it. Pure: the
 * channel (which writes /run/secrets/NAME on a tmpfs in the guest) and the egress mediator (which
 * swaps placeholders) consume the plan; neither has to know the delivery rules.
 *
 * - file delivery: /run/secrets/NAME holds the value; no variable.
 * - swap delivery: /run/secrets/NAME and the variable NAME hold a fresh per-boot placeholder; the
 *   value goes only to the mediator (SwapSecret).
 */
import { swapSecretsFor, type SwapSecret } from "./placeholder.ts";
import { SecretValue, type ResolvedSecret } from "./resolve.ts";

export interface SecretDeliveryPlan {
  /** Contents of /run/secrets/NAME (mode 0400, owned by the workload's user), in reference order. */
  files: Array<{ name: string; content: SecretValue }>;
  /** Variables added to the workload's environment: NAME=placeholder for each swap secret. */
  env: Record<string, string>;
  /** For the egress mediator: token, bound hosts, value. */
  swap: SwapSecret[];
}

export function planSecretDelivery(resolved: readonly ResolvedSecret[]): SecretDeliveryPlan {
  const swap = swapSecretsFor(resolved);
  const tokenOf = new Map(swap.map((s) => [s.name, s.token]));
  const files = resolved.map((s) => {
    const token = tokenOf.get(s.ref.name);
    return { name: s.ref.name, content: token === undefined ? s.value : new SecretValue(Buffer.from(token)) };
  });
  return { files, env: Object.fromEntries(swap.map((s) => [s.name, s.token])), swap };
}
