// Copy-relocation anchors for the C++ runtime's exported data (see anchors.c): gcc's PIE code
// reads std::cout and friends with 32-bit PC-relative references, so the host executables hold
// the instances, below 2 GiB, that libstdc++ then uses.
#include <iostream>

extern "C" unsigned long remjit_cxx_copy_relocation_anchors() {
  unsigned long a[] = {
      (unsigned long)&std::cout,  (unsigned long)&std::cerr,  (unsigned long)&std::clog,
      (unsigned long)&std::cin,   (unsigned long)&std::wcout, (unsigned long)&std::wcerr,
      (unsigned long)&std::wclog, (unsigned long)&std::wcin,
  };
  unsigned long s = 0;
  for (unsigned long v : a) s ^= v;
  return s;
}
