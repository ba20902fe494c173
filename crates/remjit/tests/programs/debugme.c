/* A -g program for the debugger and profiler tests: the markers name the lines they check. */
#include <stdio.h>
#include <unistd.h>

static int square(int x) {
    int result = x * x;
    return result; /* BREAK */
}

int compute(int n) {
    int total = 0;
    for (int i = 0; i < n; i++)
        total += square(i); /* CALL_SQUARE */
    return total;
}

int main(void) {
    printf("pid %ld square %p compute %p main %p\n", (long)getpid(), (void *)square,
           (void *)compute, (void *)main);
    fflush(stdout);
    int value = compute(4); /* CALL_COMPUTE */
    printf("%d\n", value);
    return 0;
}
