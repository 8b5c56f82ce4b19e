/*
 * hello: the smallest guest program. Tests that a static binary can be
 * loaded, reach main, write(2) to stdout and exit_group(0).
 * Also built as static-PIE (out/hello.pie) to test ET_DYN loading.
 */
#include <stdio.h>

int main(void)
{
    fputs("hello from a vNode\n", stdout);
    return 0;
}
