/* Position-dependent code next to the host's copies of the C runtime's data (stderr, environ,
 * optind): the JIT'd memory must lie below 2 GiB whatever else is mapped there. Says whether
 * something occupies 1 GiB (the LD_PRELOAD blocker of the tests). */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

extern char **environ;
static int counter = 5;

int main(void) {
  int blocked = 0;
  char line[512];
  FILE *maps = fopen("/proc/self/maps", "r");
  while (maps && fgets(line, sizeof line, maps))
    if (strncmp(line, "40000000-", 9) == 0 && strstr(line, "remjit-test-blocker")) blocked = 1;
  if (maps) fclose(maps);
  fprintf(stderr, "to stderr %d\n", counter);
  printf("blocked at 1 GiB: %d, environ set: %d, optind %d\n", blocked, environ != 0, optind);
  return counter - 2;
}
