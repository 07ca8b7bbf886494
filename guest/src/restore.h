/* After a snapshot restore: the `resume` message (fresh entropy, the host's time, a new identity). */
#ifndef MA_RESTORE_H
#define MA_RESTORE_H
#include <stdbool.h>
#include <stdint.h>
#include "json.h"

struct restore_report {
  int entropy_bytes;      /* bytes credited to the kernel's pool (0: none or it failed) */
  int64_t clock_step_ms;  /* how far the clock moved (host time - guest time before the step) */
  bool hostname_set;
  bool network_set;
  char error[512];        /* the first step that failed, "" when none */
};

/*
 * Applies a `resume` message: mixes `entropyBase64` into the kernel RNG and credits it (RNDADDENTROPY
 * on /dev/urandom), then reseeds the output generator from it (RNDRESEEDCRNG), so two restores of one
 * snapshot stop sharing the saved generator's future output,
 * steps CLOCK_REALTIME to `timeUnixMs` (the saved clock is the snapshot's), sets `hostname`, and with
 * `network` re-addresses the NIC under its new MAC. Each step is independent; failures are reported
 * in `r->error`, never fatal. `pid1` false (tests over --serve-fd) skips the privileged steps.
 */
void restore_apply(const struct jval *m, bool pid1, struct restore_report *r);

#endif
