/* Busy for a fraction of a second in JIT'd code, for the perf test. */
#include <stdio.h>

static long work(long n) {
    long s = 0;
    for (long i = 0; i < n; i++)
        s += i * i % 7; /* HOT */
    return s;
}

int main(void) {
    printf("%ld\n", work(100000000));
    return 0;
}
