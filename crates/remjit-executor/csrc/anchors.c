/* Copy-relocation anchors for remjit's host binaries.
 *
 * Compiled -fno-pic into an object linked straight into the non-PIE `remjit` and
 * `remjit-executor` executables. Taking these addresses with absolute 32-bit relocations makes
 * the static linker give the executable copy relocations for them: the dynamic linker then
 * places the one true instance of each object in the executable, below 2 GiB, and libc itself
 * uses that instance. JIT'd position-dependent (and PIE) code, placed in the low slab, can then
 * reach them with 32-bit references -- just as the system linker arranges for a native program.
 */
#include <getopt.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>
#include <errno.h>
#include <math.h>

extern char **environ;
extern char **__environ;
extern char *program_invocation_name;
extern char *program_invocation_short_name;
extern int getdate_err;
extern char __libc_single_threaded;

unsigned long remjit_copy_relocation_anchors(void) {
  unsigned long a[] = {
      (unsigned long)&stdin,         (unsigned long)&stdout,
      (unsigned long)&stderr,        (unsigned long)&optind,
      (unsigned long)&optarg,        (unsigned long)&opterr,
      (unsigned long)&optopt,        (unsigned long)&environ,
      (unsigned long)&__environ,     (unsigned long)&program_invocation_name,
      (unsigned long)&program_invocation_short_name,
      (unsigned long)&timezone,      (unsigned long)&daylight,
      (unsigned long)&tzname,        (unsigned long)&getdate_err,
      (unsigned long)&signgam,       (unsigned long)&__libc_single_threaded,
  };
  unsigned long s = 0;
  for (unsigned i = 0; i < sizeof a / sizeof a[0]; i++) s ^= a[i];
  return s;
}
