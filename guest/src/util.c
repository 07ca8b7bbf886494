#include "util.h"
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int g_console_fd = 2;

void write_all_console(const void *data, size_t len) {
  const uint8_t *p = data;
  while (len > 0) {
    ssize_t n = write(g_console_fd, p, len);
    if (n < 0) {
      if (errno == EINTR) continue;
      return; /* the console is best effort: never block the init on it failing */
    }
    p += n;
    len -= (size_t)n;
  }
}

void logf_(const char *fmt, ...) {
  char line[1024];
  /* Seconds since boot (CLOCK_MONOTONIC starts near the kernel's own timestamps), to read boot timing. */
  int64_t ms = now_ms();
  int n = snprintf(line, sizeof line, "microagent-init: [%lld.%03lld] ", (long long)(ms / 1000), (long long)(ms % 1000));
  va_list ap;
  va_start(ap, fmt);
  int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
  va_end(ap);
  if (m < 0) m = 0;
  size_t len = (size_t)n + (size_t)m;
  if (len > sizeof line - 2) len = sizeof line - 2;
  line[len++] = '\n';
  write_all_console(line, len);
}

void *xmalloc(size_t n) {
  void *p = malloc(n ? n : 1);
  if (!p) {
    LOG("out of memory (%zu bytes)", n);
    _exit(70);
  }
  return p;
}
void *xcalloc(size_t n, size_t m) {
  void *p = calloc(n ? n : 1, m ? m : 1);
  if (!p) {
    LOG("out of memory");
    _exit(70);
  }
  return p;
}
char *xstrdup(const char *s) {
  size_t n = strlen(s) + 1;
  char *p = xmalloc(n);
  memcpy(p, s, n);
  return p;
}

void buf_append(struct buf *b, const void *p, size_t n) {
  if (n == 0) return;
  if (b->off > 0 && b->len + n > b->cap) { /* compact before growing */
    memmove(b->data, b->data + b->off, b->len - b->off);
    b->len -= b->off;
    b->off = 0;
  }
  if (b->len + n > b->cap) {
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + n) cap *= 2;
    uint8_t *d = realloc(b->data, cap);
    if (!d) {
      LOG("out of memory growing a buffer to %zu bytes", cap);
      _exit(70);
    }
    b->data = d;
    b->cap = cap;
  }
  memcpy(b->data + b->len, p, n);
  b->len += n;
}
void buf_consume(struct buf *b, size_t n) {
  b->off += n;
  if (b->off >= b->len) b->off = b->len = 0;
}
void buf_free(struct buf *b) {
  free(b->data);
  b->data = NULL;
  b->len = b->off = b->cap = 0;
}

int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
int64_t wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
void iso_time(int64_t ms, char out[48]) {
  time_t s = (time_t)(ms / 1000);
  struct tm tm;
  gmtime_r(&s, &tm);
  snprintf(out, 48, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
           tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms % 1000));
}

static int b64val(int c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}
uint8_t *base64_decode(const char *in, size_t *out_len) {
  size_t n = strlen(in);
  while (n > 0 && in[n - 1] == '=') n--;
  if (n % 4 == 1) return NULL;
  uint8_t *out = xmalloc(n * 3 / 4 + 3);
  size_t o = 0;
  uint32_t acc = 0;
  int bits = 0;
  for (size_t i = 0; i < n; i++) {
    int v = b64val((unsigned char)in[i]);
    if (v < 0) {
      free(out);
      return NULL;
    }
    acc = (acc << 6) | (uint32_t)v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[o++] = (uint8_t)(acc >> bits);
    }
  }
  *out_len = o;
  return out;
}

int set_nonblock(int fd) {
  int fl = fcntl(fd, F_GETFL);
  return fl < 0 ? -1 : fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}
int set_cloexec(int fd) {
  int fl = fcntl(fd, F_GETFD);
  return fl < 0 ? -1 : fcntl(fd, F_SETFD, fl | FD_CLOEXEC);
}

static const struct { int sig; const char *name; } SIGNALS[] = {
  {SIGHUP, "SIGHUP"}, {SIGINT, "SIGINT"}, {SIGQUIT, "SIGQUIT"}, {SIGILL, "SIGILL"}, {SIGTRAP, "SIGTRAP"},
  {SIGABRT, "SIGABRT"}, {SIGBUS, "SIGBUS"}, {SIGFPE, "SIGFPE"}, {SIGKILL, "SIGKILL"}, {SIGUSR1, "SIGUSR1"},
  {SIGSEGV, "SIGSEGV"}, {SIGUSR2, "SIGUSR2"}, {SIGPIPE, "SIGPIPE"}, {SIGALRM, "SIGALRM"}, {SIGTERM, "SIGTERM"},
  {SIGCHLD, "SIGCHLD"}, {SIGCONT, "SIGCONT"}, {SIGSTOP, "SIGSTOP"}, {SIGTSTP, "SIGTSTP"}, {SIGTTIN, "SIGTTIN"},
  {SIGTTOU, "SIGTTOU"}, {SIGURG, "SIGURG"}, {SIGXCPU, "SIGXCPU"}, {SIGXFSZ, "SIGXFSZ"}, {SIGVTALRM, "SIGVTALRM"},
  {SIGPROF, "SIGPROF"}, {SIGWINCH, "SIGWINCH"}, {SIGIO, "SIGIO"}, {SIGPWR, "SIGPWR"}, {SIGSYS, "SIGSYS"},
};
const char *signal_name(int sig) {
  for (size_t i = 0; i < sizeof SIGNALS / sizeof SIGNALS[0]; i++)
    if (SIGNALS[i].sig == sig) return SIGNALS[i].name;
  return NULL;
}
int signal_from_name(const char *name) {
  if (!name || !*name) return 0;
  if (name[0] >= '0' && name[0] <= '9') {
    char *end;
    long v = strtol(name, &end, 10);
    return (*end == 0 && v > 0 && v < 65) ? (int)v : 0;
  }
  const char *bare = strncmp(name, "SIG", 3) == 0 ? name + 3 : name;
  for (size_t i = 0; i < sizeof SIGNALS / sizeof SIGNALS[0]; i++)
    if (strcmp(SIGNALS[i].name + 3, bare) == 0) return SIGNALS[i].sig;
  return 0;
}

const char *errno_name(int e) {
  switch (e) {
  case ENOENT: return "ENOENT";
  case EACCES: return "EACCES";
  case EPERM: return "EPERM";
  case ENOEXEC: return "ENOEXEC";
  case ENOTDIR: return "ENOTDIR";
  case EISDIR: return "EISDIR";
  case ENOMEM: return "ENOMEM";
  case E2BIG: return "E2BIG";
  case ELOOP: return "ELOOP";
  case ENAMETOOLONG: return "ENAMETOOLONG";
  case ETXTBSY: return "ETXTBSY";
  case EINVAL: return "EINVAL";
  case EEXIST: return "EEXIST";
  case ENOSPC: return "ENOSPC";
  case EROFS: return "EROFS";
  case EIO: return "EIO";
  case EAGAIN: return "EAGAIN";
  default: return "EUNKNOWN";
  }
}
