#include "proc.h"
#include "json.h"
#include "util.h"
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

static bool parse_uint(const char *s, unsigned long *out) {
  if (!*s) return false;
  char *e;
  errno = 0;
  unsigned long v = strtoul(s, &e, 10);
  if (*e || errno || v > 0x7fffffffUL) return false;
  *out = v;
  return true;
}

bool resolve_user(const char *spec, struct ids *out, char *err, size_t errlen) {
  memset(out, 0, sizeof *out);
  if (!spec || !*spec) return true;
  char user[256], group[256] = {0};
  const char *colon = strchr(spec, ':');
  size_t ulen = colon ? (size_t)(colon - spec) : strlen(spec);
  if (ulen >= sizeof user || (colon && strlen(colon + 1) >= sizeof group)) {
    snprintf(err, errlen, "user %s: too long", spec);
    return false;
  }
  memcpy(user, spec, ulen);
  user[ulen] = 0;
  if (colon) strcpy(group, colon + 1);

  unsigned long num;
  struct passwd *pw = NULL;
  out->set = true;
  if (parse_uint(user, &num)) {
    out->uid = (uid_t)num;
    out->gid = 0;
    pw = getpwuid(out->uid);
  } else {
    pw = getpwnam(user);
    if (!pw) {
      snprintf(err, errlen, "user %s not found in /etc/passwd", user);
      return false;
    }
    out->uid = pw->pw_uid;
  }
  if (pw) {
    out->gid = pw->pw_gid;
    snprintf(out->home, sizeof out->home, "%s", pw->pw_dir ? pw->pw_dir : "/");
  } else {
    strcpy(out->home, "/");
  }
  if (group[0]) {
    if (parse_uint(group, &num)) {
      out->gid = (gid_t)num;
    } else {
      struct group *gr = getgrnam(group);
      if (!gr) {
        snprintf(err, errlen, "group %s not found in /etc/group", group);
        return false;
      }
      out->gid = gr->gr_gid;
    }
  }
  out->ngroups = 1;
  out->groups[0] = out->gid;
  if (pw && !group[0]) {
    int n = 64;
    if (getgrouplist(pw->pw_name, out->gid, out->groups, &n) >= 0) out->ngroups = n;
  }
  return true;
}

const char *env_get(char *const *env, const char *key) {
  size_t kl = strlen(key);
  const char *found = NULL;
  for (size_t i = 0; env && env[i]; i++)
    if (strncmp(env[i], key, kl) == 0 && env[i][kl] == '=') found = env[i] + kl + 1;
  return found;
}

char **env_merge(char *const *base, char *const *over) {
  size_t n = 0;
  for (size_t i = 0; base && base[i]; i++) n++;
  for (size_t i = 0; over && over[i]; i++) n++;
  char **out = xcalloc(n + 1, sizeof *out);
  size_t k = 0;
  char *const *lists[2] = {base, over};
  for (int l = 0; l < 2; l++) {
    for (size_t i = 0; lists[l] && lists[l][i]; i++) {
      const char *e = lists[l][i];
      const char *eq = strchr(e, '=');
      size_t kl = eq ? (size_t)(eq - e) : strlen(e);
      size_t j;
      for (j = 0; j < k; j++)
        if (strncmp(out[j], e, kl) == 0 && (out[j][kl] == '=' || out[j][kl] == 0)) break;
      if (j < k) {
        free(out[j]);
        out[j] = xstrdup(e);
      } else {
        out[k++] = xstrdup(e);
      }
    }
  }
  return out;
}

/* execvp semantics, but searching the PATH of the environment we pass (not our own). */
static void exec_search(char *const *argv, char *const *envp) {
  const char *file = argv[0];
  if (strchr(file, '/')) {
    execve(file, argv, envp);
    return;
  }
  const char *path = env_get(envp, "PATH");
  if (!path) path = DEFAULT_PATH;
  int saved = ENOENT;
  char full[4096];
  while (*path) {
    const char *end = strchr(path, ':');
    size_t dl = end ? (size_t)(end - path) : strlen(path);
    if (dl + strlen(file) + 2 < sizeof full) {
      if (dl == 0) snprintf(full, sizeof full, "%s", file);
      else snprintf(full, sizeof full, "%.*s/%s", (int)dl, path, file);
      execve(full, argv, envp);
      if (errno == EACCES || errno == ENOEXEC || errno == ETXTBSY) saved = errno; /* keep the most useful error */
    }
    if (!end) break;
    path = end + 1;
  }
  errno = saved;
}

struct child_err {
  int err;
  char what[120];
};

static void child_fail(int pipefd, int err, const char *what) {
  struct child_err ce = {.err = err};
  snprintf(ce.what, sizeof ce.what, "%s", what);
  ssize_t w = write(pipefd, &ce, sizeof ce);
  (void)w;
  _exit(127);
}

pid_t spawn_proc(const struct spawn_opts *o, int *err, char *what, size_t whatlen) {
  int ep[2];
  if (pipe2(ep, O_CLOEXEC) < 0) {
    *err = errno;
    snprintf(what, whatlen, "pipe");
    return -1;
  }
  pid_t pid = fork();
  if (pid < 0) {
    *err = errno;
    snprintf(what, whatlen, "fork");
    close(ep[0]);
    close(ep[1]);
    return -1;
  }
  if (pid == 0) {
    /* Child: undo everything the init changed for itself before running user code. */
    sigset_t all;
    sigemptyset(&all);
    sigprocmask(SIG_SETMASK, &all, NULL);
    for (int s = 1; s < 32; s++)
      if (s != SIGKILL && s != SIGSTOP) signal(s, SIG_DFL);
    setsid();
    int devnull = open("/dev/null", O_RDWR);
    int fds[3] = {o->fd_in, o->fd_out, o->fd_err};
    for (int i = 0; i < 3; i++) {
      int src = fds[i] >= 0 ? fds[i] : devnull;
      if (src < 0) continue;
      if (dup2(src, i) < 0) child_fail(ep[1], errno, "dup2");
    }
    if (devnull > 2) close(devnull);
    if (o->ctty && ioctl(0, TIOCSCTTY, 0) < 0) child_fail(ep[1], errno, "TIOCSCTTY");
    if (o->ids && o->ids->set) {
      if (setgroups((size_t)o->ids->ngroups, o->ids->groups) < 0 && errno != EPERM) child_fail(ep[1], errno, "setgroups");
      if (setgid(o->ids->gid) < 0) child_fail(ep[1], errno, "setgid");
      if (setuid(o->ids->uid) < 0) child_fail(ep[1], errno, "setuid");
    }
    const char *cwd = o->cwd && *o->cwd ? o->cwd : NULL;
    if (cwd && chdir(cwd) < 0) {
      char w[120];
      snprintf(w, sizeof w, "chdir %s", cwd);
      child_fail(ep[1], errno, w);
    }
    if (!cwd) {
      const char *home = o->ids && o->ids->set && o->ids->home[0] ? o->ids->home : "/";
      if (chdir(home) < 0 && chdir("/") < 0) child_fail(ep[1], errno, "chdir /");
    }
    exec_search(o->argv, o->envp);
    char w[120];
    snprintf(w, sizeof w, "exec %s", o->argv[0]);
    child_fail(ep[1], errno, w);
  }
  close(ep[1]);
  struct child_err ce;
  ssize_t n;
  do n = read(ep[0], &ce, sizeof ce);
  while (n < 0 && errno == EINTR);
  close(ep[0]);
  if (n == (ssize_t)sizeof ce) {
    /* The child never ran user code: it exits 127 and the reaper collects it. */
    *err = ce.err;
    snprintf(what, whatlen, "%s", ce.what);
    return -1;
  }
  return pid;
}
