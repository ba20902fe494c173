/* Position-dependent code (-fno-pic -fno-pie) reading libc data: optind, optarg, stderr. */
#include <stdio.h>
#include <getopt.h>
int main(int argc, char **argv) { int c; while ((c = getopt(argc, argv, "ab:")) != -1) printf("opt %c %s\n", c, optarg ? optarg : "-"); printf("optind %d argv[optind] %s\n", optind, argv[optind]); fprintf(stderr, "err ok\n"); return 0; }
