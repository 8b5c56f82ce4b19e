/*
 * ud2: executes the ud2 instruction via __builtin_trap(). Tests that an
 * invalid-opcode exception (#UD) in the guest is turned into SIGILL
 * (shell status 132).
 */
#include <stdio.h>

int main(void)
{
    fputs("about to execute ud2\n", stdout);
    fflush(stdout);
    __builtin_trap();
}
