/* A small strict JSON reader (into a tree) and writer. Inputs are bounded by the frame size. */
#ifndef MA_JSON_H
#define MA_JSON_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "util.h"

enum jtype { J_NULL, J_BOOL, J_NUM, J_STR, J_ARR, J_OBJ };

struct jval {
  enum jtype type;
  bool b;
  double num;
  char *str;        /* J_STR: NUL-terminated (strings with embedded NUL are rejected) */
  size_t n;         /* J_ARR/J_OBJ: element count */
  struct jval *items; /* J_ARR: elements; J_OBJ: values */
  char **keys;      /* J_OBJ: keys */
};

/* Parses `len` bytes; returns NULL (with *err set) on malformed input or nesting deeper than 32. */
struct jval *json_parse(const char *text, size_t len, const char **err);
void json_free(struct jval *v);

const struct jval *json_get(const struct jval *obj, const char *key); /* NULL if absent or not an object */
const char *json_str(const struct jval *obj, const char *key);         /* NULL if absent/not a string */
bool json_num(const struct jval *obj, const char *key, double *out);   /* false if absent/not a number */
bool json_bool(const struct jval *obj, const char *key, bool dflt);
/* A NULL-terminated malloc'd copy of an array of strings; NULL if absent; *bad set if not all strings. */
char **json_strv(const struct jval *v, bool *bad);
void strv_free(char **v);

/* Writer: appends to a struct buf. The caller writes braces/commas through these helpers. */
struct jw {
  struct buf *b;
  bool need_comma;
};
void jw_begin(struct jw *w, struct buf *b); /* writes '{' */
void jw_end(struct jw *w);                  /* writes '}' */
void jw_str(struct jw *w, const char *key, const char *val);
void jw_strn(struct jw *w, const char *key, const char *val, size_t n);
void jw_int(struct jw *w, const char *key, int64_t val);
void jw_bool(struct jw *w, const char *key, bool val);
void jw_null(struct jw *w, const char *key);
void jw_raw(struct jw *w, const char *key, const char *raw); /* raw JSON value */
void jw_strv(struct jw *w, const char *key, char *const *vals);
void json_escape(struct buf *b, const char *s, size_t n);

#endif
