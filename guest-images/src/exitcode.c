/*
 * exitcode: exits with the status given in argv[1] (default 42) without
 * printing anything. Tests that the guest's exit_group status reaches the
 * host unchanged (the kernel keeps only the low 8 bits).
 */
#include <stdlib.h>

int main(int argc, char **argv)
{
    int status = 42;

    if (argc > 1)
        status = atoi(argv[1]);
    exit(status);
}
