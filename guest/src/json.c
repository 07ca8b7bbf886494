#include "json.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct parser {
  const char *p, *end;
  const char *err;
  int depth;
};

static void skip_ws(struct parser *ps) {
  while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r')) ps->p++;
}

static bool parse_value(struct parser *ps, struct jval *out);

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

static bool parse_hex4(struct parser *ps, uint32_t *out) {
  if (ps->end - ps->p < 4) return false;
  uint32_t v = 0;
  for (int i = 0; i < 4; i++) {
    int h = hexval(ps->p[i]);
    if (h < 0) return false;
    v = (v << 4) | (uint32_t)h;
  }
  ps->p += 4;
  *out = v;
  return true;
}

static void put_utf8(struct buf *b, uint32_t cp) {
  uint8_t t[4];
  size_t n;
  if (cp < 0x80) { t[0] = (uint8_t)cp; n = 1; }
  else if (cp < 0x800) { t[0] = (uint8_t)(0xC0 | (cp >> 6)); t[1] = (uint8_t)(0x80 | (cp & 0x3F)); n = 2; }
  else if (cp < 0x10000) {
    t[0] = (uint8_t)(0xE0 | (cp >> 12)); t[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F)); t[2] = (uint8_t)(0x80 | (cp & 0x3F)); n = 3;
  } else {
    t[0] = (uint8_t)(0xF0 | (cp >> 18)); t[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3F));
    t[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F)); t[3] = (uint8_t)(0x80 | (cp & 0x3F)); n = 4;
  }
  buf_append(b, t, n);
}

static bool parse_string(struct parser *ps, char **out) {
  if (ps->p >= ps->end || *ps->p != '"') { ps->err = "expected a string"; return false; }
  ps->p++;
  struct buf b = {0};
  while (ps->p < ps->end && *ps->p != '"') {
    unsigned char c = (unsigned char)*ps->p++;
    if (c < 0x20) { ps->err = "control character in string"; goto fail; }
    if (c != '\\') { buf_append(&b, &c, 1); continue; }
    if (ps->p >= ps->end) break;
    char e = *ps->p++;
    switch (e) {
    case '"': case '\\': case '/': buf_append(&b, &e, 1); break;
    case 'b': buf_append(&b, "\b", 1); break;
    case 'f': buf_append(&b, "\f", 1); break;
    case 'n': buf_append(&b, "\n", 1); break;
    case 'r': buf_append(&b, "\r", 1); break;
    case 't': buf_append(&b, "\t", 1); break;
    case 'u': {
      uint32_t cp;
      if (!parse_hex4(ps, &cp)) { ps->err = "bad \\u escape"; goto fail; }
      if (cp >= 0xD800 && cp < 0xDC00) {
        uint32_t lo;
        if (ps->end - ps->p < 2 || ps->p[0] != '\\' || ps->p[1] != 'u') { ps->err = "lone surrogate"; goto fail; }
        ps->p += 2;
        if (!parse_hex4(ps, &lo) || lo < 0xDC00 || lo > 0xDFFF) { ps->err = "bad surrogate pair"; goto fail; }
        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
      }
      if (cp == 0) { ps->err = "NUL in string"; goto fail; }
      put_utf8(&b, cp);
      break;
    }
    default: ps->err = "bad escape"; goto fail;
    }
  }
  if (ps->p >= ps->end) { ps->err = "unterminated string"; goto fail; }
  ps->p++;
  buf_append(&b, "", 1);
  *out = (char *)b.data;
  return true;
fail:
  buf_free(&b);
  return false;
}

static bool parse_container(struct parser *ps, struct jval *out, bool obj) {
  if (++ps->depth > 32) { ps->err = "nesting too deep"; return false; }
  ps->p++;
  size_t cap = 0;
  out->type = obj ? J_OBJ : J_ARR;
  skip_ws(ps);
  if (ps->p < ps->end && *ps->p == (obj ? '}' : ']')) { ps->p++; ps->depth--; return true; }
  for (;;) {
    if (out->n == cap) {
      cap = cap ? cap * 2 : 4;
      struct jval *ni = realloc(out->items, cap * sizeof *ni);
      if (!ni) { ps->err = "out of memory"; return false; }
      out->items = ni;
      if (obj) {
        char **nk = realloc(out->keys, cap * sizeof *nk);
        if (!nk) { ps->err = "out of memory"; return false; }
        out->keys = nk;
      }
    }
    skip_ws(ps);
    if (obj) {
      if (!parse_string(ps, &out->keys[out->n])) return false;
      skip_ws(ps);
      if (ps->p >= ps->end || *ps->p != ':') { free(out->keys[out->n]); ps->err = "expected ':'"; return false; }
      ps->p++;
    }
    memset(&out->items[out->n], 0, sizeof out->items[0]);
    if (!parse_value(ps, &out->items[out->n])) {
      out->n++; /* free the partial element too */
      return false;
    }
    out->n++;
    skip_ws(ps);
    if (ps->p < ps->end && *ps->p == ',') { ps->p++; continue; }
    if (ps->p < ps->end && *ps->p == (obj ? '}' : ']')) { ps->p++; ps->depth--; return true; }
    ps->err = obj ? "expected ',' or '}'" : "expected ',' or ']'";
    return false;
  }
}

static bool parse_value(struct parser *ps, struct jval *out) {
  skip_ws(ps);
  if (ps->p >= ps->end) { ps->err = "unexpected end"; return false; }
  char c = *ps->p;
  if (c == '{' || c == '[') return parse_container(ps, out, c == '{');
  if (c == '"') { out->type = J_STR; return parse_string(ps, &out->str); }
  size_t rest = (size_t)(ps->end - ps->p);
  if (rest >= 4 && memcmp(ps->p, "null", 4) == 0) { out->type = J_NULL; ps->p += 4; return true; }
  if (rest >= 4 && memcmp(ps->p, "true", 4) == 0) { out->type = J_BOOL; out->b = true; ps->p += 4; return true; }
  if (rest >= 5 && memcmp(ps->p, "false", 5) == 0) { out->type = J_BOOL; out->b = false; ps->p += 5; return true; }
  if (c == '-' || (c >= '0' && c <= '9')) {
    char tmp[64];
    size_t n = 0;
    while (ps->p + n < ps->end && n < sizeof tmp - 1 && strchr("+-0123456789.eE", ps->p[n])) n++;
    memcpy(tmp, ps->p, n);
    tmp[n] = 0;
    char *e;
    out->num = strtod(tmp, &e);
    if (e != tmp + n || n == 0) { ps->err = "bad number"; return false; }
    out->type = J_NUM;
    ps->p += n;
    return true;
  }
  ps->err = "unexpected character";
  return false;
}

static void free_inner(struct jval *v) {
  if (v->type == J_STR) free(v->str);
  if (v->type == J_ARR || v->type == J_OBJ) {
    for (size_t i = 0; i < v->n; i++) {
      free_inner(&v->items[i]);
      if (v->keys) free(v->keys[i]);
    }
    free(v->items);
    free(v->keys);
  }
}
void json_free(struct jval *v) {
  if (!v) return;
  free_inner(v);
  free(v);
}

struct jval *json_parse(const char *text, size_t len, const char **err) {
  struct parser ps = {text, text + len, NULL, 0};
  struct jval *v = xcalloc(1, sizeof *v);
  if (!parse_value(&ps, v)) {
    *err = ps.err ? ps.err : "malformed JSON";
    json_free(v);
    return NULL;
  }
  skip_ws(&ps);
  if (ps.p != ps.end) {
    *err = "trailing data after JSON value";
    json_free(v);
    return NULL;
  }
  return v;
}

const struct jval *json_get(const struct jval *obj, const char *key) {
  if (!obj || obj->type != J_OBJ) return NULL;
  for (size_t i = 0; i < obj->n; i++)
    if (strcmp(obj->keys[i], key) == 0) return &obj->items[i];
  return NULL;
}
const char *json_str(const struct jval *obj, const char *key) {
  const struct jval *v = json_get(obj, key);
  return v && v->type == J_STR ? v->str : NULL;
}
bool json_num(const struct jval *obj, const char *key, double *out) {
  const struct jval *v = json_get(obj, key);
  if (!v || v->type != J_NUM) return false;
  *out = v->num;
  return true;
}
bool json_bool(const struct jval *obj, const char *key, bool dflt) {
  const struct jval *v = json_get(obj, key);
  return v && v->type == J_BOOL ? v->b : dflt;
}
char **json_strv(const struct jval *v, bool *bad) {
  if (!v || v->type == J_NULL) return NULL;
  if (v->type != J_ARR) { *bad = true; return NULL; }
  char **out = xcalloc(v->n + 1, sizeof *out);
  for (size_t i = 0; i < v->n; i++) {
    if (v->items[i].type != J_STR) { *bad = true; strv_free(out); return NULL; }
    out[i] = xstrdup(v->items[i].str);
  }
  return out;
}
void strv_free(char **v) {
  if (!v) return;
  for (char **p = v; *p; p++) free(*p);
  free(v);
}

void json_escape(struct buf *b, const char *s, size_t n) {
  buf_append(b, "\"", 1);
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '"' || c == '\\') {
      char e[2] = {'\\', (char)c};
      buf_append(b, e, 2);
    } else if (c < 0x20 || c == 0x7f) {
      char e[8];
      snprintf(e, sizeof e, "\\u%04x", c);
      buf_append(b, e, 6);
    } else {
      buf_append(b, &c, 1);
    }
  }
  buf_append(b, "\"", 1);
}

static void jw_key(struct jw *w, const char *key) {
  if (w->need_comma) buf_append(w->b, ",", 1);
  w->need_comma = true;
  json_escape(w->b, key, strlen(key));
  buf_append(w->b, ":", 1);
}
void jw_begin(struct jw *w, struct buf *b) {
  w->b = b;
  w->need_comma = false;
  buf_append(b, "{", 1);
}
void jw_end(struct jw *w) { buf_append(w->b, "}", 1); }
void jw_str(struct jw *w, const char *key, const char *val) { jw_strn(w, key, val, strlen(val)); }
void jw_strn(struct jw *w, const char *key, const char *val, size_t n) {
  jw_key(w, key);
  json_escape(w->b, val, n);
}
void jw_int(struct jw *w, const char *key, int64_t val) {
  char t[32];
  int n = snprintf(t, sizeof t, "%lld", (long long)val);
  jw_key(w, key);
  buf_append(w->b, t, (size_t)n);
}
void jw_bool(struct jw *w, const char *key, bool val) {
  jw_key(w, key);
  buf_append(w->b, val ? "true" : "false", val ? 4 : 5);
}
void jw_null(struct jw *w, const char *key) {
  jw_key(w, key);
  buf_append(w->b, "null", 4);
}
void jw_raw(struct jw *w, const char *key, const char *raw) {
  jw_key(w, key);
  buf_append(w->b, raw, strlen(raw));
}
void jw_strv(struct jw *w, const char *key, char *const *vals) {
  jw_key(w, key);
  buf_append(w->b, "[", 1);
  for (size_t i = 0; vals && vals[i]; i++) {
    if (i) buf_append(w->b, ",", 1);
    json_escape(w->b, vals[i], strlen(vals[i]));
  }
  buf_append(w->b, "]", 1);
}
