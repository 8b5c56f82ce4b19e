/*
 * divzero: integer division by zero through volatile operands, so the
 * compiler must emit a real idiv. Tests that a divide-error exception (#DE)
 * is turned into SIGFPE (shell status 136).
 */
#include <stdio.h>

int main(void)
{
    volatile int num = 1, den = 0;
    volatile int q;

    fputs("about to divide by zero\n", stdout);
    fflush(stdout);
    q = num / den;
    printf("unreachable: %d\n", q);
    return 0;
}
