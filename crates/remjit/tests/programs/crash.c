/* A NULL dereference in a function called from main, for crash reports with source lines. */
#include <stdio.h>

static int *volatile target;

void poke(int *p)
{
	*p = 42; /* FAULT */
}

int main(void)
{
	puts("before");
	fflush(stdout);
	poke(target); /* CALL */
	return 0;
}
