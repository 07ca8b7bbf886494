/* Egress mediation: the workspace CA bundle bind-mounted over the image's CA bundle paths. */
#ifndef MA_TRUST_H
#define MA_TRUST_H
#include <stdbool.h>
#include <stddef.h>
#include "json.h"

/*
 * Applies the boot config's `egressTrust` ({bindMounts: [{source, targets: [...]}]}) after the
 * boot-config files are written: each `source` (a regular file directly under
 * /run/microagent/egress/) is bind-mounted over each `target` (a path under /etc/) that exists in
 * the image as a regular file (a symlink is followed and its regular-file target covered); a
 * missing target is skipped, never created. The image's files are never written. Paths are
 * validated strictly (no . or .. components, a fixed character set). NULL `trust`: nothing to do.
 * False with `msg` set when the config is malformed or a mount fails.
 */
bool egress_trust_apply(const struct jval *trust, char *msg, size_t msglen);

/*
 * A fork's new workspace CA: each entry [{path, contentBase64}] names a file directly under
 * /run/microagent/egress/ that the boot wrote; it is rewritten in place (same inode, so the bind
 * mounts over the image's bundle paths show the new content). Returns the count, -1 with `msg`.
 */
int egress_trust_refresh(const struct jval *files, char *msg, size_t msglen);

#endif
