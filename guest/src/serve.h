/* The protocol server: handshake, boot config, streams (exec, console, workload), result, shutdown. */
#ifndef MA_SERVE_H
#define MA_SERVE_H
#include <stdbool.h>

struct serve_opts {
  bool pid1;     /* we are the VM's init: set hostname, power off on shutdown */
  bool vport;    /* fd is a virtio-serial port: the host may disconnect and come back */
  int fd;        /* the channel */
};

/* Runs until shutdown (returns the process exit code when not PID 1; powers off as PID 1). */
int serve(const struct serve_opts *o);

#endif
