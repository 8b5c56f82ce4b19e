/*
 * segv: writes to address 0x10 through a volatile pointer. Tests that a
 * page fault on an unmapped low address is turned into SIGSEGV
 * (shell status 139).
 */
#include <stdint.h>
#include <stdio.h>

int main(void)
{
    uintptr_t addr = 0x10;
    volatile int *p;

    /* Hide the constant from the optimizer so it neither warns about nor
     * folds the null-page access. */
    __asm__("" : "+r"(addr));
    p = (volatile int *)addr;
    fputs("about to write to 0x10\n", stdout);
    fflush(stdout);
    *p = 1;
    fputs("unreachable: write succeeded\n", stdout);
    return 0;
}
