/*
 * abort: prints a line, flushes it, then calls abort(). Tests rt_sigprocmask
 * and tgkill/raise of SIGABRT with the default action: the process must die
 * with SIGABRT (shell status 134) after the line has been written.
 */
#include <stdio.h>
#include <stdlib.h>

int main(void)
{
    fputs("about to abort\n", stdout);
    fflush(stdout);
    abort();
}
