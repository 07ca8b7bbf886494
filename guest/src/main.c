/*
 * microagent-init: PID 1 of a microagent workspace VM.
 *   as PID 1:             boot (mounts, modules, root switch), then serve the host over the
 *                         virtio-serial port named "microagent".
 *   --serve-fd N:         skip the boot steps and serve the protocol on inherited fd N (host tests).
 *   --serve-unix PATH:    same, connecting to a unix socket.
 *   --version:            print the version.
 */
#include "boot.h"
#include "serve.h"
#include "util.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define PORT_NAME "microagent"

static int usage(void) {
  fprintf(stderr, "usage: microagent-init [--serve-fd N | --serve-unix PATH | --version]\n"
                  "Runs as PID 1 inside a microagent VM; the flags serve the protocol on the host for tests.\n");
  return 2;
}

int main(int argc, char **argv) {
  struct serve_opts so = {.fd = -1};
  if (argc == 2 && strcmp(argv[1], "--version") == 0) {
    printf("microagent-init %s (protocol 1)\n", MICROAGENT_INIT_VERSION);
    return 0;
  }
  if (getpid() == 1) {
    so.pid1 = true;
    if (!boot_pid1()) power_off();
    int fd = open_virtio_port(PORT_NAME, 10000);
    if (fd < 0) {
      LOG("no virtio-serial port named %s appeared within 10 s: the host cannot reach this VM", PORT_NAME);
      power_off();
    }
    so.fd = fd;
    so.vport = true;
    serve(&so);
    power_off();
  }
  if (argc == 3 && strcmp(argv[1], "--serve-fd") == 0) {
    char *e;
    long fd = strtol(argv[2], &e, 10);
    if (*e || fd < 0 || fd > 65535) return usage();
    so.fd = (int)fd;
  } else if (argc == 3 && strcmp(argv[1], "--serve-unix") == 0) {
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(argv[2]) >= sizeof sa.sun_path) return usage();
    strcpy(sa.sun_path, argv[2]);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
      LOG("connect %s: %s", argv[2], strerror(errno));
      return 1;
    }
    so.fd = fd;
  } else {
    return usage();
  }
  set_cloexec(so.fd);
  /* Not PID 1: become the reaper of our descendants anyway so exec's orphans do not linger. */
  prctl(PR_SET_CHILD_SUBREAPER, 1);
  return serve(&so);
}
