/*
 * gp: executes the privileged instruction hlt in user mode. Tests that a
 * general-protection fault (#GP) is turned into SIGSEGV (shell status 139),
 * as Linux does, and that the guest cannot actually halt the vCPU.
 */
#include <stdio.h>

int main(void)
{
    fputs("about to execute hlt\n", stdout);
    fflush(stdout);
    __asm__ volatile("hlt");
    fputs("unreachable: hlt returned\n", stdout);
    return 0;
}
