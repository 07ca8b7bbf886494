/* Small shared helpers: logging to the console, growable buffers, time, base64. */
#ifndef MA_UTIL_H
#define MA_UTIL_H
#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#ifndef MICROAGENT_INIT_VERSION
#define MICROAGENT_INIT_VERSION "0.0.0"
#endif

/* fd every log line and the workload's output go to (/dev/console as PID 1, stderr otherwise). */
extern int g_console_fd;

void logf_(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
#define LOG(...) logf_(__VA_ARGS__)
void write_all_console(const void *data, size_t len);

/* A growable byte buffer with a read offset (cheap consume from the front). */
struct buf {
  uint8_t *data;
  size_t len; /* bytes stored, from data[0] */
  size_t off; /* bytes already consumed */
  size_t cap;
};
void buf_append(struct buf *b, const void *p, size_t n);
void buf_consume(struct buf *b, size_t n);
static inline size_t buf_avail(const struct buf *b) { return b->len - b->off; }
static inline uint8_t *buf_head(const struct buf *b) { return b->data + b->off; }
void buf_free(struct buf *b);

void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t m);
char *xstrdup(const char *s);

int64_t now_ms(void);      /* monotonic */
int64_t wall_ms(void);     /* realtime, for startedAt/exitedAt */
void iso_time(int64_t ms, char out[48]);

/* Decodes standard base64 (padding optional). Returns malloc'd bytes, or NULL on bad input. */
uint8_t *base64_decode(const char *in, size_t *out_len);

int set_nonblock(int fd);
int set_cloexec(int fd);

const char *signal_name(int sig); /* "SIGTERM"; NULL when unknown */
int signal_from_name(const char *name); /* accepts "SIGTERM", "TERM", "15"; 0 when unknown */
const char *errno_name(int e); /* "ENOENT"...; "EUNKNOWN" */

#endif
