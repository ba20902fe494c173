/* The REPL's support module, linked first in every session: the value buffer the controller
   reads, value formatting, stdout flushing and output suppression for replays. */
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

char __remjit_vbuf[4096];
static size_t used;
static int saved_out = -1, saved_err = -1;

void __remjit_flush(void) {
  fflush(stdout);
  fflush(stderr);
}

void __remjit_quiet_on(void) {
  __remjit_flush();
  int null = open("/dev/null", O_WRONLY);
  if (null < 0) return;
  saved_out = dup(1);
  saved_err = dup(2);
  dup2(null, 1);
  dup2(null, 2);
  close(null);
}

void __remjit_quiet_off(void) {
  __remjit_flush();
  if (saved_out >= 0) { dup2(saved_out, 1); close(saved_out); saved_out = -1; }
  if (saved_err >= 0) { dup2(saved_err, 2); close(saved_err); saved_err = -1; }
}

static void put(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  if (used < sizeof __remjit_vbuf) {
    int n = vsnprintf(__remjit_vbuf + used, sizeof __remjit_vbuf - used, fmt, ap);
    if (n > 0) used += (size_t)n;
    if (used >= sizeof __remjit_vbuf) used = sizeof __remjit_vbuf - 1;
  }
  va_end(ap);
}

/* Starts a value: "(TYPE) ". A C++ type comes as __PRETTY_FUNCTION__ of a template: the part
   after "T = " up to the final ']'. */
static void begin(const char *t) {
  used = 0;
  __remjit_vbuf[0] = 0;
  const char *s = t ? strstr(t, "T = ") : 0;
  if (s) {
    s += 4;
    size_t n = strlen(s);
    if (n && s[n - 1] == ']') n--;
    put("(%.*s) ", (int)n, s);
  } else {
    put("(%s) ", t ? t : "?");
  }
}

static void quoted(const char *s, size_t n, char q) {
  put("%c", q);
  for (size_t i = 0; i < n && used + 8 < sizeof __remjit_vbuf; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '\n') put("\\n");
    else if (c == '\t') put("\\t");
    else if (c == '\\' || c == (unsigned char)q) put("\\%c", c);
    else if (c < 32 || c == 127) put("\\x%02x", c);
    else put("%c", c);
  }
  put("%c", q);
}

void __remjit_show_int(const char *t, long long v) { begin(t); put("%lld", v); }
void __remjit_show_uint(const char *t, unsigned long long v) { begin(t); put("%llu", v); }
void __remjit_show_bool(const char *t, int v) { begin(t); put("%s", v ? "true" : "false"); }
void __remjit_show_char(const char *t, int c) {
  char ch = (char)c;
  begin(t);
  /* A byte above 127 is no character on its own (UTF-8 or not): shown by its value. */
  if ((unsigned char)ch >= 0x80) put("'\\x%02x'", (unsigned char)ch);
  else quoted(&ch, 1, '\'');
}
/* A float with the digits a float has (the shortest of 7 or 9 that reads back the same). */
void __remjit_show_float(const char *t, float v) {
  char b[64];
  begin(t);
  snprintf(b, sizeof b, "%.7g", v);
  if (strtof(b, 0) != v) snprintf(b, sizeof b, "%.9g", v);
  put("%s", b);
}
void __remjit_show_double(const char *t, double v) {
  char b[64];
  begin(t);
  snprintf(b, sizeof b, "%.15g", v);
  if (strtod(b, 0) != v) snprintf(b, sizeof b, "%.17g", v);
  put("%s", b);
}
void __remjit_show_ldouble(const char *t, long double v) { begin(t); put("%.18Lg", v); }
void __remjit_show_ptr(const char *t, const void *p) { begin(t); put("0x%lx", (unsigned long)p); }
void __remjit_show_strn(const char *t, const char *s, size_t n) { begin(t); quoted(s, n, '"'); }
void __remjit_show_str(const char *t, const char *s) {
  if (!s) { __remjit_show_ptr(t, s); return; }
  __remjit_show_strn(t, s, strlen(s));
}
void __remjit_show_size(const char *t, size_t n) { begin(t); put("size %zu", n); }
void __remjit_show_bytes(const char *t, const void *p, size_t n) {
  const unsigned char *b = p;
  begin(t);
  put("{");
  for (size_t i = 0; i < n && i < 64; i++) put(" %02x", b[i]);
  put(n > 64 ? " ... }" : " }");
}

/* C: a value of `n` bytes at `p`, of class `cls` (__builtin_classify_type) and type `t`. */
void __remjit_show_c(const void *p, size_t n, int cls, const char *t) {
  long long s = 0;
  unsigned long long u = 0;
  int is_unsigned = t && (!strncmp(t, "unsigned", 8) || !strcmp(t, "_Bool") || !strcmp(t, "bool"));
  switch (n) {
    case 1: s = *(const signed char *)p; u = *(const unsigned char *)p; break;
    case 2: s = *(const short *)p; u = *(const unsigned short *)p; break;
    case 4: s = *(const int *)p; u = *(const unsigned *)p; break;
    case 8: s = *(const long long *)p; u = *(const unsigned long long *)p; break;
  }
  if (cls == 5) {
    const char *star = t ? strrchr(t, '*') : 0;
    int chars = star && star - t >= 5 && !strncmp(star - 5, "char ", 5) && !strstr(t, "**");
    if (chars) __remjit_show_str(t, *(const char *const *)p);
    else __remjit_show_ptr(t ? t : "void *", *(const void *const *)p);
  } else if (cls == 8) {
    if (n == 4) __remjit_show_float(t, *(const float *)p);
    else if (n == 8) __remjit_show_double(t, *(const double *)p);
    else __remjit_show_ldouble(t, *(const long double *)p);
  } else if (cls >= 1 && cls <= 4 && n <= 8) {
    if (t && (!strcmp(t, "_Bool") || !strcmp(t, "bool"))) __remjit_show_bool(t, u != 0);
    else if (t && (!strcmp(t, "char") || !strcmp(t, "signed char") || !strcmp(t, "unsigned char")))
      __remjit_show_char(t, (int)s);
    else if (is_unsigned) __remjit_show_uint(t, u);
    else __remjit_show_int(t ? t : "int", s);
  } else {
    __remjit_show_bytes(t ? t : (cls == 13 ? "union" : "struct"), p, n);
  }
}
