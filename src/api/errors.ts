/** Error codes of the public facade's own operations (the rest come from the areas below it). */
import { defineErrors } from "../contract/errors.ts";

export const ApiErrors = defineErrors({
  FILE_READ_FAILED: {
    kind: "permanent",
    remediation: "Check the path exists in the guest and is readable by the exec user (`microagent exec <name> -- ls -l PATH`).",
  },
  FILE_WRITE_FAILED: {
    kind: "permanent",
    remediation: "Check the parent directory exists in the guest and is writable by the exec user, and that the disk is not full.",
  },
  FILE_TOO_LARGE: {
    kind: "resource_exhausted",
    remediation: "Transfer the file in parts, or copy it with `microagent exec` from a source the guest can reach; the limit is in the error's details.",
  },
});
