/* LD_PRELOADed: occupies every free page between 64 KiB and 2 GiB before main, so that JIT'd
 * memory cannot go below 2 GiB. */
#include <stdio.h>
#include <sys/mman.h>

static void occupy(unsigned long from, unsigned long to) {
  if (from < 0x10000) from = 0x10000;
  if (to > 0x80000000UL) to = 0x80000000UL;
  if (from < to)
    mmap((void *)from, to - from, PROT_NONE,
         MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED_NOREPLACE, -1, 0);
}

__attribute__((constructor)) static void fill_low(void) {
  unsigned long starts[512], ends[512], n = 0, a, b;
  FILE *maps = fopen("/proc/self/maps", "r");
  char line[512];
  while (maps && n < 512 && fgets(line, sizeof line, maps))
    if (sscanf(line, "%lx-%lx", &a, &b) == 2) starts[n] = a, ends[n++] = b;
  if (maps) fclose(maps);
  unsigned long prev = 0;
  for (unsigned long i = 0; i < n; i++) {
    occupy(prev, starts[i]);
    prev = ends[i];
  }
  occupy(prev, 0x80000000UL);
}
