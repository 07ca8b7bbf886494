/** Error codes of the host area (doctor, host capability report, KVM probe). */
import { defineErrors } from "../contract/errors.ts";

export const HostErrors = defineErrors({
  /** doctor ran every probe and at least one required check failed. */
  HOST_CHECKS_FAILED: {
    kind: "unsupported",
    remediation: "Fix the failing checks listed by `microagent doctor` (each names its fix), then run it again.",
  },
  /** A probe itself broke (not "the host lacks X", but "we could not find out"). */
  HOST_PROBE_FAILED: {
    kind: "permanent",
    remediation: "Rerun `microagent --json doctor`; if it keeps failing, report the output as a bug.",
  },
});
