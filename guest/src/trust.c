#include "trust.h"
#include "util.h"
#include <errno.h>
#include <unistd.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>

#define TRUST_DIR "/run/microagent/egress/"

static bool path_chars_ok(const char *p, bool slash) {
  for (; *p; p++) {
    char c = *p;
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-' || (slash && c == '/');
    if (!ok) return false;
  }
  return true;
}

/* No empty, "." or ".." component (so no "//", no trailing "/"). `p` starts with '/'. */
static bool components_ok(const char *p) {
  const char *s = p + 1;
  for (;;) {
    const char *e = strchr(s, '/');
    size_t n = e ? (size_t)(e - s) : strlen(s);
    if (n == 0 || (n == 1 && s[0] == '.') || (n == 2 && s[0] == '.' && s[1] == '.')) return false;
    if (!e) return true;
    s = e + 1;
  }
}

static bool source_ok(const char *s) {
  size_t n = strlen(TRUST_DIR);
  if (!s || strncmp(s, TRUST_DIR, n) != 0) return false;
  const char *base = s + n;
  size_t bl = strlen(base);
  return bl >= 1 && bl <= 64 && path_chars_ok(base, false) && strcmp(base, ".") != 0 && strcmp(base, "..") != 0;
}

static bool target_ok(const char *t) {
  return t && strncmp(t, "/etc/", 5) == 0 && strlen(t) < 256 && path_chars_ok(t, true) && components_ok(t);
}

bool egress_trust_apply(const struct jval *trust, char *msg, size_t msglen) {
  if (!trust) return true;
  const struct jval *mounts = json_get(trust, "bindMounts");
  if (trust->type != J_OBJ || !mounts || mounts->type != J_ARR || mounts->n > 4) {
    snprintf(msg, msglen, "egress trust: bindMounts must be a list of at most 4 entries");
    return false;
  }
  int done = 0;
  for (size_t i = 0; i < mounts->n; i++) {
    const struct jval *m = &mounts->items[i];
    const char *src = json_str(m, "source");
    const struct jval *targets = json_get(m, "targets");
    if (!source_ok(src) || !targets || targets->type != J_ARR || targets->n > 16) {
      snprintf(msg, msglen, "egress trust: entry %zu needs a source directly under " TRUST_DIR " and at most 16 targets", i);
      return false;
    }
    struct stat st;
    if (lstat(src, &st) < 0) {
      snprintf(msg, msglen, "egress trust: %s: %s (it should be one of the boot config's files)", src, strerror(errno));
      return false;
    }
    if (!S_ISREG(st.st_mode)) {
      snprintf(msg, msglen, "egress trust: %s is not a regular file", src);
      return false;
    }
    char seen[16][PATH_MAX];
    size_t nseen = 0;
    for (size_t j = 0; j < targets->n; j++) {
      const struct jval *tv = &targets->items[j];
      const char *t = tv->type == J_STR ? tv->str : NULL;
      if (!target_ok(t)) {
        snprintf(msg, msglen, "egress trust: target %zu of entry %zu is not a plain path under /etc/", j, i);
        return false;
      }
      char real[PATH_MAX];
      if (!realpath(t, real)) continue; /* not in this image (or a dangling symlink): nothing to cover */
      if (stat(real, &st) < 0 || !S_ISREG(st.st_mode)) {
        LOG("egress trust: %s is not a regular file; not covering it", t);
        continue;
      }
      bool dup = false;
      for (size_t k = 0; k < nseen; k++) dup = dup || strcmp(seen[k], real) == 0;
      if (dup) continue; /* two names of one file (e.g. Alpine's cert.pem symlink) */
      if (mount(src, real, NULL, MS_BIND, NULL) < 0) {
        snprintf(msg, msglen, "egress trust: bind-mounting %s over %s: %s", src, real, strerror(errno));
        return false;
      }
      snprintf(seen[nseen++], PATH_MAX, "%s", real);
      done++;
    }
  }
  LOG("egress trust: the workspace CA bundle covers %d image bundle path(s)", done);
  return true;
}

int egress_trust_refresh(const struct jval *files, char *msg, size_t msglen) {
  if (!files) return 0;
  if (files->type != J_ARR || files->n > 8) {
    snprintf(msg, msglen, "trust: must be an array of at most 8 files");
    return -1;
  }
  for (size_t i = 0; i < files->n; i++) {
    const struct jval *e = &files->items[i];
    const char *path = e->type == J_OBJ ? json_str(e, "path") : NULL;
    const char *content = e->type == J_OBJ ? json_str(e, "contentBase64") : NULL;
    if (!source_ok(path) || !content) {
      snprintf(msg, msglen, "trust[%zu]: needs a path directly under %s and contentBase64", i, TRUST_DIR);
      return -1;
    }
  }
  for (size_t i = 0; i < files->n; i++) {
    const struct jval *e = &files->items[i];
    const char *path = json_str(e, "path");
    size_t len = 0;
    uint8_t *data = base64_decode(json_str(e, "contentBase64"), &len);
    if (!data) {
      snprintf(msg, msglen, "trust: %s: contentBase64 is not valid base64", path);
      return -1;
    }
    /* In place (O_TRUNC on the existing file, never a rename): bind mounts keep pointing at it. */
    int fd = open(path, O_WRONLY | O_TRUNC | O_NOFOLLOW | O_CLOEXEC);
    bool ok = fd >= 0;
    for (size_t off = 0; ok && off < len;) {
      ssize_t n = write(fd, data + off, len - off);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) ok = false;
      else off += (size_t)n;
    }
    if (fd >= 0 && close(fd) < 0) ok = false;
    free(data);
    if (!ok) {
      snprintf(msg, msglen, "trust: rewriting %s: %s", path, strerror(errno));
      return -1;
    }
  }
  LOG("trust: %zu egress trust file(s) rewritten (a new workspace CA)", files->n);
  return (int)files->n;
}
