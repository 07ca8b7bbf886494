/*
 * The guest side of the protocol (docs/protocol.md). One single-threaded poll loop owns the channel,
 * every child's pipes or pty, and a signalfd for SIGCHLD. Output to the host is sent only within
 * the credit the host granted (backpressure to exec children, and to the workload while a host
 * listens to its output); with no host attached the workload's output only goes to the console.
 */
#include "serve.h"
#include "restore.h"
#include "boot.h"
#include "secrets.h"
#include "json.h"
#include "net.h"
#include "trust.h"
#include "proc.h"
#include "proto.h"
#include "util.h"
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#define OUT_HIGH_WATER (1024 * 1024) /* stop reading children while this much waits for the channel */
#define EXIT_GRACE_MS 1000           /* after a child exits, how long its pipes may stay silent */
#define SHUTDOWN_MAX_MS 10000

enum kind { K_EXEC = 1, K_CONSOLE, K_WORKLOAD };
enum sess { S_DISCONNECTED, S_HELLO_SENT, S_ACTIVE };

struct stream {
  bool used;
  uint32_t id; /* 0: not (or no longer) visible to the host */
  enum kind kind;
  pid_t pid;
  bool running;
  int wstatus;
  int in_fd; /* child's stdin or the pty master; -1 when none */
  struct buf in_pending;
  bool in_eof;
  int out_fd[2]; /* stdout (or pty master), stderr */
  int64_t send_credit;
  uint64_t limit[2], sent[2];
  bool trunc[2];
  uint64_t dropped;
  int64_t deadline; /* exec timeout, monotonic ms; 0 = none */
  bool timed_out;
  int64_t grace_deadline;
  int64_t started_wall, exited_wall;
};

struct config {
  bool received;
  char **argv, **env;
  char *cwd, *user, *hostname, *shell;
  int stop_signal;
  bool stream_output;
};

static struct {
  const struct serve_opts *o;
  int fd;
  enum sess sess;
  struct buf in, out;
  uint32_t host_max_frame;
  uint32_t host_window;
  uint32_t next_guest_id;
  struct stream streams[MAX_STREAMS];
  struct stream *workload;
  struct config cfg;
  bool boot_failed;
  char **setup;     /* the boot config's setup steps */
  size_t setup_next; /* index of the running (or next) step */
  pid_t setup_pid;   /* the running step, 0 when none */
  char *result_json; /* kept so a reconnecting host gets it again */
  char *boot_failed_json;
  bool shutting_down, shutdown_killed;
  int64_t shutdown_deadline;
  int sigfd;
  int64_t last_probe;
  int power_fds[4]; /* ACPI power button input devices (QMP system_powerdown) */
  int npower;
} G;

/* ---------- frames out ---------- */

static void put_u32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}
static uint32_t get_u32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void send_frame(uint8_t type, uint32_t stream, uint8_t ch, const void *payload, size_t len) {
  if (G.sess == S_DISCONNECTED) return;
  uint8_t h[FRAME_HEADER_BYTES] = {0};
  put_u32(h, (uint32_t)len);
  put_u32(h + 4, stream);
  h[8] = type;
  h[9] = ch;
  buf_append(&G.out, h, sizeof h);
  buf_append(&G.out, payload, len);
}

static void send_json(uint8_t type, uint32_t stream, struct buf *json) {
  send_frame(type, stream, 0, buf_head(json), buf_avail(json));
  buf_free(json);
}

static void send_credit(uint32_t stream, uint32_t n) {
  if (!n || !stream) return;
  uint8_t p[4];
  put_u32(p, n);
  send_frame(F_CREDIT, stream, 0, p, 4);
}

/* Writes what the channel accepts now; blocking mode is used only for the final flush. */
static void flush_out(bool block) {
  int64_t deadline = now_ms() + 2000;
  while (buf_avail(&G.out) > 0 && G.sess != S_DISCONNECTED) {
    ssize_t n = write(G.fd, buf_head(&G.out), buf_avail(&G.out));
    if (n > 0) {
      buf_consume(&G.out, (size_t)n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN && block && now_ms() < deadline) {
      struct pollfd p = {.fd = G.fd, .events = POLLOUT};
      poll(&p, 1, 50);
      continue;
    }
    if (n < 0 && errno == EAGAIN) return;
    return; /* EPIPE/ENODEV: the read side notices the disconnect */
  }
}

static void goaway(const char *code, const char *message);

/* ---------- messages ---------- */

static void send_hello(void) {
  struct buf b = {0};
  struct jw w;
  jw_begin(&w, &b);
  jw_str(&w, "type", "hello");
  jw_int(&w, "protocol", PROTO_VERSION);
  jw_str(&w, "initVersion", MICROAGENT_INIT_VERSION);
  jw_raw(&w, "capabilities", "[\"exec\",\"console\",\"workload\",\"result\",\"shutdown\",\"signal\",\"resize\",\"restore\",\"refresh\"]");
  jw_int(&w, "maxFrameBytes", GUEST_MAX_FRAME_BYTES);
  jw_int(&w, "initialWindowBytes", GUEST_WINDOW_BYTES);
  jw_bool(&w, "pid1", G.o->pid1);
  /* The kernel's boot id: a reconnecting host can tell a rebooted guest from the one it knew. */
  char boot_id[64] = {0};
  int bfd = open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC);
  if (bfd >= 0) {
    ssize_t n = read(bfd, boot_id, sizeof boot_id - 1);
    close(bfd);
    if (n > 0) {
      boot_id[strcspn(boot_id, "\n")] = 0;
      jw_str(&w, "bootId", boot_id);
    }
  }
  jw_str(&w, "state", !G.cfg.received ? "awaiting-config" : G.boot_failed ? "boot-failed" : G.setup_pid ? "setup" : "running");
  jw_end(&w);
  send_json(F_HELLO, 0, &b);
}

static void send_ctl(const char *type, const char *extra_key, const char *extra_val) {
  struct buf b = {0};
  struct jw w;
  jw_begin(&w, &b);
  jw_str(&w, "type", type);
  if (extra_key) jw_str(&w, extra_key, extra_val);
  jw_end(&w);
  send_json(F_MSG, 0, &b);
}

/* ---------- streams ---------- */

static struct stream *stream_alloc(void) {
  for (int i = 0; i < MAX_STREAMS; i++) {
    struct stream *s = &G.streams[i];
    if (!s->used) {
      memset(s, 0, sizeof *s);
      s->used = true;
      s->in_fd = s->out_fd[0] = s->out_fd[1] = -1;
      s->limit[0] = s->limit[1] = UINT64_MAX;
      return s;
    }
  }
  return NULL;
}

static struct stream *stream_by_id(uint32_t id) {
  if (!id) return NULL;
  for (int i = 0; i < MAX_STREAMS; i++)
    if (G.streams[i].used && G.streams[i].id == id) return &G.streams[i];
  return NULL;
}

static void close_fd(int *fd) {
  if (*fd >= 0) close(*fd);
  *fd = -1;
}

static void stream_free(struct stream *s) {
  close_fd(&s->in_fd);
  if (s->out_fd[1] == s->out_fd[0]) s->out_fd[1] = -1; /* the pty master is in both slots */
  close_fd(&s->out_fd[0]);
  close_fd(&s->out_fd[1]);
  buf_free(&s->in_pending);
  if (s == G.workload) G.workload = NULL;
  s->used = false;
}

static void status_fields(struct jw *w, int wstatus) {
  if (WIFEXITED(wstatus)) {
    jw_int(w, "exitCode", WEXITSTATUS(wstatus));
  } else if (WIFSIGNALED(wstatus)) {
    const char *n = signal_name(WTERMSIG(wstatus));
    if (n) jw_str(w, "signal", n);
    else jw_int(w, "signalNumber", WTERMSIG(wstatus));
  }
}

static void send_exit_and_close(struct stream *s, const char *status, int err, const char *what) {
  if (!s->id) return;
  struct buf b = {0};
  struct jw w;
  jw_begin(&w, &b);
  jw_str(&w, "type", "exit");
  jw_str(&w, "status", status);
  if (strcmp(status, "failed_to_start") == 0) {
    char msg[400];
    snprintf(msg, sizeof msg, "%s: %s", what ? what : "exec", strerror(err));
    jw_str(&w, "errorCode", errno_name(err));
    jw_str(&w, "error", msg);
  } else {
    status_fields(&w, s->wstatus);
  }
  jw_bool(&w, "stdoutTruncated", s->trunc[0]);
  jw_bool(&w, "stderrTruncated", s->trunc[1]);
  char t[48];
  iso_time(s->started_wall, t);
  jw_str(&w, "startedAt", t);
  iso_time(s->exited_wall ? s->exited_wall : wall_ms(), t);
  jw_str(&w, "exitedAt", t);
  jw_end(&w);
  send_json(F_MSG, s->id, &b);
  send_frame(F_CLOSE, s->id, 0, NULL, 0);
}

static void workload_result(struct stream *s, int err, const char *what) {
  struct buf b = {0};
  struct jw w;
  jw_begin(&w, &b);
  jw_str(&w, "type", "result");
  char t[48];
  if (err) {
    char msg[400];
    snprintf(msg, sizeof msg, "%s: %s", what, strerror(err));
    jw_raw(&w, "startError", "null"); /* replaced below: keep key order simple */
    b.len -= 4;
    struct buf e = {0};
    struct jw ew;
    jw_begin(&ew, &e);
    jw_str(&ew, "code", errno_name(err));
    jw_str(&ew, "message", msg);
    jw_end(&ew);
    buf_append(&b, buf_head(&e), buf_avail(&e));
    buf_free(&e);
    LOG("workload failed to start: %s", msg);
  } else {
    status_fields(&w, s->wstatus);
    iso_time(s->started_wall, t);
    jw_str(&w, "startedAt", t);
    iso_time(s->exited_wall, t);
    jw_str(&w, "exitedAt", t);
    jw_int(&w, "outputDroppedBytes", (int64_t)s->dropped);
    if (WIFEXITED(s->wstatus)) LOG("workload exited with code %d", WEXITSTATUS(s->wstatus));
    else LOG("workload killed by signal %d", WTERMSIG(s->wstatus));
  }
  jw_end(&w);
  buf_append(&b, "", 1);
  free(G.result_json);
  G.result_json = (char *)b.data;
  if (G.sess == S_ACTIVE) send_frame(F_MSG, 0, 0, G.result_json, strlen(G.result_json));
}

/* A stream is finished when its child is gone and its output drained (or the grace ran out). */
static void maybe_finish(struct stream *s) {
  if (s->running) return;
  if (s->out_fd[0] >= 0 || s->out_fd[1] >= 0) return;
  if (s->kind == K_WORKLOAD) {
    if (s->id) send_frame(F_CLOSE, s->id, 0, NULL, 0);
    workload_result(s, 0, NULL);
  } else {
    send_exit_and_close(s, s->timed_out ? "timed_out" : WIFSIGNALED(s->wstatus) ? "signaled" : "exited", 0, NULL);
  }
  stream_free(s);
}

static void close_output(struct stream *s, int idx) {
  int fd = s->out_fd[idx];
  if (fd < 0) return;
  if (s->out_fd[0] == s->out_fd[1]) { /* pty: one fd, both slots */
    s->out_fd[0] = s->out_fd[1] = -1;
    if (s->in_fd == fd) s->in_fd = -1;
  } else {
    s->out_fd[idx] = -1;
  }
  if (s->in_fd != fd) close(fd);
  else { close(fd); s->in_fd = -1; }
  if (s->id && s->kind == K_EXEC) send_frame(F_EOF, s->id, (uint8_t)(idx + 1), NULL, 0);
}

static uint32_t max_chunk(void) {
  uint32_t m = G.host_max_frame ? G.host_max_frame : 16384;
  return m > 32768 ? 32768 : m;
}

static bool may_read_output(struct stream *s, int idx) {
  if (buf_avail(&G.out) > OUT_HIGH_WATER) return false;
  if (G.sess != S_ACTIVE || !s->id) return true; /* nobody to send to: drain (to the console) */
  if (s->kind == K_WORKLOAD) return s->send_credit > 0; /* a listening host gets every byte */
  if (s->sent[idx] >= s->limit[idx]) return true;
  return s->send_credit > 0;
}

static void read_output(struct stream *s, int idx) {
  uint8_t data[32768];
  size_t want = sizeof data;
  bool to_host = G.sess == S_ACTIVE && s->id;
  if (to_host && (s->kind == K_WORKLOAD || s->sent[idx] < s->limit[idx])) {
    if ((uint64_t)want > (uint64_t)s->send_credit) want = (size_t)s->send_credit;
    if (want > max_chunk()) want = max_chunk();
  }
  if (want == 0) return; /* no credit: a zero-length read would look like EOF */
  ssize_t n = read(s->out_fd[idx], data, want);
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
  if (n <= 0) { /* EOF, or EIO from a pty whose slave side closed */
    close_output(s, idx);
    maybe_finish(s);
    return;
  }
  if (!s->running) s->grace_deadline = now_ms() + EXIT_GRACE_MS;
  uint8_t ch = s->kind == K_CONSOLE ? CH_OUT : (uint8_t)(idx + 1);
  if (s->kind == K_WORKLOAD) {
    write_all_console(data, (size_t)n); /* the serial log always has the workload's output */
    if (!to_host) return;
    size_t off = 0;
    while (off < (size_t)n) {
      size_t c = (size_t)n - off;
      if (c > max_chunk()) c = max_chunk();
      if ((int64_t)c > s->send_credit) c = (size_t)(s->send_credit > 0 ? s->send_credit : 0);
      if (c == 0) break;
      send_frame(F_DATA, s->id, ch, data + off, c);
      s->send_credit -= (int64_t)c;
      off += c;
    }
    s->dropped += (size_t)n - off;
    return;
  }
  if (!to_host) return;
  size_t keep = (size_t)n;
  if (s->sent[idx] + keep > s->limit[idx]) {
    keep = s->sent[idx] >= s->limit[idx] ? 0 : (size_t)(s->limit[idx] - s->sent[idx]);
    s->trunc[idx] = true;
  }
  if (keep) {
    send_frame(F_DATA, s->id, ch, data, keep);
    s->send_credit -= (int64_t)keep;
    s->sent[idx] += keep;
  }
}

static void write_input(struct stream *s) {
  while (buf_avail(&s->in_pending) > 0 && s->in_fd >= 0) {
    ssize_t n = write(s->in_fd, buf_head(&s->in_pending), buf_avail(&s->in_pending));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) return;
    if (n <= 0) { /* the child closed its stdin: discard, but give the host its credit back */
      send_credit(s->id, (uint32_t)buf_avail(&s->in_pending));
      buf_consume(&s->in_pending, buf_avail(&s->in_pending));
      if (s->kind == K_EXEC) close_fd(&s->in_fd);
      return;
    }
    buf_consume(&s->in_pending, (size_t)n);
    send_credit(s->id, (uint32_t)n);
  }
  if (s->in_eof && buf_avail(&s->in_pending) == 0 && s->kind == K_EXEC) close_fd(&s->in_fd);
}

/* ---------- requests ---------- */

static char **base_env(const struct ids *ids, char *const *extra) {
  char home[300];
  snprintf(home, sizeof home, "HOME=%s", ids && ids->set && ids->home[0] ? ids->home : "/root");
  char *defaults[] = {"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", home, NULL};
  char **a = env_merge(defaults, G.cfg.env);
  char **b = env_merge(a, extra);
  strv_free(a);
  return b;
}

static int64_t num_or(const struct jval *v, const char *key, int64_t dflt) {
  double d;
  if (!json_num(v, key, &d) || !(d >= 0) || d > 9.0e18) return dflt; /* also NaN and inf */
  return (int64_t)d;
}

static void open_exec(uint32_t id, const struct jval *req, bool console) {
  bool bad = false;
  char **argv = json_strv(json_get(req, "argv"), &bad);
  char **env_over = json_strv(json_get(req, "env"), &bad);
  if (bad) {
    strv_free(argv);
    strv_free(env_over);
    goaway("PROTOCOL_VIOLATION", "open: argv and env must be arrays of strings");
    return;
  }
  if (!console && (!argv || !argv[0])) {
    strv_free(argv);
    strv_free(env_over);
    goaway("PROTOCOL_VIOLATION", "open exec: argv must be a non-empty array");
    return;
  }
  struct stream *s = stream_alloc();
  if (!s) {
    strv_free(argv);
    strv_free(env_over);
    struct stream tmp = {.id = id, .started_wall = wall_ms()};
    send_exit_and_close(&tmp, "failed_to_start", EAGAIN, "too many open streams");
    return;
  }
  s->id = id;
  s->kind = console ? K_CONSOLE : K_EXEC;
  s->send_credit = G.host_window;
  s->started_wall = wall_ms();
  const char *user = json_str(req, "user");
  if (!user) user = G.cfg.user;
  const char *cwd = json_str(req, "cwd");
  if (!cwd) cwd = G.cfg.cwd;
  struct ids ids;
  char uerr[300];
  int err = 0;
  char what[320] = "exec";
  if (!resolve_user(user, &ids, uerr, sizeof uerr)) {
    err = EINVAL;
    snprintf(what, sizeof what, "%s", uerr);
  }
  char **env = base_env(&ids, env_over);
  strv_free(env_over);
  if (console && !env_get(env, "TERM")) {
    char *t[] = {"TERM=xterm-256color", NULL};
    char **e2 = env_merge(env, t);
    strv_free(env);
    env = e2;
  }
  if (console && (!argv || !argv[0])) {
    strv_free(argv);
    argv = xcalloc(2, sizeof *argv);
    argv[0] = xstrdup(G.cfg.shell ? G.cfg.shell : "/bin/sh");
  }
  struct spawn_opts so = {.argv = argv, .envp = env, .cwd = cwd, .ids = &ids, .fd_in = -1, .fd_out = -1, .fd_err = -1};
  int child_fds[3] = {-1, -1, -1};
  if (!err && console) {
    int m = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
    char *sn = m >= 0 && grantpt(m) == 0 && unlockpt(m) == 0 ? ptsname(m) : NULL;
    int sl = sn ? open(sn, O_RDWR | O_NOCTTY | O_CLOEXEC) : -1;
    if (sl < 0) {
      err = errno;
      snprintf(what, sizeof what, "open pty");
      if (m >= 0) close(m);
    } else {
      struct winsize ws = {.ws_row = (unsigned short)num_or(req, "rows", 24), .ws_col = (unsigned short)num_or(req, "cols", 80)};
      ioctl(m, TIOCSWINSZ, &ws);
      so.fd_in = so.fd_out = so.fd_err = sl;
      so.ctty = true;
      child_fds[0] = sl;
      set_nonblock(m);
      s->in_fd = s->out_fd[0] = s->out_fd[1] = m;
    }
  } else if (!err) {
    int pin[2] = {-1, -1}, pout[2], perr[2];
    bool want_stdin = json_bool(req, "stdin", false);
    if ((want_stdin && pipe2(pin, O_CLOEXEC) < 0) || pipe2(pout, O_CLOEXEC) < 0 || pipe2(perr, O_CLOEXEC) < 0) {
      err = errno;
      snprintf(what, sizeof what, "pipe");
    } else {
      so.fd_in = pin[0];
      so.fd_out = pout[1];
      so.fd_err = perr[1];
      child_fds[0] = pin[0];
      child_fds[1] = pout[1];
      child_fds[2] = perr[1];
      s->in_fd = pin[1];
      s->out_fd[0] = pout[0];
      s->out_fd[1] = perr[0];
      for (int i = 0; i < 2; i++) set_nonblock(s->out_fd[i]);
      if (s->in_fd >= 0) set_nonblock(s->in_fd);
    }
    s->limit[0] = (uint64_t)num_or(req, "stdoutLimitBytes", INT64_MAX);
    s->limit[1] = (uint64_t)num_or(req, "stderrLimitBytes", INT64_MAX);
    int64_t timeout = num_or(req, "timeoutMs", 0);
    if (timeout > 0) s->deadline = now_ms() + timeout;
  }
  if (!err) {
    s->pid = spawn_proc(&so, &err, what, sizeof what);
    if (s->pid > 0) s->running = true;
  }
  for (int i = 0; i < 3; i++) /* the pty slave occupies one slot only */
    if (child_fds[i] >= 0) close(child_fds[i]);
  strv_free(argv);
  strv_free(env);
  if (err) {
    send_exit_and_close(s, "failed_to_start", err, what);
    s->id = 0;
    stream_free(s);
  }
}

static void start_workload(void) {
  struct stream *s = stream_alloc();
  if (!s) return;
  s->kind = K_WORKLOAD;
  G.workload = s;
  struct ids ids;
  char uerr[300], what[320] = "exec";
  int err = 0;
  if (!resolve_user(G.cfg.user, &ids, uerr, sizeof uerr)) {
    err = EINVAL;
    snprintf(what, sizeof what, "%s", uerr);
  }
  char **env = base_env(&ids, NULL);
  int pout[2], perr[2];
  if (!err && (pipe2(pout, O_CLOEXEC) < 0 || pipe2(perr, O_CLOEXEC) < 0)) {
    err = errno;
    snprintf(what, sizeof what, "pipe");
  }
  s->started_wall = wall_ms();
  if (!err) {
    struct spawn_opts so = {.argv = G.cfg.argv, .envp = env, .cwd = G.cfg.cwd, .ids = &ids, .fd_in = -1,
                            .fd_out = pout[1], .fd_err = perr[1]};
    s->pid = spawn_proc(&so, &err, what, sizeof what);
    close(pout[1]);
    close(perr[1]);
    s->out_fd[0] = pout[0];
    s->out_fd[1] = perr[0];
    set_nonblock(pout[0]);
    set_nonblock(perr[0]);
  }
  strv_free(env);
  if (err) {
    workload_result(s, err, what);
    stream_free(s);
    return;
  }
  s->running = true;
  LOG("workload started: %s (pid %d)", G.cfg.argv[0], (int)s->pid);
  if (G.cfg.stream_output && G.sess == S_ACTIVE) {
    s->id = G.next_guest_id;
    G.next_guest_id += 2;
    s->send_credit = G.host_window;
    send_frame(F_OPEN, s->id, 0, "{\"kind\":\"workload\"}", 19);
  }
  struct buf b = {0};
  struct jw w;
  jw_begin(&w, &b);
  jw_str(&w, "type", "workload-started");
  jw_int(&w, "pid", s->pid);
  if (s->id) jw_int(&w, "stream", s->id);
  char t[48];
  iso_time(s->started_wall, t);
  jw_str(&w, "startedAt", t);
  jw_end(&w);
  send_json(F_MSG, 0, &b);
}

static void run_next_setup(void);

static void boot_failed(const char *stage, int index, const char *command, int wstatus, const char *message) {
  G.boot_failed = true;
  struct buf b = {0};
  struct jw w;
  jw_begin(&w, &b);
  jw_str(&w, "type", "boot-failed");
  jw_str(&w, "stage", stage);
  if (index >= 0) jw_int(&w, "index", index);
  if (command) jw_str(&w, "command", command);
  if (wstatus >= 0) status_fields(&w, wstatus);
  jw_str(&w, "message", message);
  jw_end(&w);
  buf_append(&b, "", 1);
  free(G.boot_failed_json);
  G.boot_failed_json = (char *)b.data; /* kept for a host that reconnects */
  send_frame(F_MSG, 0, 0, G.boot_failed_json, strlen(G.boot_failed_json));
  LOG("boot failed: %s", message);
}

static bool mkdir_parents(char *path) {
  for (char *p = path + 1; *p; p++) {
    if (*p != '/') continue;
    *p = 0;
    int r = mkdir(path, 0755);
    *p = '/';
    if (r < 0 && errno != EEXIST) return false;
  }
  return true;
}

static bool write_file(const struct jval *f, char *msg, size_t msglen) {
  const char *path = json_str(f, "path");
  const char *content = json_str(f, "contentBase64");
  if (!path || path[0] != '/' || !content) {
    snprintf(msg, msglen, "files: each entry needs an absolute path and contentBase64");
    return false;
  }
  size_t len;
  uint8_t *data = base64_decode(content, &len);
  if (!data) {
    snprintf(msg, msglen, "files: %s: contentBase64 is not valid base64", path);
    return false;
  }
  char *p = xstrdup(path);
  char tmp[4200];
  snprintf(tmp, sizeof tmp, "%s.microagent-tmp", path);
  bool ok = mkdir_parents(p);
  int fd = ok ? open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600) : -1;
  size_t off = 0;
  while (fd >= 0 && off < len) {
    ssize_t n = write(fd, data + off, len - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    off += (size_t)n;
  }
  mode_t mode = (mode_t)num_or(f, "mode", 0644);
  ok = fd >= 0 && off == len && fchmod(fd, mode & 07777) == 0 &&
       fchown(fd, (uid_t)num_or(f, "uid", 0), (gid_t)num_or(f, "gid", 0)) == 0 && fsync(fd) == 0;
  if (fd >= 0) ok = close(fd) == 0 && ok;
  ok = ok && rename(tmp, path) == 0;
  if (!ok) {
    snprintf(msg, msglen, "files: writing %s: %s", path, strerror(errno));
    unlink(tmp);
  }
  free(p);
  free(data);
  return ok;
}

static void free_config(struct config *c) {
  strv_free(c->argv);
  strv_free(c->env);
  free(c->cwd);
  free(c->user);
  free(c->hostname);
  free(c->shell);
  memset(c, 0, sizeof *c);
}

static char *dup_or_null(const char *s) { return s ? xstrdup(s) : NULL; }

static void apply_boot_config(const struct jval *cfg) {
  if (G.cfg.received) {
    /* A reconnected host: tell it where the first config got to (setup still running: `ready` follows). */
    LOG("ignoring a second boot config");
    if (G.boot_failed_json) send_frame(F_MSG, 0, 0, G.boot_failed_json, strlen(G.boot_failed_json));
    else if (!G.setup_pid) send_ctl("ready", "note", "boot config already applied");
    return;
  }
  if (!cfg || cfg->type != J_OBJ) {
    goaway("PROTOCOL_VIOLATION", "boot-config: config must be an object");
    return;
  }
  bool bad = false;
  free_config(&G.cfg);
  G.cfg.received = true;
  G.cfg.argv = json_strv(json_get(cfg, "argv"), &bad);
  G.cfg.env = json_strv(json_get(cfg, "env"), &bad);
  G.cfg.cwd = dup_or_null(json_str(cfg, "cwd"));
  G.cfg.user = dup_or_null(json_str(cfg, "user"));
  G.cfg.hostname = dup_or_null(json_str(cfg, "hostname"));
  G.cfg.shell = xstrdup(json_str(cfg, "shell") ? json_str(cfg, "shell") : "/bin/sh");
  G.cfg.stream_output = json_bool(cfg, "streamOutput", false);
  const char *ss = json_str(cfg, "stopSignal");
  G.cfg.stop_signal = ss ? signal_from_name(ss) : SIGTERM;
  if (!G.cfg.stop_signal) G.cfg.stop_signal = SIGTERM;
  if (bad) {
    boot_failed("config", -1, NULL, -1, "boot config: argv and env must be arrays of strings");
    return;
  }
  if (G.o->pid1) set_hostname(G.cfg.hostname);
  const struct jval *net = json_get(cfg, "network");
  if (net) {
    double prefix = 0, mtu = 0;
    struct net_config nc = {json_str(net, "iface"), json_str(net, "address"), json_str(net, "gateway"), json_str(net, "resolvConf"), json_str(net, "hosts"), 0, 0};
    if (net->type != J_OBJ || !json_num(net, "prefix", &prefix) || !json_num(net, "mtu", &mtu)) {
      boot_failed("network", -1, NULL, -1, "network: needs iface, address, prefix, gateway and mtu");
      return;
    }
    nc.prefix = (int)prefix;
    nc.mtu = (int)mtu;
    char msg[512];
    if (!G.o->pid1) {
      LOG("network: not PID 1, leaving %s unconfigured", nc.iface ? nc.iface : "(none)");
    } else if (!net_configure(&nc, msg, sizeof msg)) {
      boot_failed("network", -1, NULL, -1, msg);
      return;
    }
  }
  const struct jval *files = json_get(cfg, "files");
  for (size_t i = 0; files && files->type == J_ARR && i < files->n; i++) {
    char msg[4400];
    if (!write_file(&files->items[i], msg, sizeof msg)) {
      boot_failed("files", (int)i, NULL, -1, msg);
      return;
    }
  }
  if (G.o->pid1) {
    /* After the files: the bundle it mounts is one of them. */
    char msg[600];
    if (!egress_trust_apply(json_get(cfg, "egressTrust"), msg, sizeof msg)) {
      boot_failed("egressTrust", -1, NULL, -1, msg);
      return;
    }
  }
  const struct jval *secrets = json_get(cfg, "secrets");
  if (secrets) {
    char msg[600];
    if (!secrets_deliver(secrets, G.cfg.user, G.o->pid1, msg, sizeof msg)) {
      boot_failed("secrets", -1, NULL, -1, msg);
      return;
    }
  }
  const struct jval *setup = json_get(cfg, "setup");
  if (setup && setup->type != J_ARR) bad = true;
  G.setup = json_strv(setup, &bad);
  if (bad) {
    boot_failed("setup", -1, NULL, -1, "setup: must be an array of strings");
    return;
  }
  G.setup_next = 0;
  run_next_setup();
}

/*
 * Setup steps run one at a time inside the event loop (not blocking it): exec and console keep
 * working while a slow step runs, and a shutdown can interrupt it. reap() advances to the next step.
 */
static void run_next_setup(void) {
  const char *cmd = G.setup ? G.setup[G.setup_next] : NULL;
  if (G.shutting_down) return;
  if (!cmd) {
    if (G.cfg.argv && G.cfg.argv[0]) start_workload();
    else LOG("no workload command: idle, serving exec and console");
    send_ctl("ready", NULL, NULL);
    return;
  }
  size_t i = G.setup_next;
  LOG("setup step %zu: %s", i + 1, cmd);
  char *argv[] = {G.cfg.shell, "-c", (char *)cmd, NULL};
  char **env = base_env(NULL, NULL);
  struct spawn_opts so = {.argv = argv, .envp = env, .cwd = "/", .fd_in = -1, .fd_out = g_console_fd, .fd_err = g_console_fd};
  int err = 0;
  char what[320];
  pid_t pid = spawn_proc(&so, &err, what, sizeof what);
  strv_free(env);
  if (pid < 0) {
    char msg[600];
    snprintf(msg, sizeof msg, "setup step %zu (%s) could not start: %s: %s", i + 1, cmd, what, strerror(err));
    boot_failed("setup", (int)i, cmd, -1, msg);
    return;
  }
  G.setup_pid = pid;
}

static void setup_step_ended(int st) {
  size_t i = G.setup_next;
  const char *cmd = G.setup[i];
  G.setup_pid = 0;
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
    char msg[600];
    if (WIFEXITED(st)) snprintf(msg, sizeof msg, "setup step %zu (%s) exited with code %d", i + 1, cmd, WEXITSTATUS(st));
    else snprintf(msg, sizeof msg, "setup step %zu (%s) was killed by signal %d", i + 1, cmd, WTERMSIG(st));
    boot_failed("setup", (int)i, cmd, st, msg);
    return;
  }
  G.setup_next++;
  run_next_setup();
}

/* ---------- shutdown ---------- */

static void finish_shutdown(void) {
  if (G.setup_pid) kill(-G.setup_pid, SIGKILL);
  for (int i = 0; i < MAX_STREAMS; i++) {
    struct stream *s = &G.streams[i];
    if (s->used && s->running) kill(-s->pid, SIGKILL);
  }
  if (G.o->pid1) kill(-1, SIGKILL); /* everything but us */
  send_ctl("shutdown-complete", NULL, NULL);
  flush_out(true);
  sync();
  if (G.o->pid1) power_off();
  exit(0);
}

static void begin_shutdown(const struct jval *msg) {
  if (G.shutting_down) return;
  G.shutting_down = true;
  int64_t t = num_or(msg, "timeoutMs", SHUTDOWN_MAX_MS);
  if (t > SHUTDOWN_MAX_MS) t = SHUTDOWN_MAX_MS;
  G.shutdown_deadline = now_ms() + t;
  LOG("shutdown requested");
  if (G.workload && G.workload->running) {
    const char *n = signal_name(G.cfg.stop_signal);
    LOG("sending %s to the workload", n ? n : "stop signal");
    kill(-G.workload->pid, G.cfg.stop_signal);
  }
  for (int i = 0; i < MAX_STREAMS; i++) {
    struct stream *s = &G.streams[i];
    if (s->used && s->running && s != G.workload) kill(-s->pid, SIGTERM);
  }
}

/* ---------- the ACPI power button ---------- */

/*
 * QEMU's system_powerdown presses the ACPI power button. With the kernel's `button` and `evdev`
 * drivers that is a KEY_POWER input event; nothing else in the guest acts on it, so we do: the same
 * graceful shutdown as a host request. Without those drivers there is simply no device to watch.
 * (Constants from linux/input.h, which musl's headers do not ship.)
 */
#define EV_KEY_ 0x01
#define KEY_POWER_ 116
struct input_event_ {
  struct timeval time;
  uint16_t type, code;
  int32_t value;
};

static void open_power_buttons(void) {
  for (int i = 0; i < 16 && G.npower < 4; i++) {
    char path[32];
    snprintf(path, sizeof path, "/dev/input/event%d", i);
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) continue;
    uint8_t keys[KEY_POWER_ / 8 + 1];
    memset(keys, 0, sizeof keys);
    bool has_power = ioctl(fd, _IOC(_IOC_READ, 'E', 0x20 + EV_KEY_, sizeof keys), keys) >= 0 &&
                     (keys[KEY_POWER_ / 8] & (1 << (KEY_POWER_ % 8)));
    if (!has_power) {
      close(fd);
      continue;
    }
    G.power_fds[G.npower++] = fd;
    LOG("watching %s for the ACPI power button", path);
  }
}


static void read_power_button(int fd) {
  struct input_event_ ev[16];
  ssize_t n = read(fd, ev, sizeof ev);
  for (ssize_t i = 0; n > 0 && i < n / (ssize_t)sizeof ev[0]; i++) {
    if (ev[i].type == EV_KEY_ && ev[i].code == KEY_POWER_ && ev[i].value == 1) {
      LOG("power button pressed");
      begin_shutdown(NULL);
    }
  }
}

/* ---------- frames in ---------- */

/* Exec and console sessions belong to the host that opened them; the workload outlives hosts. */
static void drop_host_sessions(void) {
  for (int i = 0; i < MAX_STREAMS; i++) {
    struct stream *s = &G.streams[i];
    if (!s->used) continue;
    if (s->kind == K_WORKLOAD) {
      s->id = 0;
      continue;
    }
    if (s->running) kill(-s->pid, SIGKILL);
    s->id = 0;
  }
  buf_consume(&G.out, buf_avail(&G.out));
}

static void reset_session(void) {
  drop_host_sessions();
  buf_consume(&G.in, buf_avail(&G.in));
  G.sess = S_DISCONNECTED;
  if (!G.o->vport) {
    if (G.shutting_down) finish_shutdown();
    exit(0);
  }
  LOG("host disconnected; waiting for it to come back");
}

static void goaway(const char *code, const char *message) {
  LOG("protocol error from host (%s): %s", code, message);
  struct buf b = {0};
  struct jw w;
  jw_begin(&w, &b);
  jw_str(&w, "code", code);
  jw_str(&w, "message", message);
  jw_end(&w);
  send_json(F_GOAWAY, 0, &b);
  flush_out(true);
  if (!G.o->vport) exit(3);
  reset_session();
}

static void handle_msg(uint32_t stream, const struct jval *m) {
  const char *type = json_str(m, "type");
  if (!type) {
    goaway("PROTOCOL_VIOLATION", "message without a type");
    return;
  }
  if (stream == 0) {
    if (strcmp(type, "boot-config") == 0) apply_boot_config(json_get(m, "config"));
    else if (strcmp(type, "shutdown") == 0) begin_shutdown(m);
    else if (strcmp(type, "resume") == 0) {
      /* The host restored this VM from a snapshot (restore.c): reseed, step the clock, new identity. */
      struct restore_report r;
      restore_apply(m, G.o->pid1, &r);
      struct buf b = {0};
      struct jw w;
      jw_begin(&w, &b);
      jw_str(&w, "type", "resumed");
      jw_int(&w, "entropyBytes", r.entropy_bytes);
      jw_int(&w, "clockStepMs", r.clock_step_ms);
      jw_bool(&w, "hostnameSet", r.hostname_set);
      jw_bool(&w, "networkSet", r.network_set);
      if (r.error[0]) jw_str(&w, "error", r.error);
      jw_end(&w);
      send_json(F_MSG, 0, &b);
    } else if (strcmp(type, "secrets-wipe") == 0) {
      /* Before a snapshot (secrets.c): /run/secrets zeroed, removed, unmounted. */
      char msg[600] = "";
      int n = secrets_wipe(G.o->pid1, msg, sizeof msg);
      struct buf b = {0};
      struct jw w;
      jw_begin(&w, &b);
      jw_str(&w, "type", "secrets-wiped");
      jw_int(&w, "count", n < 0 ? 0 : n);
      if (n < 0) jw_str(&w, "error", msg);
      jw_end(&w);
      send_json(F_MSG, 0, &b);
    } else if (strcmp(type, "refresh") == 0) {
      /*
       * After a snapshot capture or a restore of a configured guest: this boot's secrets again (on a
       * fresh tmpfs; whatever was there is wiped first) and, for a fork, its new CA's trust files.
       */
      char msg[600] = "";
      int nsecrets = 0, ntrust = 0;
      const struct jval *secrets = json_get(m, "secrets");
      if (secrets && secrets_wipe(G.o->pid1, msg, sizeof msg) >= 0) {
        if (secrets_deliver(secrets, G.cfg.user, G.o->pid1, msg, sizeof msg)) nsecrets = (int)secrets->n;
      }
      if (!msg[0]) {
        ntrust = egress_trust_refresh(json_get(m, "trust"), msg, sizeof msg);
        if (ntrust < 0) ntrust = 0;
      }
      struct buf b = {0};
      struct jw w;
      jw_begin(&w, &b);
      jw_str(&w, "type", "refreshed");
      jw_int(&w, "secrets", nsecrets);
      jw_int(&w, "trustFiles", ntrust);
      if (msg[0]) jw_str(&w, "error", msg);
      jw_end(&w);
      send_json(F_MSG, 0, &b);
    } else if (strcmp(type, "ping") == 0) {
      struct buf b = {0};
      struct jw w;
      jw_begin(&w, &b);
      jw_str(&w, "type", "pong");
      double id;
      if (json_num(m, "id", &id)) jw_int(&w, "id", (int64_t)id);
      jw_end(&w);
      send_json(F_MSG, 0, &b);
    } else LOG("ignoring unknown control message %s", type);
    return;
  }
  struct stream *s = stream_by_id(stream);
  if (!s) return; /* it may have just finished */
  if (strcmp(type, "resize") == 0 && s->kind == K_CONSOLE && s->in_fd >= 0) {
    struct winsize ws = {.ws_row = (unsigned short)num_or(m, "rows", 24), .ws_col = (unsigned short)num_or(m, "cols", 80)};
    ioctl(s->in_fd, TIOCSWINSZ, &ws);
    if (s->running) kill(-s->pid, SIGWINCH);
  } else if (strcmp(type, "signal") == 0 && s->running) {
    const char *sig = json_str(m, "signal");
    int n = sig ? signal_from_name(sig) : 0;
    if (n) kill(-s->pid, n);
  }
}

static void handle_frame(uint8_t type, uint32_t stream, uint8_t ch, const uint8_t *p, uint32_t len) {
  if (type == F_HELLO) {
    /*
     * A host asks for our hello when it connects. If we are mid-handshake it already has one coming.
     * If we thought a session was active, a new host replaced the old one faster than we saw the
     * disconnect (virtio-serial reports only the current state): start over with it.
     */
    if (G.sess == S_ACTIVE) {
      LOG("a new host connected");
      drop_host_sessions();
      G.sess = S_HELLO_SENT;
      send_hello();
    }
    return;
  }
  if (G.sess == S_HELLO_SENT && type != F_WELCOME) {
    goaway("PROTOCOL_VIOLATION", "expected welcome before any other frame");
    return;
  }
  struct jval *j = NULL;
  if (type == F_WELCOME || type == F_OPEN || type == F_MSG) {
    const char *err = NULL;
    j = json_parse((const char *)p, len, &err);
    if (!j || j->type != J_OBJ) {
      char m[200];
      snprintf(m, sizeof m, "frame type %d: payload is not a JSON object (%s)", type, err ? err : "not an object");
      json_free(j);
      goaway("PROTOCOL_VIOLATION", m);
      return;
    }
  }
  struct stream *s;
  switch (type) {
  case F_WELCOME: {
    double v = 0, mf = 0, win = 0;
    json_num(j, "protocol", &v);
    if (G.sess != S_HELLO_SENT) {
      goaway("PROTOCOL_VIOLATION", "unexpected welcome");
    } else if ((int)v != PROTO_VERSION) {
      char m[200];
      snprintf(m, sizeof m, "the host speaks protocol %d but this microagent-init speaks %d: use a matching microagent version", (int)v, PROTO_VERSION);
      goaway("INCOMPATIBLE_VERSION", m);
    } else {
      json_num(j, "maxFrameBytes", &mf);
      json_num(j, "initialWindowBytes", &win);
      G.host_max_frame = mf >= 1024 && mf <= 16 * 1024 * 1024 ? (uint32_t)mf : 16384;
      G.host_window = win >= 1024 && win <= 64 * 1024 * 1024 ? (uint32_t)win : 65536;
      G.sess = S_ACTIVE;
      if (G.result_json) send_frame(F_MSG, 0, 0, G.result_json, strlen(G.result_json));
    }
    break;
  }
  case F_OPEN: {
    const char *kind = json_str(j, "kind");
    if (stream == 0 || (stream & 1) == 0 || stream_by_id(stream)) goaway("PROTOCOL_VIOLATION", "open: the host must use a new odd stream id");
    else if (G.shutting_down) {
      struct stream tmp = {.id = stream, .started_wall = wall_ms()};
      send_exit_and_close(&tmp, "failed_to_start", ESHUTDOWN, "shutting down");
    } else if (kind && strcmp(kind, "exec") == 0) open_exec(stream, j, false);
    else if (kind && strcmp(kind, "console") == 0) open_exec(stream, j, true);
    else {
      send_frame(F_CLOSE, stream, 0, "{\"error\":\"unsupported stream kind\"}", 35);
    }
    break;
  }
  case F_MSG:
    handle_msg(stream, j);
    break;
  case F_DATA:
    s = stream_by_id(stream);
    if (!s) break; /* raced with its end */
    if (len > GUEST_WINDOW_BYTES || buf_avail(&s->in_pending) + len > GUEST_WINDOW_BYTES) {
      goaway("FLOW_CONTROL", "the host sent more data than the stream's window");
      break;
    }
    if (ch != CH_IN || s->in_fd < 0 || s->in_eof) send_credit(stream, len); /* nowhere to go: discard */
    else {
      buf_append(&s->in_pending, p, len);
      write_input(s);
    }
    break;
  case F_EOF:
    s = stream_by_id(stream);
    if (s && ch == CH_IN) {
      s->in_eof = true;
      write_input(s);
    }
    break;
  case F_CREDIT:
    if (len != 4) {
      goaway("PROTOCOL_VIOLATION", "credit frame must carry 4 bytes");
      break;
    }
    s = stream_by_id(stream);
    if (s) {
      s->send_credit += get_u32(p);
      if (s->send_credit > (int64_t)1 << 40) goaway("FLOW_CONTROL", "credit overflow");
    }
    break;
  case F_CLOSE:
    s = stream_by_id(stream);
    if (s && s->kind != K_WORKLOAD) {
      if (s->running) kill(-s->pid, SIGKILL); /* the host abandoned it */
      s->id = 0;
    } else if (s) {
      s->id = 0; /* the host stopped listening to the workload */
    }
    break;
  case F_GOAWAY:
    LOG("host ended the session: %.*s", (int)(len > 300 ? 300 : len), (const char *)p);
    reset_session();
    break;
  default: {
    char m[80];
    snprintf(m, sizeof m, "unknown frame type %d", type);
    goaway("PROTOCOL_VIOLATION", m);
  }
  }
  json_free(j);
}

static void read_channel(void) {
  uint8_t tmp[65536];
  ssize_t n = read(G.fd, tmp, sizeof tmp);
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
  if (n <= 0) {
    reset_session();
    return;
  }
  buf_append(&G.in, tmp, (size_t)n);
  while (G.sess != S_DISCONNECTED && buf_avail(&G.in) >= FRAME_HEADER_BYTES) {
    const uint8_t *h = buf_head(&G.in);
    uint32_t len = get_u32(h), stream = get_u32(h + 4);
    uint8_t type = h[8], ch = h[9];
    /* Check the declared length before waiting for (buffering) the payload. */
    if (len > GUEST_MAX_FRAME_BYTES) {
      goaway("FRAME_TOO_LARGE", "frame payload exceeds the guest's maxFrameBytes");
      return;
    }
    if (h[10] || h[11]) {
      goaway("PROTOCOL_VIOLATION", "reserved header bytes must be zero");
      return;
    }
    if (buf_avail(&G.in) < FRAME_HEADER_BYTES + (size_t)len) break;
    /* Copy out: handlers may append to G.in indirectly through a reset. */
    uint8_t *payload = xmalloc(len + 1);
    memcpy(payload, h + FRAME_HEADER_BYTES, len);
    buf_consume(&G.in, FRAME_HEADER_BYTES + (size_t)len);
    handle_frame(type, stream, ch, payload, len);
    free(payload);
  }
}

/* ---------- children ---------- */

static void reap(void) {
  struct signalfd_siginfo si;
  while (read(G.sigfd, &si, sizeof si) > 0) {}
  for (;;) {
    int st;
    pid_t pid = waitpid(-1, &st, WNOHANG);
    if (pid <= 0) break;
    if (pid == G.setup_pid) {
      setup_step_ended(st);
      continue;
    }
    for (int i = 0; i < MAX_STREAMS; i++) {
      struct stream *s = &G.streams[i];
      if (!s->used || !s->running || s->pid != pid) continue;
      s->running = false;
      s->wstatus = st;
      s->exited_wall = wall_ms();
      s->grace_deadline = now_ms() + EXIT_GRACE_MS;
      if (s == G.workload && s->id == 0 && G.cfg.stream_output == false) {
        /* Without a host stream, only the console copy matters. */
      }
      maybe_finish(s);
      break;
    }
  }
}

static void check_timers(void) {
  int64_t now = now_ms();
  for (int i = 0; i < MAX_STREAMS; i++) {
    struct stream *s = &G.streams[i];
    if (!s->used) continue;
    if (s->running && s->deadline && now >= s->deadline && !s->timed_out) {
      s->timed_out = true;
      kill(-s->pid, SIGKILL);
    }
    if (!s->running && now >= s->grace_deadline) {
      /* Waiting for credit is not silence: the host is just reading slowly. */
      bool blocked = false;
      for (int k = 0; k < 2; k++)
        if (s->out_fd[k] >= 0 && !may_read_output(s, k)) blocked = true;
      if (blocked) {
        s->grace_deadline = now + EXIT_GRACE_MS;
        continue;
      }
      /* A background grandchild holds the pipes open: stop waiting for it. */
      if (s->out_fd[0] >= 0) close_output(s, 0);
      if (s->out_fd[1] >= 0) close_output(s, 1);
      maybe_finish(s);
    }
  }
  if (G.shutting_down) {
    /* The workload stream is freed once its output is drained and its result sent. */
    if (!G.workload) {
      finish_shutdown();
    } else if (now >= G.shutdown_deadline && !G.shutdown_killed) {
      LOG("the workload did not stop in time: killing it");
      if (G.workload->running) kill(-G.workload->pid, SIGKILL);
      G.shutdown_killed = true;
      G.shutdown_deadline = now + 2000; /* time for its result to go out */
    } else if (now >= G.shutdown_deadline) {
      finish_shutdown();
    }
  }
}

static int next_timeout(void) {
  int64_t now = now_ms(), best = -1;
  for (int i = 0; i < MAX_STREAMS; i++) {
    struct stream *s = &G.streams[i];
    if (!s->used) continue;
    int64_t d = s->running ? s->deadline : s->grace_deadline;
    if (d && (best < 0 || d < best)) best = d;
  }
  if (G.shutting_down && (best < 0 || G.shutdown_deadline < best)) best = G.shutdown_deadline;
  if (G.sess == S_DISCONNECTED && G.o->vport) {
    int64_t probe = G.last_probe + 20;
    if (best < 0 || probe < best) best = probe;
  }
  if (best < 0) return -1;
  return best <= now ? 0 : (int)(best - now > 60000 ? 60000 : best - now);
}

/* virtio-serial reports POLLHUP while no host is attached; probe for it without spinning. */
static void probe_host(void) {
  G.last_probe = now_ms();
  struct pollfd p = {.fd = G.fd, .events = POLLOUT};
  if (poll(&p, 1, 0) == 1 && !(p.revents & POLLHUP) && (p.revents & POLLOUT)) {
    LOG("host connected");
    G.sess = S_HELLO_SENT;
    send_hello();
  }
}

int serve(const struct serve_opts *o) {
  memset(&G, 0, sizeof G);
  G.o = o;
  G.fd = o->fd;
  G.next_guest_id = 2;
  set_nonblock(G.fd);
  signal(SIGPIPE, SIG_IGN);
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGCHLD);
  sigprocmask(SIG_BLOCK, &mask, NULL);
  G.sigfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
  if (G.sigfd < 0) {
    LOG("signalfd: %s", strerror(errno));
    return 1;
  }
  if (o->vport) {
    G.sess = S_DISCONNECTED;
    probe_host();
  } else {
    G.sess = S_HELLO_SENT;
    send_hello();
  }
  if (o->pid1) open_power_buttons();
  struct pollfd pfds[6 + MAX_STREAMS * 3];
  struct { struct stream *s; int what; } map[6 + MAX_STREAMS * 3]; /* what: 0,1 output idx; 2 input; 3 power */
  for (;;) {
    flush_out(false);
    int n = 0;
    pfds[n] = (struct pollfd){.fd = G.sigfd, .events = POLLIN};
    map[n].what = 0;
    map[n++].s = NULL;
    if (G.sess != S_DISCONNECTED) {
      pfds[n] = (struct pollfd){.fd = G.fd, .events = (short)(POLLIN | (buf_avail(&G.out) ? POLLOUT : 0))};
      map[n].what = 0;
      map[n++].s = NULL;
    }
    for (int i = 0; i < G.npower; i++) {
      pfds[n] = (struct pollfd){.fd = G.power_fds[i], .events = POLLIN};
      map[n].s = NULL;
      map[n++].what = 3;
    }
    for (int i = 0; i < MAX_STREAMS; i++) {
      struct stream *s = &G.streams[i];
      if (!s->used) continue;
      for (int k = 0; k < 2; k++) {
        if (s->out_fd[k] < 0 || (k == 1 && s->out_fd[1] == s->out_fd[0]) || !may_read_output(s, k)) continue;
        pfds[n] = (struct pollfd){.fd = s->out_fd[k], .events = POLLIN};
        map[n].s = s;
        map[n++].what = k;
      }
      if (s->in_fd >= 0 && buf_avail(&s->in_pending) > 0) {
        pfds[n] = (struct pollfd){.fd = s->in_fd, .events = POLLOUT};
        map[n].s = s;
        map[n++].what = 2;
      }
    }
    int r = poll(pfds, (nfds_t)n, next_timeout());
    if (r < 0 && errno != EINTR) {
      LOG("poll: %s", strerror(errno));
      return 1;
    }
    if (r > 0) {
      if (pfds[0].revents) reap();
      for (int i = 1; i < n; i++) {
        if (!pfds[i].revents) continue;
        struct stream *s = map[i].s;
        if (!s) {
          if (map[i].what == 3) read_power_button(pfds[i].fd);
          else if (pfds[i].revents & (POLLIN | POLLHUP | POLLERR)) read_channel();
          continue;
        }
        if (!s->used) continue; /* finished earlier in this round */
        if (map[i].what == 2) write_input(s);
        else if (s->out_fd[map[i].what] == pfds[i].fd) read_output(s, map[i].what);
      }
    }
    if (G.sess == S_DISCONNECTED && o->vport && now_ms() - G.last_probe >= 20) probe_host();
    check_timers();
  }
}
