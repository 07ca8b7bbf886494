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

/** `cp` (src/api/cp.ts): copying files and trees between the host and a workspace. */
export const CpErrors = defineErrors({
  CP_USAGE: {
    kind: "permanent",
    remediation: "Name the workspace on exactly one side: `microagent cp NAME:/guest/path HOSTPATH` or `microagent cp HOSTPATH NAME:/guest/path`.",
  },
  CP_SOURCE_NOT_FOUND: {
    kind: "not_found",
    remediation: "Check the source path (`ls -l` on the host, `microagent exec NAME -- ls -l PATH` in the guest).",
  },
  CP_DESTINATION_NOT_FOUND: {
    kind: "not_found",
    remediation: "Create the destination's parent directory first; cp creates only the last component.",
  },
  CP_NOT_A_DIRECTORY: {
    kind: "permanent",
    remediation: "A destination ending in '/' or a source ending in '/.' must be a directory; drop the suffix or name a directory.",
  },
  CP_TYPE_CONFLICT: {
    kind: "conflict",
    remediation: "Remove or rename the existing path in the destination, or copy to another destination.",
  },
  CP_UNSUPPORTED_FILE_TYPE: {
    kind: "unsupported",
    remediation: "Leave devices, FIFOs and sockets out of the copy (copy the directories around them), or recreate them in place.",
  },
  CP_ARCHIVE_UNSAFE: {
    kind: "policy_denied",
    remediation: "The guest sent an entry that would land outside the destination or write through a symlink; inspect the guest tree, and copy into an empty directory.",
  },
  CP_ARCHIVE_INVALID: {
    kind: "permanent",
    remediation: "The stream from the guest was not a valid tar archive; check the guest's tar (`microagent exec NAME -- tar --help`) and that the copy was not interrupted.",
  },
  CP_SOURCE_CHANGED: {
    kind: "transient",
    retryable: true,
    remediation: "A source file changed while it was copied; copy it again once it is no longer being written.",
  },
  CP_PERMISSION_DENIED: {
    kind: "permanent",
    remediation: "Check the permissions of the path named in the error (on the host for the host side, in the guest for the guest side).",
  },
  CP_DISK_FULL: {
    kind: "resource_exhausted",
    remediation: "Free space on the side named in the error (or grow the workspace disk with a larger --size at create), then copy again.",
  },
  CP_GUEST_TAR_FAILED: {
    kind: "permanent",
    remediation: "The guest's tar failed; its message is in the error. The image needs a tar (busybox or GNU) on PATH.",
  },
  CP_WORKSPACE_NOT_RUNNING: {
    kind: "conflict",
    remediation: "Start the workspace (`microagent start NAME`) or, if it is paused, resume it; then copy again.",
  },
});
