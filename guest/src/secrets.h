/* Secrets: the boot config's `secrets` written to a tmpfs on /run/secrets. */
#ifndef MA_SECRETS_H
#define MA_SECRETS_H
#include <stdbool.h>
#include <stddef.h>
#include "json.h"

/*
 * Validates every entry of `list` ([{name, contentBase64}]) first, then mounts a fresh tmpfs on
 * /run/secrets (nosuid,nodev,noexec, mode 0755; as PID 1 only: elsewhere the directory named by
 * MICROAGENT_INIT_SECRETS_DIR is used unmounted, for host tests) and writes each NAME mode 0400,
 * owned by `user` (the workload's, resolved like the workload's; NULL: root). Returns false with a
 * message naming the secret (never its value) when anything is wrong; nothing is half-delivered
 * then: the boot fails.
 */
bool secrets_deliver(const struct jval *list, const char *user, bool pid1, char *msg, size_t msglen);

/*
 * Before a snapshot: every file on /run/secrets is overwritten with zeros (the tmpfs pages that held
 * the values are the ones zeroed), removed, and the tmpfs unmounted, so the captured memory holds no
 * value the guest was given (a copy the workload made is its own). Returns how many files were
 * wiped (0 when nothing was mounted), -1 with `msg` on a failure.
 */
int secrets_wipe(bool pid1, char *msg, size_t msglen);

#endif
