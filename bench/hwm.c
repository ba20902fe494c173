/* Peak RSS of every process of a benchmark, each counted once (bench/compare.py).
 *
 * Preloaded (LD_PRELOAD, inherited by children: the controller and its executor), this
 * destructor runs as the process exits normally, when nothing more can grow, reads VmHWM
 * from /proc/self/status and appends "pid VmHWM-KiB" to the file named by $REMJIT_HWM_FILE
 * (one short O_APPEND write: lines of concurrent processes do not mix). A process killed by a
 * signal or ending in _exit reports nothing: compare.py checks the count of reports. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

__attribute__((destructor)) static void remjit_bench_report_hwm(void) {
    const char *out = getenv("REMJIT_HWM_FILE");
    if (!out) return;
    int fd = open("/proc/self/status", O_RDONLY);
    if (fd < 0) return;
    char buf[8192];
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return;
    buf[n] = 0;
    char *p = strstr(buf, "VmHWM:");
    if (!p) return;
    char line[64];
    int len = snprintf(line, sizeof line, "%d %ld\n", (int)getpid(), strtol(p + 6, NULL, 10));
    /* No O_CREAT: a process outliving the measurement leaves no file behind. */
    int o = open(out, O_WRONLY | O_APPEND);
    if (o < 0) return;
    if (write(o, line, (size_t)len) != len) { /* nothing to do: the report is missing */ }
    close(o);
}
