/* Signals, pipes and exit statuses: one behaviour per argv[1]. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t got;
static void note(int s) { got = s; }

__attribute__((noinline)) int poke_bad_pointer(int *p) { return *p + 1; }
__attribute__((noinline)) size_t call_strlen(const char *p) { return strlen(p) + 1; }
void (*volatile no_function)(void);
__attribute__((noinline)) void call_through_null(void) {
  no_function();
  puts("not reached");
}
/* Stores over its own first instruction: JIT'd code is never writable at its address. */
__attribute__((noinline)) int patch_own_code(void) {
  *(volatile unsigned char *)(void *)patch_own_code = 0xc3;
  return 1;
}
__attribute__((noinline)) int recurse_forever(int n) {
  volatile char buf[256];
  if (n < 0)
    return 0;
  buf[0] = (char)n;
  return recurse_forever(n + 1) + buf[0];
}

/* The mask and the dispositions (of the signals remjit does not catch itself) this thread
   sees, one letter per signal: B blocked, I ignored, D default, H handled. */
static void print_state(const char *who) {
  sigset_t mask;
  pthread_sigmask(SIG_SETMASK, NULL, &mask);
  printf("%s: ", who);
  for (int s = 1; s < 32; s++) {
    struct sigaction sa;
    if (s == SIGSEGV || s == SIGBUS || s == SIGILL || s == SIGFPE || s == SIGABRT ||
        s == SIGTRAP || sigaction(s, NULL, &sa) != 0) {
      putchar('.');
      continue;
    }
    putchar(sigismember(&mask, s) ? 'B'
            : sa.sa_handler == SIG_IGN ? 'I'
            : sa.sa_handler == SIG_DFL ? 'D'
                                       : 'H');
  }
  putchar('\n');
}

static void *thread_state(void *arg) {
  (void)arg;
  print_state("thread");
  return NULL;
}

int main(int argc, char **argv) {
  const char *what = argc > 1 ? argv[1] : "";
  if (!strcmp(what, "yes"))
    for (;;)
      puts("y");
  if (!strcmp(what, "alarm")) {
    signal(SIGALRM, note);
    alarm(1);
    pause();
    printf("woken by signal %d\n", (int)got);
    return 5;
  }
  if (!strcmp(what, "sigint") || !strcmp(what, "nohandler")) {
    if (!strcmp(what, "sigint"))
      signal(SIGINT, note);
    printf("ready\n");
    fflush(stdout);
    while (!got)
      pause();
    printf("cleaning up after signal %d\n", (int)got);
    return 42;
  }
  if (!strcmp(what, "state")) {
    pthread_t t;
    print_state("main");
    fflush(stdout);
    pthread_create(&t, NULL, thread_state, NULL);
    pthread_join(t, NULL);
    return 0;
  }
  if (!strcmp(what, "sleep")) {
    printf("sleeping\n");
    fflush(stdout);
    sleep(60);
    return 0;
  }
  printf("before\n");
  fflush(stdout);
  if (!strcmp(what, "segv"))
    return poke_bad_pointer((int *)16);
  if (!strcmp(what, "abort"))
    abort();
  if (!strcmp(what, "usr1"))
    raise(SIGUSR1);
  if (!strcmp(what, "strlen"))
    return (int)call_strlen(argv[2]);
  if (!strcmp(what, "null"))
    call_through_null();
  if (!strcmp(what, "codewrite"))
    return patch_own_code();
  if (!strcmp(what, "overflow"))
    return recurse_forever(0);
  return 0;
}
