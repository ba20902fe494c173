/* The README's example: remjit compiles this with cc -fPIC, links it into memory and runs it. */
#include <stdio.h>

static int squares(int n) {
  int s = 0;
  for (int i = 1; i <= n; i++) s += i * i;
  return s;
}

int main(int argc, char **argv) {
  printf("hello from remjit: %d argument(s), sum of squares to 10 = %d\n", argc - 1,
         squares(10));
  for (int i = 1; i < argc; i++) printf("  arg %d: %s\n", i, argv[i]);
  return 0;
}
