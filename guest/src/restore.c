/* The guest side of a snapshot restore (restore.h). */
#include "restore.h"
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <net/if_arp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include "boot.h"
#include "net.h"
#include "util.h"

/* From <linux/random.h>, which musl does not ship: add bytes to the input pool and credit them. */
struct rand_pool_info {
  int entropy_count; /* bits credited */
  int buf_size;      /* bytes in buf */
  uint8_t buf[];
};
#ifndef RNDADDENTROPY
#define RNDADDENTROPY _IOW('R', 0x03, int[2])
#endif
/* Reseed the ChaCha output generator from the input pool now (Linux >= 4.17). */
#ifndef RNDRESEEDCRNG
#define RNDRESEEDCRNG _IO('R', 0x07)
#endif

/* The kernel caps one RNDADDENTROPY at the pool size; more than this is refused by the host's schema. */
#define MAX_ENTROPY_BYTES 512

static void fail(struct restore_report *r, const char *fmt, const char *what) {
  if (r->error[0]) return;
  snprintf(r->error, sizeof r->error, fmt, what, strerror(errno));
}

static void add_entropy(const char *b64, struct restore_report *r) {
  size_t n = 0;
  uint8_t *bytes = base64_decode(b64, &n);
  if (!bytes || n == 0 || n > MAX_ENTROPY_BYTES) {
    free(bytes);
    errno = EINVAL;
    fail(r, "entropy: %s: %s", "entropyBase64 must be 1-512 bytes of base64");
    return;
  }
  struct rand_pool_info *info = xcalloc(1, sizeof *info + n);
  info->entropy_count = (int)(n * 8);
  info->buf_size = (int)n;
  memcpy(info->buf, bytes, n);
  int fd = open("/dev/urandom", O_WRONLY | O_CLOEXEC);
  if (fd < 0) fail(r, "entropy: open %s: %s", "/dev/urandom");
  else if (ioctl(fd, RNDADDENTROPY, info) < 0) fail(r, "entropy: %s: %s", "RNDADDENTROPY");
  /* Adding to the pool is not enough: once initialized, the kernel reseeds its output generator on a
     timer (every 60 s, sooner early in boot) and the restored guest's clock barely moved, so two
     restores would read the same bytes until then. Reseed now. */
  else if (ioctl(fd, RNDRESEEDCRNG) < 0) fail(r, "entropy: %s: %s", "RNDRESEEDCRNG");
  else r->entropy_bytes = (int)n;
  if (fd >= 0) close(fd);
  explicit_bzero(info->buf, n);
  explicit_bzero(bytes, n);
  free(info);
  free(bytes);
}

static void step_clock(double unix_ms, struct restore_report *r) {
  struct timespec before, to;
  clock_gettime(CLOCK_REALTIME, &before);
  to.tv_sec = (time_t)(unix_ms / 1000);
  to.tv_nsec = (long)((unix_ms - (double)to.tv_sec * 1000) * 1e6);
  if (to.tv_nsec < 0) to.tv_nsec = 0;
  if (to.tv_nsec > 999999999) to.tv_nsec = 999999999;
  if (clock_settime(CLOCK_REALTIME, &to) < 0) {
    fail(r, "clock: %s: %s", "clock_settime");
    return;
  }
  r->clock_step_ms = (int64_t)(to.tv_sec - before.tv_sec) * 1000 + (to.tv_nsec - before.tv_nsec) / 1000000;
}

static bool parse_mac(const char *s, unsigned char out[6]) {
  unsigned v[6];
  char tail;
  if (!s || sscanf(s, "%2x:%2x:%2x:%2x:%2x:%2x%c", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &tail) != 6) return false;
  for (int i = 0; i < 6; i++) out[i] = (unsigned char)v[i];
  return true;
}

/* Down, new hardware address, then the boot config's addressing again (which brings it up). */
static void readdress(const struct jval *net, struct restore_report *r) {
  const char *iface = json_str(net, "iface");
  unsigned char mac[6];
  double prefix = 0, mtu = 0;
  bool mac_only = !json_str(net, "address");
  if (!iface || strlen(iface) >= IFNAMSIZ || !parse_mac(json_str(net, "mac"), mac) || (!mac_only && (!json_num(net, "prefix", &prefix) || !json_num(net, "mtu", &mtu)))) {
    errno = EINVAL;
    fail(r, "network: %s: %s", "needs iface, mac, address, prefix, gateway and mtu");
    return;
  }
  int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) {
    fail(r, "network: %s: %s", "socket");
    return;
  }
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  strncpy(ifr.ifr_name, iface, IFNAMSIZ - 1);
  bool ok = ioctl(s, SIOCGIFFLAGS, &ifr) == 0;
  if (!ok) fail(r, "network: %s: %s", "SIOCGIFFLAGS");
  if (ok) {
    ifr.ifr_flags &= ~IFF_UP;
    ok = ioctl(s, SIOCSIFFLAGS, &ifr) == 0;
    if (!ok) fail(r, "network: %s: %s", "SIOCSIFFLAGS (down)");
  }
  if (ok) {
    ifr.ifr_hwaddr.sa_family = ARPHRD_ETHER;
    memcpy(ifr.ifr_hwaddr.sa_data, mac, 6);
    ok = ioctl(s, SIOCSIFHWADDR, &ifr) == 0;
    if (!ok) fail(r, "network: %s: %s", "SIOCSIFHWADDR");
  }
  close(s);
  if (!ok) return;
  /* A guest captured before its boot config (a warm `run` snapshot) only needs the new address: the
     boot config that follows brings the interface up and addresses it. */
  if (!json_str(net, "address")) {
    r->network_set = true;
    return;
  }
  struct net_config nc = {iface, json_str(net, "address"), json_str(net, "gateway"), json_str(net, "resolvConf"), json_str(net, "hosts"), (int)prefix, (int)mtu};
  char msg[512];
  if (!net_configure(&nc, msg, sizeof msg)) {
    if (!r->error[0]) snprintf(r->error, sizeof r->error, "%s", msg);
    return;
  }
  r->network_set = true;
}

void restore_apply(const struct jval *m, bool pid1, struct restore_report *r) {
  memset(r, 0, sizeof *r);
  const char *entropy = json_str(m, "entropyBase64");
  double now_ms;
  bool have_time = json_num(m, "timeUnixMs", &now_ms);
  if (!pid1) {
    LOG("resume: not PID 1, leaving the RNG, clock and identity alone");
    return;
  }
  if (entropy) add_entropy(entropy, r);
  if (have_time) step_clock(now_ms, r);
  const char *hostname = json_str(m, "hostname");
  if (hostname && *hostname) {
    if (sethostname(hostname, strlen(hostname)) < 0) fail(r, "hostname: sethostname %s: %s", hostname);
    else r->hostname_set = true;
  }
  const struct jval *net = json_get(m, "network");
  if (net && net->type == J_OBJ) readdress(net, r);
  LOG("resumed from a snapshot: %d entropy bytes credited, clock stepped by %lld ms%s%s%s%s", r->entropy_bytes, (long long)r->clock_step_ms,
      r->hostname_set ? ", hostname " : "", r->hostname_set ? hostname : "", r->network_set ? ", NIC re-addressed" : "", r->error[0] ? " (with errors)" : "");
}
