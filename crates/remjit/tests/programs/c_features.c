/* C runtime features through the JIT: constructor priorities, atexit order, destructors,
 * qsort callbacks, setjmp/longjmp, varargs, pthreads with _Thread_local and __thread (-fPIC),
 * weak and common symbols (with c_features_strong.c), getopt, stderr, exit status. */
#include <stdio.h>
#include <stdlib.h>
#include <setjmp.h>
#include <stdarg.h>
#include <pthread.h>
#include <string.h>
#include <getopt.h>
_Thread_local int tcount;
__thread int tinit = 7;
static jmp_buf jb;
int common_var;
__attribute__((weak)) int weak_fn(void) { return 1; }
__attribute__((constructor(101))) static void c101(void) { printf("ctor 101\n"); }
__attribute__((constructor)) static void cdef(void) { printf("ctor default\n"); }
__attribute__((constructor(200))) static void c200(void) { printf("ctor 200\n"); }
__attribute__((destructor)) static void ddef(void) { printf("dtor default\n"); }
static void ae1(void) { printf("atexit 1\n"); }
static void ae2(void) { printf("atexit 2\n"); }
static int cmp(const void *a, const void *b) { return *(const int*)a - *(const int*)b; }
static void *worker(void *arg) { int n = (int)(long)arg; for (int i = 0; i < n; i++) tcount++; tinit += n; return (void*)(long)(tcount * 1000 + tinit); }
static int sum(int n, ...) { va_list ap; va_start(ap, n); int s = 0; for (int i = 0; i < n; i++) s += va_arg(ap, int); va_end(ap); return s; }
static void fmt(char *buf, const char *f, ...) { va_list ap; va_start(ap, f); vsnprintf(buf, 64, f, ap); va_end(ap); }
int main(int argc, char **argv) {
  atexit(ae1); atexit(ae2);
  int a[] = {5, 3, 9, 1}; qsort(a, 4, sizeof a[0], cmp); printf("%d %d %d %d\n", a[0], a[1], a[2], a[3]);
  if (setjmp(jb) == 0) { longjmp(jb, 42); } else printf("longjmp ok\n");
  printf("sum %d\n", sum(4, 1, 2, 3, 4)); char b[64]; fmt(b, "%s-%d-%.2f", "x", 3, 2.5); printf("%s\n", b);
  pthread_t t[4]; for (int i = 0; i < 4; i++) pthread_create(&t[i], 0, worker, (void*)(long)(i + 1));
  long tot = 0; for (int i = 0; i < 4; i++) { void *r; pthread_join(t[i], &r); tot += (long)r; }
  printf("threads %ld main tcount %d tinit %d\n", tot, tcount, tinit);
  common_var = 3; printf("weak %d common %d\n", weak_fn(), common_var);
  int c; optind = 1; while ((c = getopt(argc, argv, "ab:")) != -1) printf("opt %c %s\n", c, optarg ? optarg : "-");
  printf("optind %d\n", optind); fprintf(stderr, "to stderr\n");
  return 3;
}
