/* LD_PRELOADed: occupies 1 MiB at 1 GiB before main, so that no 1 GiB gap is left below 2 GiB
 * (as when a randomised heap starts just above 1 GiB). A named memfd, so that the program can
 * tell it in /proc/self/maps. */
#define _GNU_SOURCE
#include <sys/mman.h>
#include <unistd.h>

__attribute__((constructor)) static void block_1gib(void) {
  int fd = memfd_create("remjit-test-blocker", MFD_CLOEXEC);
  if (fd < 0 || ftruncate(fd, 1 << 20) != 0) return;
  mmap((void *)0x40000000, 1 << 20, PROT_READ, MAP_SHARED | MAP_FIXED_NOREPLACE, fd, 0);
  close(fd);
}
