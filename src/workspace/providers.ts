/**
 * The real image, kernel and rootfs steps of `create`, wired to the areas that own them.
 */
import { CommonErrors } from "../contract/errors.ts";
import type { CreateProviders } from "./create.ts";

export function defaultCreateProviders(): CreateProviders {
  const missing = (what: string) => async () => {
    throw CommonErrors.INTERNAL({ message: `${what} is not wired into create yet` });
  };
  return { resolveImage: missing("image resolution"), ensureKernel: missing("kernel install"), ensureBaseRootfs: missing("base rootfs build") };
}
