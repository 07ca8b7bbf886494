#include "boot.h"
#include "util.h"
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define NEWROOT "/newroot"

/* linux/ext4.h: grow a mounted ext4 to this many blocks (a __u64). Not in musl's headers. */
#ifndef EXT4_IOC_RESIZE_FS
#define EXT4_IOC_RESIZE_FS _IOW('f', 16, uint64_t)
#endif
#ifndef BLKGETSIZE64
#define BLKGETSIZE64 _IOR(0x12, 114, size_t)
#endif

static void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {}
}

/* mkdir -p for one level; an existing directory is fine. */
static void ensure_dir(const char *path, mode_t mode) {
  if (mkdir(path, mode) < 0 && errno != EEXIST) LOG("mkdir %s: %s", path, strerror(errno));
}

static bool do_mount(const char *src, const char *target, const char *fstype, unsigned long flags, const char *data) {
  ensure_dir(target, 0755);
  if (mount(src, target, fstype, flags, data) < 0) {
    if (errno == EBUSY) return true; /* already mounted (e.g. the kernel auto-mounted devtmpfs) */
    LOG("mount %s on %s (%s): %s", src, target, fstype, strerror(errno));
    return false;
  }
  return true;
}

/* Loads the modules the kernel helper listed, in the dependency order it wrote. */
static void load_modules(void) {
  FILE *f = fopen("/lib/modules/load-order", "r");
  if (!f) {
    LOG("no /lib/modules/load-order (%s): assuming the kernel has its drivers built in", strerror(errno));
    return;
  }
  char line[512];
  int loaded = 0, failed = 0;
  while (fgets(line, sizeof line, f)) {
    line[strcspn(line, "\r\n")] = 0;
    if (!line[0] || line[0] == '#') continue;
    char path[600];
    snprintf(path, sizeof path, "/lib/modules/%s", line);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      LOG("module %s: %s", line, strerror(errno));
      failed++;
      continue;
    }
    if (syscall(SYS_finit_module, fd, "", 0) < 0 && errno != EEXIST) {
      LOG("module %s: finit_module: %s", line, strerror(errno));
      failed++;
    } else {
      loaded++;
    }
    close(fd);
  }
  fclose(f);
  LOG("loaded %d kernel modules (%d failed)", loaded, failed);
}

static bool wait_for_path(const char *path, int timeout_ms) {
  int64_t deadline = now_ms() + timeout_ms;
  while (access(path, F_OK) < 0) {
    if (now_ms() > deadline) return false;
    sleep_ms(5);
  }
  return true;
}

static void bring_up_lo(void) {
  int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) {
    LOG("lo: socket: %s", strerror(errno));
    return;
  }
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
  if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0) {
    LOG("lo: SIOCGIFFLAGS: %s", strerror(errno));
  } else {
    ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
    if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0) LOG("lo: SIOCSIFFLAGS: %s", strerror(errno));
  }
  close(s);
}

void set_hostname(const char *name) {
  if (!name || !*name) return;
  if (sethostname(name, strlen(name)) < 0) LOG("sethostname %s: %s", name, strerror(errno));
}

static uint32_t le32(const unsigned char *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/*
 * The workspace disk is a qcow2 overlay whose virtual size is the size the user asked for, over a
 * base ext4 built just big enough for the image. Grow the mounted root filesystem to the whole
 * device, online (the kernel's EXT4_IOC_RESIZE_FS, what resize2fs does on a mounted fs). Cheap and
 * idempotent: the superblock's block count is compared with the device first, so a boot where they
 * already agree costs two small reads and no ioctl. A failure is logged, never fatal: the workspace
 * still boots, with the base's size.
 */
static void grow_root(const char *dev, const char *mountpoint) {
  int64_t t0 = now_ms();
  int bfd = open(dev, O_RDONLY | O_CLOEXEC);
  if (bfd < 0) {
    LOG("root resize: open %s: %s", dev, strerror(errno));
    return;
  }
  uint64_t dev_bytes = 0;
  unsigned char sb[1024];
  bool ok = ioctl(bfd, BLKGETSIZE64, &dev_bytes) == 0;
  if (!ok) LOG("root resize: BLKGETSIZE64 on %s: %s", dev, strerror(errno));
  /* The primary superblock: 1024 bytes at offset 1024, little-endian (fs/ext4/ext4.h). */
  if (ok && pread(bfd, sb, sizeof sb, 1024) != (ssize_t)sizeof sb) {
    LOG("root resize: reading the superblock of %s: %s", dev, strerror(errno));
    ok = false;
  }
  close(bfd);
  if (!ok) return;
  if (sb[0x38] != 0x53 || sb[0x39] != 0xEF) {
    LOG("root resize: %s has no ext4 superblock magic; not resizing", dev);
    return;
  }
  uint32_t log_block = le32(sb + 24);
  if (log_block > 6) {
    LOG("root resize: odd block size (log %u); not resizing", log_block);
    return;
  }
  uint64_t block = 1024ULL << log_block;
  uint64_t blocks = le32(sb + 4);
  if (le32(sb + 0x60) & 0x80) blocks |= (uint64_t)le32(sb + 0x150) << 32; /* INCOMPAT_64BIT: s_blocks_count_hi */
  uint64_t want = dev_bytes / block;
  if (want <= blocks) return; /* already the device's size (every boot after the first) */
  int fd = open(mountpoint, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    LOG("root resize: open %s: %s", mountpoint, strerror(errno));
    return;
  }
  if (ioctl(fd, EXT4_IOC_RESIZE_FS, &want) < 0) {
    LOG("root resize: growing the root filesystem from %llu to %llu MiB failed: %s", (unsigned long long)(blocks * block >> 20),
        (unsigned long long)(want * block >> 20), strerror(errno));
  } else {
    LOG("grew the root filesystem from %llu to %llu MiB in %lld ms", (unsigned long long)(blocks * block >> 20), (unsigned long long)(want * block >> 20),
        (long long)(now_ms() - t0));
  }
  close(fd);
}

bool boot_pid1(void) {
  ensure_dir("/dev", 0755);
  do_mount("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755");
  int c = open("/dev/console", O_WRONLY | O_NOCTTY | O_CLOEXEC);
  if (c >= 0) g_console_fd = c;
  LOG("starting (version %s)", MICROAGENT_INIT_VERSION);
  do_mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
  do_mount("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
  load_modules();

  if (!wait_for_path("/dev/vda", 10000)) {
    LOG("no root disk: /dev/vda did not appear within 10 s (is the virtio-blk module in the initramfs?)");
    return false;
  }
  ensure_dir(NEWROOT, 0755);
  if (mount("/dev/vda", NEWROOT, "ext4", 0, NULL) < 0) {
    LOG("mount /dev/vda (ext4) on %s: %s", NEWROOT, strerror(errno));
    return false;
  }
  grow_root("/dev/vda", NEWROOT);
  static const char *const moved[] = {"/dev", "/proc", "/sys"};
  for (size_t i = 0; i < 3; i++) {
    char target[64];
    snprintf(target, sizeof target, NEWROOT "%s", moved[i]);
    ensure_dir(target, 0755);
    if (mount(moved[i], target, NULL, MS_MOVE, NULL) < 0) LOG("move %s: %s", moved[i], strerror(errno));
  }
  /* switch_root: make the disk the root and forget the initramfs (its memory stays small: modules only). */
  if (chdir(NEWROOT) < 0 || mount(".", "/", NULL, MS_MOVE, NULL) < 0 || chroot(".") < 0 || chdir("/") < 0) {
    LOG("switching root to /dev/vda: %s", strerror(errno));
    return false;
  }
  ensure_dir("/dev/pts", 0755);
  do_mount("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620,gid=5");
  if (access("/dev/ptmx", F_OK) < 0) {
    if (symlink("pts/ptmx", "/dev/ptmx") < 0) LOG("symlink /dev/ptmx: %s", strerror(errno));
  }
  do_mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777");
  do_mount("tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755");
  do_mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777");
  bring_up_lo();
  LOG("root filesystem mounted");
  return true;
}

int open_virtio_port(const char *name, int timeout_ms) {
  int64_t deadline = now_ms() + timeout_ms;
  for (;;) {
    DIR *d = opendir("/sys/class/virtio-ports");
    if (d) {
      struct dirent *e;
      while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char p[300], got[128] = {0};
        snprintf(p, sizeof p, "/sys/class/virtio-ports/%s/name", e->d_name);
        int fd = open(p, O_RDONLY | O_CLOEXEC);
        if (fd < 0) continue;
        ssize_t n = read(fd, got, sizeof got - 1);
        close(fd);
        if (n <= 0) continue;
        got[strcspn(got, "\n")] = 0;
        if (strcmp(got, name) != 0) continue;
        char dev[300];
        snprintf(dev, sizeof dev, "/dev/%s", e->d_name);
        closedir(d);
        int pfd = -1;
        int64_t dev_deadline = now_ms() + 2000; /* devtmpfs creates the node right after sysfs */
        while ((pfd = open(dev, O_RDWR | O_NOCTTY | O_CLOEXEC)) < 0 && now_ms() < dev_deadline) sleep_ms(5);
        if (pfd < 0) LOG("open %s: %s", dev, strerror(errno));
        return pfd;
      }
      closedir(d);
    }
    if (now_ms() > deadline) return -1;
    sleep_ms(10);
  }
}

void power_off(void) {
  sync();
  /* Leave the root filesystem clean (no journal replay at the next boot of a kept workspace). */
  if (mount(NULL, "/", NULL, MS_REMOUNT | MS_RDONLY, NULL) < 0 && errno != EBUSY && errno != EINVAL)
    LOG("remounting / read-only: %s", strerror(errno));
  LOG("powering off");
  reboot(RB_POWER_OFF);
  /* Only reached when power off failed: a reset makes QEMU exit when it runs with -no-reboot. */
  LOG("power off failed (%s); resetting", strerror(errno));
  reboot(RB_AUTOBOOT);
  for (;;) pause();
}
