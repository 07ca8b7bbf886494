/*
 * /run/secrets: the files the host's secret references resolved to, delivered in the boot config
 * of every boot and kept only on a tmpfs (never the disk image; gone at power off).
 *
 * Hostile-input rules: at most SECRETS_MAX entries; a name is [A-Za-z_][A-Za-z0-9_]* of at most 64
 * characters (so never '/', '.' or '..'), given once; a value is 1..64 KiB of valid base64. Files
 * are created with openat(O_CREAT|O_EXCL|O_NOFOLLOW) in the directory just mounted, so nothing the
 * image ships (a symlink at /run/secrets, say) is followed. Messages name secrets, never bytes of
 * their values; decoded values are zeroed after writing.
 */
#include "secrets.h"
#include "proc.h"
#include "util.h"
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#define SECRETS_DIR "/run/secrets"
#define SECRETS_MAX 64
#define SECRET_NAME_MAX 64
#define SECRET_VALUE_MAX (64 * 1024)

static bool valid_name(const char *n) {
  size_t len = strlen(n);
  if (len == 0 || len > SECRET_NAME_MAX) return false;
  for (size_t i = 0; i < len; i++) {
    char c = n[i];
    bool alpha = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_';
    if (!alpha && !(i > 0 && c >= '0' && c <= '9')) return false;
  }
  return true;
}

static void wipe(void *p, size_t n) {
  volatile unsigned char *v = p;
  while (n--) *v++ = 0;
}

/* Writes all of `len` bytes; false with errno set otherwise. */
static bool write_all(int fd, const uint8_t *data, size_t len) {
  size_t off = 0;
  while (off < len) {
    ssize_t n = write(fd, data + off, len - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      if (n == 0) errno = EIO;
      return false;
    }
    off += (size_t)n;
  }
  return true;
}

bool secrets_deliver(const struct jval *list, const char *user, bool pid1, char *msg, size_t msglen) {
  if (!list || list->type != J_ARR) {
    snprintf(msg, msglen, "secrets: must be an array");
    return false;
  }
  if (list->n > SECRETS_MAX) {
    snprintf(msg, msglen, "secrets: %zu entries, at most %d", list->n, SECRETS_MAX);
    return false;
  }
  /* Check everything before anything is mounted or written. */
  for (size_t i = 0; i < list->n; i++) {
    const struct jval *e = &list->items[i];
    const char *name = e->type == J_OBJ ? json_str(e, "name") : NULL;
    const char *content = e->type == J_OBJ ? json_str(e, "contentBase64") : NULL;
    if (!name || !content) {
      snprintf(msg, msglen, "secrets[%zu]: needs a name and contentBase64", i);
      return false;
    }
    if (!valid_name(name)) {
      snprintf(msg, msglen, "secrets[%zu]: not a valid secret name (letters, digits and '_', at most %d)", i, SECRET_NAME_MAX);
      return false;
    }
    for (size_t j = 0; j < i; j++) {
      if (strcmp(json_str(&list->items[j], "name"), name) == 0) {
        snprintf(msg, msglen, "secrets: %s is given twice", name);
        return false;
      }
    }
    size_t clen = strlen(content);
    if (clen == 0 || clen > (SECRET_VALUE_MAX + 2) / 3 * 4) {
      snprintf(msg, msglen, "secrets: %s: the value must be 1 to %d bytes", name, SECRET_VALUE_MAX);
      return false;
    }
  }
  struct ids ids;
  char uerr[300];
  if (!resolve_user(user, &ids, uerr, sizeof uerr)) {
    snprintf(msg, msglen, "secrets: cannot give them to the workload's user: %s", uerr);
    return false;
  }
  uid_t uid = ids.set ? ids.uid : 0;
  gid_t gid = ids.set ? ids.gid : 0;

  const char *dir = SECRETS_DIR;
  if (pid1) {
    if (mkdir(dir, 0755) < 0 && errno != EEXIST) {
      snprintf(msg, msglen, "secrets: mkdir %s: %s", dir, strerror(errno));
      return false;
    }
    /* Sized for 64 secrets of 512 KiB together (tmpfs rounds each file up to a page). */
    if (mount("tmpfs", dir, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0755,size=1m,nr_inodes=128") < 0) {
      snprintf(msg, msglen, "secrets: mounting a tmpfs on %s: %s", dir, strerror(errno));
      return false;
    }
  } else {
    dir = getenv("MICROAGENT_INIT_SECRETS_DIR");
    if (!dir || !*dir) {
      snprintf(msg, msglen, "secrets: not PID 1, and MICROAGENT_INIT_SECRETS_DIR names no directory to write them to");
      return false;
    }
  }
  int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (dfd < 0) {
    snprintf(msg, msglen, "secrets: open %s: %s", dir, strerror(errno));
    return false;
  }
  bool ok = true;
  for (size_t i = 0; ok && i < list->n; i++) {
    const struct jval *e = &list->items[i];
    const char *name = json_str(e, "name");
    char *content = (char *)json_str(e, "contentBase64"); /* our own parse tree: zeroed below */
    size_t len = 0;
    uint8_t *data = base64_decode(content, &len);
    size_t clen = strlen(content);
    wipe(content, clen);
    if (!data || len == 0 || len > SECRET_VALUE_MAX) {
      snprintf(msg, msglen, "secrets: %s: %s", name, data ? "the value must be 1 to 65536 bytes" : "contentBase64 is not valid base64");
      if (data) wipe(data, len);
      free(data);
      ok = false;
      break;
    }
    int fd = openat(dfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0400);
    if (fd < 0 || !write_all(fd, data, len) || fchown(fd, uid, gid) < 0 || fchmod(fd, 0400) < 0) {
      snprintf(msg, msglen, "secrets: writing %s/%s: %s", dir, name, strerror(errno));
      ok = false;
    }
    if (fd >= 0 && close(fd) < 0 && ok) {
      snprintf(msg, msglen, "secrets: writing %s/%s: %s", dir, name, strerror(errno));
      ok = false;
    }
    wipe(data, len);
    free(data);
  }
  close(dfd);
  if (!ok) {
    /* Fail closed and leave nothing behind: the tmpfs goes with its files. */
    if (pid1 && umount2(dir, MNT_DETACH) < 0) LOG("secrets: unmounting %s: %s", dir, strerror(errno));
    return false;
  }
  LOG("secrets: %zu delivered to %s (owner %u:%u, mode 0400)", list->n, dir, (unsigned)uid, (unsigned)gid);
  return true;
}

int secrets_wipe(bool pid1, char *msg, size_t msglen) {
  const char *dir = pid1 ? SECRETS_DIR : getenv("MICROAGENT_INIT_SECRETS_DIR");
  if (!dir || !*dir) return 0;
  int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (dfd < 0) {
    if (errno == ENOENT) return 0;
    snprintf(msg, msglen, "secrets: open %s: %s", dir, strerror(errno));
    return -1;
  }
  DIR *d = fdopendir(dfd);
  if (!d) {
    snprintf(msg, msglen, "secrets: reading %s: %s", dir, strerror(errno));
    close(dfd);
    return -1;
  }
  int count = 0;
  bool ok = true;
  static const uint8_t zeros[4096];
  struct dirent *de;
  while ((de = readdir(d)) != NULL) {
    if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) continue;
    int fd = openat(dfd, de->d_name, O_WRONLY | O_NOFOLLOW | O_CLOEXEC);
    struct stat st;
    if (fd >= 0 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) {
      for (off_t left = st.st_size; left > 0;) {
        size_t n = left > (off_t)sizeof zeros ? sizeof zeros : (size_t)left;
        if (!write_all(fd, zeros, n)) {
          ok = false;
          break;
        }
        left -= (off_t)n;
      }
    }
    if (fd >= 0) close(fd);
    if (unlinkat(dfd, de->d_name, 0) < 0) ok = false;
    else count++;
  }
  closedir(d);
  if (!ok) {
    snprintf(msg, msglen, "secrets: wiping %s: %s", dir, strerror(errno));
    return -1;
  }
  if (pid1 && umount2(dir, MNT_DETACH) < 0 && errno != EINVAL) {
    snprintf(msg, msglen, "secrets: unmounting %s: %s", dir, strerror(errno));
    return -1;
  }
  LOG("secrets: %d wiped from %s before a snapshot", count, dir);
  return count;
}
