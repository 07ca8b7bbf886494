#include "net.h"
#include "util.h"
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <net/route.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static void set_sin(struct sockaddr *sa, struct in_addr a) {
  struct sockaddr_in sin;
  memset(&sin, 0, sizeof sin);
  sin.sin_family = AF_INET;
  sin.sin_addr = a;
  memcpy(sa, &sin, sizeof sin);
}

static bool write_all_file(const char *path, const char *text, char *msg, size_t msglen) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (fd < 0) {
    snprintf(msg, msglen, "network: creating %s: %s", path, strerror(errno));
    return false;
  }
  size_t len = strlen(text), off = 0;
  while (off < len) {
    ssize_t n = write(fd, text + off, len - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      snprintf(msg, msglen, "network: writing %s: %s", path, strerror(errno));
      close(fd);
      return false;
    }
    off += (size_t)n;
  }
  close(fd);
  return true;
}

/* Bind `src` over `target`; a missing target is created empty first (a dangling symlink is refused). */
static bool bind_over(const char *src, const char *target, char *msg, size_t msglen) {
  struct stat st;
  if (stat(target, &st) < 0) {
    if (lstat(target, &st) == 0) {
      snprintf(msg, msglen, "network: %s is a dangling symlink; not replacing the image's file", target);
      return false;
    }
    mkdir("/etc", 0755);
    int fd = open(target, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0 && errno != EEXIST) {
      snprintf(msg, msglen, "network: creating %s: %s", target, strerror(errno));
      return false;
    }
    if (fd >= 0) close(fd);
  }
  if (mount(src, target, NULL, MS_BIND, NULL) < 0) {
    snprintf(msg, msglen, "network: bind-mounting %s over %s: %s", src, target, strerror(errno));
    return false;
  }
  return true;
}

bool net_configure(const struct net_config *c, char *msg, size_t msglen) {
  struct in_addr addr, gw;
  if (!c->iface || strlen(c->iface) >= IFNAMSIZ || !c->address || !c->gateway || inet_pton(AF_INET, c->address, &addr) != 1 ||
      inet_pton(AF_INET, c->gateway, &gw) != 1 || c->prefix < 1 || c->prefix > 30 || c->mtu < 576 || c->mtu > 65535) {
    snprintf(msg, msglen, "network: the boot config's network settings are invalid");
    return false;
  }
  /* virtio_net is loaded with the other modules; its probe may finish a moment later. */
  char sys[64];
  snprintf(sys, sizeof sys, "/sys/class/net/%s", c->iface);
  int64_t deadline = now_ms() + 5000;
  while (access(sys, F_OK) < 0) {
    if (now_ms() > deadline) {
      snprintf(msg, msglen, "network: no interface %s within 5 s (is the virtio_net module in the initramfs?)", c->iface);
      return false;
    }
    struct timespec ts = {0, 5 * 1000000L};
    nanosleep(&ts, NULL);
  }
  int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) {
    snprintf(msg, msglen, "network: socket: %s", strerror(errno));
    return false;
  }
  struct ifreq ifr;
  const char *step = NULL;
  memset(&ifr, 0, sizeof ifr);
  strncpy(ifr.ifr_name, c->iface, IFNAMSIZ - 1);
  ifr.ifr_mtu = c->mtu;
  if (ioctl(s, SIOCSIFMTU, &ifr) < 0) step = "SIOCSIFMTU";
  set_sin(&ifr.ifr_addr, addr);
  if (!step && ioctl(s, SIOCSIFADDR, &ifr) < 0) step = "SIOCSIFADDR";
  struct in_addr mask = {htonl(c->prefix == 0 ? 0 : ~0u << (32 - c->prefix))};
  set_sin(&ifr.ifr_netmask, mask);
  if (!step && ioctl(s, SIOCSIFNETMASK, &ifr) < 0) step = "SIOCSIFNETMASK";
  if (!step && ioctl(s, SIOCGIFFLAGS, &ifr) < 0) step = "SIOCGIFFLAGS";
  ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
  if (!step && ioctl(s, SIOCSIFFLAGS, &ifr) < 0) step = "SIOCSIFFLAGS";
  if (!step) {
    struct rtentry rt;
    memset(&rt, 0, sizeof rt);
    struct in_addr any = {0};
    set_sin(&rt.rt_dst, any);
    set_sin(&rt.rt_genmask, any);
    set_sin(&rt.rt_gateway, gw);
    rt.rt_flags = RTF_UP | RTF_GATEWAY;
    rt.rt_dev = ifr.ifr_name;
    if (ioctl(s, SIOCADDRT, &rt) < 0 && errno != EEXIST) step = "SIOCADDRT (default route)";
  }
  if (step) {
    snprintf(msg, msglen, "network: %s on %s: %s", step, c->iface, strerror(errno));
    close(s);
    return false;
  }
  close(s);
  if (mkdir("/run/microagent", 0755) < 0 && errno != EEXIST) {
    snprintf(msg, msglen, "network: mkdir /run/microagent: %s", strerror(errno));
    return false;
  }
  if (c->resolv_conf) {
    if (!write_all_file("/run/microagent/resolv.conf", c->resolv_conf, msg, msglen)) return false;
    if (!bind_over("/run/microagent/resolv.conf", "/etc/resolv.conf", msg, msglen)) return false;
  }
  if (c->hosts) {
    if (!write_all_file("/run/microagent/hosts", c->hosts, msg, msglen)) return false;
    if (!bind_over("/run/microagent/hosts", "/etc/hosts", msg, msglen)) return false;
  }
  LOG("%s: %s/%d via %s, mtu %d", c->iface, c->address, c->prefix, c->gateway, c->mtu);
  return true;
}
