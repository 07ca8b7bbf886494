/* Spawning processes for exec, console, setup and the workload: user, env, cwd, PATH lookup. */
#ifndef MA_PROC_H
#define MA_PROC_H
#include <stdbool.h>
#include <sys/types.h>

struct ids {
  bool set;
  uid_t uid;
  gid_t gid;
  int ngroups;
  gid_t groups[64];
  char home[256];
};

/* Resolves "name", "uid", "name:group", "uid:gid" through /etc/passwd and /etc/group when present. */
bool resolve_user(const char *spec, struct ids *out, char *err, size_t errlen);

struct spawn_opts {
  char *const *argv;
  char *const *envp;
  const char *cwd;          /* NULL: the user's home, else "/" */
  const struct ids *ids;    /* NULL or !set: keep our own */
  int fd_in, fd_out, fd_err; /* -1: /dev/null */
  bool ctty;                /* fd_in is a pty slave to become the controlling terminal */
};

/* Forks and execs. Returns the pid, or -1 with *err = errno and `what` describing the failed step. */
pid_t spawn_proc(const struct spawn_opts *o, int *err, char *what, size_t whatlen);

/* env helpers: a NULL-terminated malloc'd vector, later entries override earlier ones by key. */
char **env_merge(char *const *base, char *const *over);
const char *env_get(char *const *env, const char *key);

#endif
