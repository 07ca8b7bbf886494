/* eth0 from the boot config: static address, MTU, default route, per-boot resolv.conf and hosts. */
#ifndef MA_NET_H
#define MA_NET_H
#include <stdbool.h>
#include <stddef.h>

struct net_config {
  const char *iface, *address, *gateway, *resolv_conf, *hosts;
  int prefix, mtu;
};

/*
 * Brings `iface` up with the address, prefix, MTU and a default route via the gateway (ioctls, as
 * `lo` is brought up: no ip(8) in the image needed), then writes resolv.conf and hosts to
 * /run/microagent/ (tmpfs) and bind-mounts them over /etc/resolv.conf and /etc/hosts. The image's
 * files are never written; a target that does not exist is created empty on the root filesystem
 * (the mount needs a file to sit on). False with `msg` set on failure.
 */
bool net_configure(const struct net_config *c, char *msg, size_t msglen);

#endif
